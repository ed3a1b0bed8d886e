"""Deterministic contract state of the B-FDL ledger, executed by every replica at commit.

Paper 3.4 describes Solidity smart contracts that (a) let only registered hospitals take part and
read gradient summaries, (b) log model-update hash commitments with contributor signatures,
(c) record the differential-privacy budget, and (d) keep contribution and reputation records.
Hyperledger Fabric does not run Solidity (CLAIMS.md note 3); the project implements the same logic
as a deterministic Python state machine that every PBFT replica applies to committed blocks in
order.  Determinism rules: no clocks (time comes from the block's ``timestamp_ms``), no randomness,
no iteration over unordered containers into results, only canonical-JSON data in state;
rejections are *results* (``TxResult(ok=False, code, message)``) and never exceptions.

Transaction kinds (``payload`` fields; ``?`` = optional):

=========================  ====================================================  ==================
kind                       payload                                               allowed sender
=========================  ====================================================  ==================
registry.register          role (hospital|aggregator|auditor|admin), name,       admin (quorum)
                           pubkey
registry.revoke            pubkey                                                admin (quorum)
round.open                 round (> every earlier round; none open)             aggregator, admin
round.commit_update        round (the open round), commitment (64 hex),         hospital
                           num_examples, salt_hash?
round.global_model         round, model_hash, checkpoint_address?,               aggregator, admin
                           checkpoint_sha256?
privacy.record             round, epsilon, delta, accountant, noise_multiplier   aggregator, admin
metrics.record             round, metrics {name: number}                         aggregator, admin
round.close                round                                                 aggregator, admin
access.request_summary     round (an opened round)                               hospital
=========================  ====================================================  ==================

Common checks, in order: chain id (``wrong_chain``), signature (``bad_signature``), replay
(``replay``: the pair (sender, nonce) was used by an earlier executed transaction — this covers the
same transaction submitted twice and a signed payload re-sent with its nonce), then the nonce is
consumed and the kind-specific checks run (``unknown_kind``, ``bad_payload``, ``unregistered``,
``revoked``, ``unauthorized``, ``wrong_round``, ``duplicate``, ``round_still_open``,
``budget_exceeded``, ``epsilon_decreasing``, ...).

Registry changes need ``admin_quorum`` distinct active admins: with quorum 1 an admin's
transaction applies at once; with quorum q > 1 each identical proposal is a vote
(``ok=True, code="vote_recorded"``) and the q-th vote applies it.  Revocation is permanent.

Privacy budget: ``epsilon`` in ``privacy.record`` is the *cumulative* epsilon reported by the
accountant after the round; it must be non-decreasing across records and at most
``Genesis.epsilon_cap`` (``None`` = no cap).  A record that would pass the cap is refused.

Reputation: per hospital ``accepted`` (commitments accepted), ``rejected`` (its commitment-type
transactions refused: duplicate / wrong round), ``participated`` / ``missed`` (at round close,
over the hospitals registered and active when the round opened) and ``examples`` (sum of
``num_examples``); ``score = (participated + 1) / (participated + missed + rejected + 2)``
(Laplace-smoothed reliability, rounded to 6 decimals).  The paper gives no formula; this one is
documented in ``docs/ledger.md``.

State root: ``SHA-256("bfdl-state-v1\\0" || canonical_json(state) || seen_acc || results_acc)``
where ``seen_acc`` is a hash chain over consumed (sender, nonce) pairs in execution order and
``results_acc`` a hash chain over ``(tx_hash, ok, code)`` of every executed transaction, so the
state root also commits to every result, including rejections.
"""

from __future__ import annotations

import copy
import itertools
import json
import marshal
import math
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

from . import crypto
from .tx import DEFAULT_CHAIN_ID, Transaction
from .txkinds import ROLES, TX_KINDS

__all__ = ["ContractState", "Genesis", "ROLES", "TxResult", "KINDS"]

STATE_DOMAIN = b"bfdl-state-v2\x00"
ROUNDS_DOMAIN = b"bfdl-rounds-v1\x00"
SNAPSHOT_VERSION = 1
MAX_ROUND = 2**31


class TxResult(NamedTuple):
    ok: bool
    code: str
    message: str = ""


def _ok(code: str = "ok", message: str = "") -> TxResult:
    return TxResult(True, code, message)


def _no(code: str, message: str) -> TxResult:
    return TxResult(False, code, message)


@dataclass(frozen=True)
class Genesis:
    """Chain configuration fixed at block 0.

    ``admins``: hex Ed25519 public keys of the administrators; ``admin_quorum``: number of distinct
    admins needed for a registry change; ``epsilon_cap``: privacy budget cap (``None`` = none);
    ``institutions``: optional pre-registered ``(role, name, pubkey_hex)`` triples; ``replicas``:
    hex Ed25519 public keys of the PBFT replicas in replica-id order (``replicas[i]`` signs replica
    ``i``'s votes): the set every block's commit certificate is checked against
    (:func:`ledger.verify.verify_chain`). Empty only for chains from before commit certificates;
    it is then left out of ``to_dict`` so those chains keep their genesis hash.
    """

    admins: tuple[str, ...]
    epsilon_cap: float | None = None
    chain_id: str = DEFAULT_CHAIN_ID
    admin_quorum: int = 1
    institutions: tuple[tuple[str, str, str], ...] = field(default_factory=tuple)
    replicas: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "admins", tuple(self.admins))
        object.__setattr__(self, "replicas", tuple(self.replicas))
        for r in self.replicas:
            if not crypto.is_hex(r, 32):
                raise ValueError(f"replica key {r!r} is not 64 lowercase hex characters")
        if len(set(self.replicas)) != len(self.replicas):
            raise ValueError("duplicate replica key in genesis")
        object.__setattr__(self, "institutions", tuple(tuple(x) for x in self.institutions))
        if not self.admins:
            raise ValueError("genesis needs at least one admin public key")
        for a in self.admins:
            if not crypto.is_hex(a, 32):
                raise ValueError(f"admin key {a!r} is not 64 lowercase hex characters")
        if len(set(self.admins)) != len(self.admins):
            raise ValueError("duplicate admin key in genesis")
        if not isinstance(self.admin_quorum, int) or not 1 <= self.admin_quorum <= len(self.admins):
            raise ValueError(f"admin_quorum must be in 1..{len(self.admins)}")
        if self.epsilon_cap is not None:
            if isinstance(self.epsilon_cap, bool) or not isinstance(self.epsilon_cap, (int, float)):
                raise ValueError("epsilon_cap must be a number or None")
            if not math.isfinite(self.epsilon_cap) or self.epsilon_cap <= 0:
                raise ValueError("epsilon_cap must be finite and > 0 (None for no cap)")
            object.__setattr__(self, "epsilon_cap", float(self.epsilon_cap))
        seen = set(self.admins)
        for inst in self.institutions:
            if len(inst) != 3 or inst[0] not in ROLES or not isinstance(inst[1], str):
                raise ValueError(f"genesis institution {inst!r} must be (role, name, pubkey)")
            if not crypto.is_hex(inst[2], 32) or inst[2] in seen:
                raise ValueError(f"genesis institution key {inst[2]!r} invalid or duplicate")
            seen.add(inst[2])

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "admins": list(self.admins),
            "epsilon_cap": self.epsilon_cap,
            "chain_id": self.chain_id,
            "admin_quorum": self.admin_quorum,
            "institutions": [list(x) for x in self.institutions],
        }
        if self.replicas:
            d["replicas"] = list(self.replicas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Genesis":
        return cls(
            admins=tuple(d["admins"]),
            epsilon_cap=d.get("epsilon_cap"),
            chain_id=d.get("chain_id", DEFAULT_CHAIN_ID),
            admin_quorum=int(d.get("admin_quorum", 1)),
            institutions=tuple(tuple(x) for x in d.get("institutions", ())),
            replicas=tuple(d.get("replicas", ())),
        )

    def hash(self) -> bytes:
        return crypto.sha256(b"bfdl-genesis-v1\x00" + crypto.canonical_json(self.to_dict()))


# ---------------------------------------------------------------------------------------------
# payload validation helpers (return an error message or None)


def _is_int(v: Any, lo: int, hi: int) -> bool:
    return type(v) is int and lo <= v <= hi


def _is_num(v: Any) -> bool:
    return (type(v) is int or type(v) is float) and math.isfinite(v)


def _is_str(v: Any, maxlen: int = 128, minlen: int = 1) -> bool:
    return isinstance(v, str) and minlen <= len(v) <= maxlen


def _fields(payload: dict, required: set[str], optional: frozenset[str] = frozenset()) -> str | None:
    keys = set(payload)
    missing = required - keys
    extra = keys - required - optional
    if missing or extra:
        return f"payload fields: missing {sorted(missing)}, unexpected {sorted(k[:32] for k in extra)}"
    return None


def _score(rep: dict[str, int]) -> float:
    p, m, r = rep["participated"], rep["missed"], rep["rejected"]
    return round((p + 1) / (p + m + r + 2), 6)


def _new_rep() -> dict[str, Any]:
    rep = {"accepted": 0, "rejected": 0, "participated": 0, "missed": 0, "examples": 0}
    rep["score"] = _score(rep)
    return rep


class ContractState:
    """The replicated contract state; ``apply`` is the only mutator."""

    def __init__(self, genesis: Genesis) -> None:
        self.genesis = genesis
        insts: dict[str, Any] = {}
        for a in genesis.admins:
            insts[a] = {"role": "admin", "name": "genesis-admin", "active": True,
                        "registered_height": 0, "revoked_height": None}
        rep: dict[str, Any] = {}
        for role, name, pub in genesis.institutions:
            insts[pub] = {"role": role, "name": name, "active": True,
                          "registered_height": 0, "revoked_height": None}
            if role == "hospital":
                rep[pub] = _new_rep()
        self._s: dict[str, Any] = {
            "chain_id": genesis.chain_id,
            "genesis_hash": genesis.hash().hex(),
            "admin_quorum": genesis.admin_quorum,
            "epsilon_cap": genesis.epsilon_cap,
            "institutions": insts,
            "pending": {},
            "rounds": {},
            "last_round": 0,
            "open_round": None,
            "privacy": {"epsilon": 0.0, "records": 0, "last_round": 0},
            "reputation": rep,
            "counters": {"executed": 0, "rejected": 0, "last_height": 0},
        }
        self._seen: dict[str, int] = {}
        self._seen_acc = bytes(32)
        self._results_acc = bytes(32)
        self._root: bytes | None = None
        # Incremental state root: one cached hash per round, recomputed only for rounds a
        # transaction touched (every handler that mutates a round finds it through
        # payload["round"]; apply() marks that round dirty).
        self._round_hashes: dict[str, bytes] = {}
        self._handlers: dict[str, Callable[[Transaction, int, int], TxResult]] = {
            "registry.register": self._register,
            "registry.revoke": self._revoke,
            "round.open": self._round_open,
            "round.commit_update": self._commit_update,
            "round.global_model": self._global_model,
            "privacy.record": self._privacy_record,
            "metrics.record": self._metrics_record,
            "round.close": self._round_close,
            "access.request_summary": self._access_request,
        }

    # ---- execution ------------------------------------------------------------------------------
    def apply(self, tx: Transaction, *, height: int, timestamp_ms: int, check_signature: bool = True) -> TxResult:
        """Execute one committed transaction; returns its result (never raises on bad input).

        ``check_signature=False`` skips the Ed25519 check for callers that have already verified
        the request signature (the PBFT replica does so before ordering); ``verify_chain`` always
        checks.
        """
        self._root = None
        try:
            res = self._apply(tx, height, timestamp_ms, check_signature)
        except Exception as exc:  # pragma: no cover - a handler bug must not fork replicas silently
            res = _no("internal_error", f"{type(exc).__name__}")
        payload = getattr(tx, "payload", None)
        if isinstance(payload, dict) and "round" in payload:
            self._round_hashes.pop(str(payload["round"]), None)
        c = self._s["counters"]
        c["executed"] += 1
        if not res.ok:
            c["rejected"] += 1
        c["last_height"] = max(c["last_height"], int(height))
        try:
            th = tx.tx_hash()
        except Exception:
            th = bytes(32)
        self._results_acc = crypto.sha256(
            self._results_acc + th + (b"\x01" if res.ok else b"\x00") + res.code.encode("utf-8")
        )
        return res

    def apply_block(self, txs: Any, *, height: int, timestamp_ms: int, check_signature: bool = True) -> list[TxResult]:
        return [self.apply(t, height=height, timestamp_ms=timestamp_ms, check_signature=check_signature) for t in txs]

    def _apply(self, tx: Transaction, height: int, ts: int, check_signature: bool) -> TxResult:
        if not isinstance(tx, Transaction):
            return _no("bad_tx", "not a transaction")
        if tx.chain_id != self._s["chain_id"]:
            return _no("wrong_chain", f"transaction for chain {tx.chain_id[:64]!r}")
        if check_signature and not tx.verify_signature():
            return _no("bad_signature", "signature does not verify for the sender key")
        key = f"{tx.sender}/{tx.nonce}"
        if key in self._seen:
            return _no("replay", f"nonce already used at height {self._seen[key]}")
        self._seen[key] = int(height)
        kb = key.encode("utf-8")
        self._seen_acc = crypto.sha256(self._seen_acc + len(kb).to_bytes(4, "big") + kb)
        handler = self._handlers.get(tx.kind)
        if handler is None:
            return _no("unknown_kind", f"no contract handles {tx.kind[:64]!r}")
        if not isinstance(tx.payload, dict):
            return _no("bad_payload", "payload must be an object")
        return handler(tx, int(height), int(ts))

    # ---- authorisation ------------------------------------------------------------------------
    def _auth(self, sender: str, roles: tuple[str, ...]) -> TxResult | None:
        inst = self._s["institutions"].get(sender)
        if inst is None:
            return _no("unregistered", "sender key is not registered")
        if not inst["active"]:
            return _no("revoked", "sender key has been revoked")
        if inst["role"] not in roles:
            return _no("unauthorized", f"role {inst['role']} may not do this (needs {'/'.join(roles)})")
        return None

    def _precheck(self, tx: Transaction) -> TxResult | None:
        """The checks every contract call starts with (its row of :data:`ledger.txkinds.TX_KINDS`):
        the sender's role, then the payload's fields."""
        kind = TX_KINDS[tx.kind]
        err = self._auth(tx.sender, kind.roles)
        if err:
            return err
        msg = _fields(tx.payload, set(kind.required), kind.optional)
        return _no("bad_payload", msg) if msg else None

    def _active_admins(self) -> list[str]:
        return sorted(k for k, v in self._s["institutions"].items() if v["active"] and v["role"] == "admin")

    def _vote(self, tx: Transaction, action: str, payload: dict) -> TxResult | None:
        """Quorum voting; None when the action should be applied now."""
        q = self._s["admin_quorum"]
        if q <= 1:
            return None
        pid = crypto.sha256(crypto.canonical_json({"action": action, "payload": payload})).hex()
        pend = self._s["pending"].setdefault(pid, {"action": action, "payload": payload, "votes": []})
        if tx.sender in pend["votes"]:
            return _no("duplicate_vote", "this admin already voted for this proposal")
        pend["votes"] = sorted(pend["votes"] + [tx.sender])
        active = set(self._active_admins())
        votes = [v for v in pend["votes"] if v in active]
        if len(votes) < q:
            return _ok("vote_recorded", f"{len(votes)}/{q} admin votes for proposal {pid[:16]}")
        del self._s["pending"][pid]
        return None

    # ---- registry -----------------------------------------------------------------------------
    def _register(self, tx: Transaction, height: int, ts: int) -> TxResult:
        err = self._precheck(tx)
        if err:
            return err
        p = tx.payload
        if p["role"] not in ROLES:
            return _no("bad_payload", f"role must be one of {ROLES}")
        if not _is_str(p["name"]):
            return _no("bad_payload", "name must be a string of 1-128 characters")
        if not crypto.is_hex(p["pubkey"], 32):
            return _no("bad_payload", "pubkey must be 64 lowercase hex characters")
        cur = self._s["institutions"].get(p["pubkey"])
        if cur is not None:
            if cur["active"]:
                return _no("already_registered", f"key already registered as {cur['role']}")
            return _no("key_revoked", "a revoked key cannot be registered again")
        payload = {"role": p["role"], "name": p["name"], "pubkey": p["pubkey"]}
        pending = self._vote(tx, "register", payload)
        if pending is not None:
            return pending
        self._s["institutions"][p["pubkey"]] = {
            "role": p["role"], "name": p["name"], "active": True,
            "registered_height": height, "revoked_height": None,
        }
        if p["role"] == "hospital" and p["pubkey"] not in self._s["reputation"]:
            self._s["reputation"][p["pubkey"]] = _new_rep()
        return _ok("registered", f"{p['role']} {p['name']}")

    def _revoke(self, tx: Transaction, height: int, ts: int) -> TxResult:
        err = self._precheck(tx)
        if err:
            return err
        p = tx.payload
        if not crypto.is_hex(p["pubkey"], 32):
            return _no("bad_payload", "pubkey must be 64 lowercase hex characters")
        cur = self._s["institutions"].get(p["pubkey"])
        if cur is None:
            return _no("unknown_key", "key is not registered")
        if not cur["active"]:
            return _no("already_revoked", "key is already revoked")
        if cur["role"] == "admin" and len(self._active_admins()) - 1 < self._s["admin_quorum"]:
            return _no("quorum_violation", "revoking this admin would leave fewer admins than the quorum")
        pending = self._vote(tx, "revoke", {"pubkey": p["pubkey"]})
        if pending is not None:
            return pending
        cur["active"] = False
        cur["revoked_height"] = height
        return _ok("revoked", f"{cur['role']} {cur['name']}")

    # ---- rounds -------------------------------------------------------------------------------
    def _open_round_of(self, p: dict) -> tuple[dict | None, TxResult | None]:
        r = p.get("round")
        if not _is_int(r, 1, MAX_ROUND):
            return None, _no("bad_payload", "round must be an integer >= 1")
        if self._s["open_round"] != r:
            return None, _no("wrong_round", f"round {r} is not the open round ({self._s['open_round']})")
        return self._s["rounds"][str(r)], None

    def _round_open(self, tx: Transaction, height: int, ts: int) -> TxResult:
        err = self._precheck(tx)
        if err:
            return err
        p = tx.payload
        r = p["round"]
        if not _is_int(r, 1, MAX_ROUND):
            return _no("bad_payload", "round must be an integer >= 1")
        if self._s["open_round"] is not None:
            return _no("round_still_open", f"round {self._s['open_round']} is still open")
        if r <= self._s["last_round"]:
            return _no("wrong_round", f"round {r} is not after the last round {self._s['last_round']}")
        eligible = sorted(k for k, v in self._s["institutions"].items() if v["active"] and v["role"] == "hospital")
        self._s["rounds"][str(r)] = {
            "status": "open", "opener": tx.sender, "opened_height": height, "opened_ms": ts,
            "closed_height": None, "eligible": eligible, "commitments": {},
            "global_model": None, "privacy": None, "metrics": None, "access": [],
        }
        self._s["open_round"] = r
        self._s["last_round"] = r
        return _ok("opened", f"round {r}")

    def _commit_update(self, tx: Transaction, height: int, ts: int) -> TxResult:
        err = self._precheck(tx)
        if err:
            return err
        p = tx.payload
        if not crypto.is_hex(p["commitment"], 32):
            return _no("bad_payload", "commitment must be 64 lowercase hex characters")
        if not _is_int(p["num_examples"], 0, 2**40):
            return _no("bad_payload", "num_examples must be an integer >= 0")
        if "salt_hash" in p and not crypto.is_hex(p["salt_hash"], 32):
            return _no("bad_payload", "salt_hash must be 64 lowercase hex characters")
        rep = self._s["reputation"].setdefault(tx.sender, _new_rep())
        rnd, err = self._open_round_of(p)
        if err:
            if err.code == "wrong_round":
                rep["rejected"] += 1
                rep["score"] = _score(rep)
            return err
        assert rnd is not None
        if tx.sender in rnd["commitments"]:
            rep["rejected"] += 1
            rep["score"] = _score(rep)
            return _no("duplicate", f"hospital already committed an update for round {p['round']}")
        rnd["commitments"][tx.sender] = {
            "commitment": p["commitment"], "num_examples": p["num_examples"],
            "salt_hash": p.get("salt_hash"), "tx": tx.tx_hash().hex(), "nonce": tx.nonce, "height": height,
        }
        rep["accepted"] += 1
        rep["examples"] += p["num_examples"]
        rep["score"] = _score(rep)
        return _ok("accepted", f"commitment for round {p['round']}")

    def _global_model(self, tx: Transaction, height: int, ts: int) -> TxResult:
        err = self._precheck(tx)
        if err:
            return err
        p = tx.payload
        for k in ("model_hash", "checkpoint_address", "checkpoint_sha256"):
            if k in p and not crypto.is_hex(p[k], 32):
                return _no("bad_payload", f"{k} must be 64 lowercase hex characters")
        rnd, err = self._open_round_of(p)
        if err:
            return err
        assert rnd is not None
        if rnd["global_model"] is not None:
            return _no("duplicate", f"global model already recorded for round {p['round']}")
        rnd["global_model"] = {k: p.get(k) for k in ("model_hash", "checkpoint_address", "checkpoint_sha256")}
        rnd["global_model"]["tx"] = tx.tx_hash().hex()
        return _ok("recorded", f"global model of round {p['round']}")

    def _privacy_record(self, tx: Transaction, height: int, ts: int) -> TxResult:
        err = self._precheck(tx)
        if err:
            return err
        p = tx.payload
        if not _is_num(p["epsilon"]) or p["epsilon"] < 0:
            return _no("bad_payload", "epsilon must be a finite number >= 0")
        if not _is_num(p["delta"]) or not 0 <= p["delta"] < 1:
            return _no("bad_payload", "delta must be a number in [0, 1)")
        if not _is_str(p["accountant"], 64):
            return _no("bad_payload", "accountant must be a string of 1-64 characters")
        if not _is_num(p["noise_multiplier"]) or p["noise_multiplier"] < 0:
            return _no("bad_payload", "noise_multiplier must be a finite number >= 0")
        rnd, err = self._open_round_of(p)
        if err:
            return err
        assert rnd is not None
        if rnd["privacy"] is not None:
            return _no("duplicate", f"privacy already recorded for round {p['round']}")
        priv = self._s["privacy"]
        eps = p["epsilon"]
        if eps < priv["epsilon"]:
            return _no("epsilon_decreasing", f"epsilon {eps} is below the recorded {priv['epsilon']}")
        cap = self._s["epsilon_cap"]
        if cap is not None and eps > cap:
            return _no("budget_exceeded", f"epsilon {eps} exceeds the cap {cap}")
        rnd["privacy"] = {"epsilon": eps, "delta": p["delta"], "accountant": p["accountant"],
                          "noise_multiplier": p["noise_multiplier"], "tx": tx.tx_hash().hex()}
        priv["epsilon"] = eps
        priv["records"] += 1
        priv["last_round"] = p["round"]
        return _ok("recorded", f"epsilon {eps} after round {p['round']}")

    def _metrics_record(self, tx: Transaction, height: int, ts: int) -> TxResult:
        err = self._precheck(tx)
        if err:
            return err
        p = tx.payload
        m = p["metrics"]
        if not isinstance(m, dict) or len(m) > 128:
            return _no("bad_payload", "metrics must be an object of at most 128 entries")
        for k, v in m.items():
            if not _is_str(k, 64) or not (_is_num(v) or v is None):
                return _no("bad_payload", "metrics: names of 1-64 characters, finite numbers or null")
        rnd, err = self._open_round_of(p)
        if err:
            return err
        assert rnd is not None
        if rnd["metrics"] is not None:
            return _no("duplicate", f"metrics already recorded for round {p['round']}")
        rnd["metrics"] = dict(m)
        return _ok("recorded", f"metrics of round {p['round']}")

    def _round_close(self, tx: Transaction, height: int, ts: int) -> TxResult:
        err = self._precheck(tx)
        if err:
            return err
        p = tx.payload
        rnd, err = self._open_round_of(p)
        if err:
            return err
        assert rnd is not None
        for h in sorted(set(rnd["eligible"]) | set(rnd["commitments"])):
            rep = self._s["reputation"].setdefault(h, _new_rep())
            if h in rnd["commitments"]:
                rep["participated"] += 1
            else:
                rep["missed"] += 1
            rep["score"] = _score(rep)
        rnd["status"] = "closed"
        rnd["closed_height"] = height
        self._s["open_round"] = None
        return _ok("closed", f"round {p['round']} with {len(rnd['commitments'])} commitments")

    def _access_request(self, tx: Transaction, height: int, ts: int) -> TxResult:
        err = self._precheck(tx)
        if err:
            return err
        p = tx.payload
        r = p["round"]
        if not _is_int(r, 1, MAX_ROUND):
            return _no("bad_payload", "round must be an integer >= 1")
        rnd = self._s["rounds"].get(str(r))
        if rnd is None:
            return _no("wrong_round", f"round {r} was never opened")
        if tx.sender not in rnd["access"]:
            rnd["access"] = sorted(rnd["access"] + [tx.sender])
        return _ok("granted", f"gradient summary of round {r}")

    # ---- read side ----------------------------------------------------------------------------
    def state_root(self) -> bytes:
        """``SHA-256(STATE_DOMAIN || canonical_json(state without rounds) || rounds_root ||
        seen_acc || results_acc)`` with ``rounds_root = SHA-256(ROUNDS_DOMAIN || for each round in
        numeric order: round (u64) || SHA-256(canonical_json(round)))``.  Per-round hashes are
        cached and recomputed only for rounds touched since, so the per-block cost does not grow
        with the number of rounds on the chain (:meth:`full_state_root` recomputes everything;
        tests compare the two)."""
        if self._root is None:
            self._root = self._compute_root(self._round_hashes)
        return self._root

    def full_state_root(self) -> bytes:
        """The state root recomputed from scratch (no cached round hashes) with the strict
        encoder (``crypto.canonical_json``, which also walks and type-checks the whole state)."""
        return self._compute_root({}, crypto.canonical_json)

    def _compute_root(self, cache: dict[str, bytes], encode: Callable[[Any], bytes] | None = None) -> bytes:
        # The incremental path encodes with the C encoder and no type walk: the state holds only
        # what the handlers put there (str keys, JSON types, finite numbers checked on input);
        # tests compare it with full_state_root() after every block of random workloads.
        enc = encode or crypto._canonical_dumps
        rounds = self._s["rounds"]
        rest = {k: v for k, v in self._s.items() if k != "rounds"}
        parts = [ROUNDS_DOMAIN]
        for r in sorted(rounds, key=int):
            h = cache.get(r)
            if h is None:
                h = crypto.sha256(enc(rounds[r]))
                cache[r] = h
            parts.append(int(r).to_bytes(8, "big") + h)
        rounds_root = crypto.sha256(b"".join(parts))
        return crypto.sha256(STATE_DOMAIN + enc(rest) + rounds_root + self._seen_acc + self._results_acc)

    def is_registered(self, pubkey: str, role: str | None = None) -> bool:
        inst = self._s["institutions"].get(pubkey)
        return bool(inst and inst["active"] and (role is None or inst["role"] == role))

    def can_read_summary(self, pubkey: str, round_num: int) -> bool:
        """Access control for gradient summaries: only active registered hospitals."""
        return self.is_registered(pubkey, "hospital") and str(round_num) in self._s["rounds"]

    def nonce_used(self, sender: str, nonce: str) -> bool:
        return f"{sender}/{nonce}" in self._seen

    def query(self, path: str) -> Any:
        """Read state by path; returns a deep copy (JSON types) or ``None`` if absent.

        Paths: ``summary``, ``institutions[/<pubkey>]``, ``pending``, ``rounds`` (list of numbers),
        ``rounds/<r>[/<field>]``, ``privacy``, ``reputation[/<pubkey>]``,
        ``contributions/<pubkey>`` (every round's commitment by that hospital: traceability),
        ``access/<r>/<pubkey>`` (bool), ``nonce/<sender>/<nonce>`` (bool), ``counters``.
        """
        parts = [x for x in str(path).strip("/").split("/") if x] if path else []
        s = self._s
        if not parts or parts == ["summary"]:
            return {
                "chain_id": s["chain_id"], "last_round": s["last_round"], "open_round": s["open_round"],
                "institutions": len(s["institutions"]), "privacy": copy.deepcopy(s["privacy"]),
                "counters": copy.deepcopy(s["counters"]), "state_root": self.state_root().hex(),
            }
        head, rest = parts[0], parts[1:]
        if head == "rounds":
            if not rest:
                return sorted(int(r) for r in s["rounds"])
            node: Any = s["rounds"].get(rest[0])
            for key in rest[1:]:
                node = node.get(key) if isinstance(node, dict) else None
            return copy.deepcopy(node)
        if head == "contributions" and len(rest) == 1:
            out = []
            for r in sorted(s["rounds"], key=int):
                c = s["rounds"][r]["commitments"].get(rest[0])
                if c is not None:
                    out.append({"round": int(r), **copy.deepcopy(c)})
            return out
        if head == "access" and len(rest) == 2:
            rnd = s["rounds"].get(rest[0])
            return bool(rnd and rest[1] in rnd["access"])
        if head == "nonce" and len(rest) == 2:
            return self.nonce_used(rest[0], rest[1])
        if head in ("institutions", "reputation", "pending", "privacy", "counters"):
            node = s[head]
            for key in rest:
                node = node.get(key) if isinstance(node, dict) else None
            return copy.deepcopy(node)
        return None

    # ---- state transfer -----------------------------------------------------------------------
    def snapshot(self) -> bytes:
        return self.checkpoint().to_bytes()

    def checkpoint(self) -> "StateCheckpoint":
        """A cheap frozen copy of the state (for the PBFT checkpoint every K blocks): the
        contract state is copied with ``marshal`` (JSON types only) and the nonce list is kept as
        a prefix length of the insertion-ordered, append-only nonce dict; the canonical snapshot
        bytes are produced only if a lagging replica asks for them (:meth:`StateCheckpoint.to_bytes`,
        identical to what :meth:`snapshot` returned at that moment)."""
        return StateCheckpoint(self.genesis.to_dict(), marshal.loads(marshal.dumps(self._s)), self._seen,
                               len(self._seen), self._seen_acc, self._results_acc)

    def restore(self, data: bytes) -> None:
        """Replace this state with a snapshot (state transfer).  Raises ``ValueError`` if the
        snapshot is malformed, of another genesis, or its nonce list does not match its
        accumulator.  Callers compare ``state_root()`` with the agreed checkpoint root."""
        try:
            obj = json.loads(bytes(data).decode("utf-8"))
            if obj.get("v") != SNAPSHOT_VERSION:
                raise ValueError("unsupported snapshot version")
            if obj["genesis"] != self.genesis.to_dict():
                raise ValueError("snapshot belongs to another genesis")
            seen: dict[str, int] = {}
            acc = bytes(32)
            for k, h in obj["seen"]:
                if not isinstance(k, str) or type(h) is not int or k in seen:
                    raise ValueError("malformed nonce list")
                seen[k] = h
                kb = k.encode("utf-8")
                acc = crypto.sha256(acc + len(kb).to_bytes(4, "big") + kb)
            if acc.hex() != obj["seen_acc"]:
                raise ValueError("nonce list does not match its accumulator")
            results_acc = bytes.fromhex(obj["results_acc"])
            state = obj["state"]
            if not isinstance(state, dict) or state.get("chain_id") != self.genesis.chain_id:
                raise ValueError("malformed state")
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(f"malformed snapshot: {type(exc).__name__}: {exc}") from None
        self._s = state
        self._seen = seen  # a new dict: checkpoints holding the old one stay valid
        self._seen_acc = acc
        self._results_acc = results_acc
        self._root = None
        self._round_hashes = {}

    @classmethod
    def from_snapshot(cls, genesis: Genesis, data: bytes) -> "ContractState":
        st = cls(genesis)
        st.restore(data)
        return st

    def copy(self) -> "ContractState":
        return ContractState.from_snapshot(self.genesis, self.snapshot())


class StateCheckpoint:
    """A frozen contract state (see :meth:`ContractState.checkpoint`)."""

    __slots__ = ("genesis", "state", "seen", "seen_len", "seen_acc", "results_acc", "_bytes")

    def __init__(self, genesis: dict, state: dict, seen: dict[str, int], seen_len: int, seen_acc: bytes,
                 results_acc: bytes) -> None:
        self.genesis, self.state, self.seen, self.seen_len = genesis, state, seen, seen_len
        self.seen_acc, self.results_acc = seen_acc, results_acc
        self._bytes: bytes | None = None

    def to_bytes(self) -> bytes:
        if self._bytes is None:
            seen = [[k, h] for k, h in itertools.islice(self.seen.items(), self.seen_len)]
            self._bytes = crypto.canonical_json({
                "v": SNAPSHOT_VERSION,
                "genesis": self.genesis,
                "state": self.state,
                "seen": seen,
                "seen_acc": self.seen_acc.hex(),
                "results_acc": self.results_acc.hex(),
            })
        return self._bytes


KINDS = tuple(TX_KINDS)
