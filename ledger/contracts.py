"""Deterministic contract state of the B-FDL ledger, executed by every replica at commit.

Paper 3.4 describes Solidity smart contracts that (a) let only registered hospitals take part and
read gradient summaries, (b) log model-update hash commitments with contributor signatures,
(c) record the differential-privacy budget, and (d) keep contribution and reputation records.
Hyperledger Fabric does not run Solidity (CLAIMS.md note 3); the project implements the same logic
as a deterministic Python state machine that every PBFT replica applies to committed blocks in
order.  Determinism rules: no clocks (time comes from the block's ``timestamp_ms``), no randomness,
no iteration over unordered containers into results, only canonical-JSON data in state;
rejections are *results* (``TxResult(ok=False, code, message)``) and never exceptions.

Transaction kinds: the one table is :data:`ledger.txkinds.TX_KINDS` (who may send each kind, its
required and optional payload fields); each kind's handler is registered against its row in
:mod:`ledger.handlers` (``docs/ledger.md`` prints the table from it).

Common checks, in order: chain id (``wrong_chain``), signature (``bad_signature``), replay
(``replay``: the pair (sender, nonce) was used by an earlier executed transaction — this covers the
same transaction submitted twice and a signed payload re-sent with its nonce), then the nonce is
consumed, the kind's row of the table is checked (``unknown_kind``; ``unregistered``, ``revoked``,
``unauthorized`` for the sender's role; ``bad_payload`` for missing or unexpected fields) and the
kind's handler runs (``bad_payload``, ``wrong_round``, ``duplicate``, ``round_still_open``,
``budget_exceeded``, ``epsilon_decreasing``, ``run_finalized``, ...).

Registry changes need ``admin_quorum`` distinct active admins: with quorum 1 an admin's
transaction applies at once; with quorum q > 1 each identical proposal is a vote
(``ok=True, code="vote_recorded"``) and the q-th vote applies it.  Revocation is permanent.

Privacy budget: ``epsilon`` in ``privacy.record`` is the *cumulative* epsilon reported by the
accountant after the round; it must be non-decreasing across records and at most
``Genesis.epsilon_cap`` (``None`` = no cap).  A record that would pass the cap is refused.
Its optional ``hospitals`` field (``{name: {epsilon, delta, noise_multiplier}}``, per-hospital
sample-level DP) obeys the same rules per hospital, against the latest earlier round's record.

Run record (issue 17.3): ``run.finalize`` binds the SHA-256 of a run's ``metrics.csv``,
``summary.json``, ``config.yaml`` and ``final_model.npz`` to the chain; it is accepted once, only
when no round is open and its ``rounds`` equals the last round; after it no round may open
(``run_finalized``). ``query("run/final")`` returns it (``None`` before).

Reputation (formula in :mod:`ledger.handlers`, documented in ``docs/ledger.md``).

State root (version 2, ``STATE_DOMAIN = "bfdl-state-v2"``)::

    SHA-256(STATE_DOMAIN || canonical_json(state without "rounds") || rounds_root || seen_acc
            || results_acc)
    rounds_root = SHA-256(ROUNDS_DOMAIN || for each round r in numeric order:
                          r (u64 big-endian) || SHA-256(canonical_json(rounds[r])))

where ``seen_acc`` is a hash chain over consumed (sender, nonce) pairs in execution order and
``results_acc`` a hash chain over ``(tx_hash, ok, code)`` of every executed transaction, so the
state root also commits to every result, including rejections. Per-round hashes are cached and
recomputed only for rounds a transaction touched (:meth:`ContractState.state_root`;
:meth:`ContractState.full_state_root` recomputes everything and tests compare the two).
"""

from __future__ import annotations

import copy
import itertools
import json
import marshal
from typing import Any, Callable

from . import crypto
from .genesis import Genesis
from .handlers import HANDLERS, ContractHandlers, TxResult, new_reputation, no
from .tx import Transaction
from .txkinds import ROLES, TX_KINDS

__all__ = ["ContractState", "Genesis", "KINDS", "ROLES", "StateCheckpoint", "TxResult"]

STATE_DOMAIN = b"bfdl-state-v2\x00"
ROUNDS_DOMAIN = b"bfdl-rounds-v1\x00"
SNAPSHOT_VERSION = 1

#: Every transaction kind, in the order of :data:`ledger.txkinds.TX_KINDS`.
KINDS = tuple(TX_KINDS)


def _fields(payload: dict, required: frozenset[str], optional: frozenset[str]) -> str | None:
    keys = set(payload)
    missing = required - keys
    extra = keys - required - optional
    if missing or extra:
        return f"payload fields: missing {sorted(missing)}, unexpected {sorted(k[:32] for k in extra)}"
    return None


class ContractState(ContractHandlers):
    """The replicated contract state; ``apply`` is the only mutator (handlers: the
    :class:`ledger.handlers.ContractHandlers` mixin)."""

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
                rep[pub] = new_reputation()
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
            res = no("internal_error", f"{type(exc).__name__}")
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
            return no("bad_tx", "not a transaction")
        if tx.chain_id != self._s["chain_id"]:
            return no("wrong_chain", f"transaction for chain {tx.chain_id[:64]!r}")
        if check_signature and not tx.verify_signature():
            return no("bad_signature", "signature does not verify for the sender key")
        key = f"{tx.sender}/{tx.nonce}"
        if key in self._seen:
            return no("replay", f"nonce already used at height {self._seen[key]}")
        self._seen[key] = int(height)
        kb = key.encode("utf-8")
        self._seen_acc = crypto.sha256(self._seen_acc + len(kb).to_bytes(4, "big") + kb)
        handler = HANDLERS.get(tx.kind)
        if handler is None:
            return no("unknown_kind", f"no contract handles {tx.kind[:64]!r}")
        if not isinstance(tx.payload, dict):
            return no("bad_payload", "payload must be an object")
        err = self._precheck(tx)
        if err is not None:
            return err
        return handler(self, tx, int(height), int(ts))

    # ---- authorisation ------------------------------------------------------------------------
    def _auth(self, sender: str, roles: tuple[str, ...]) -> TxResult | None:
        inst = self._s["institutions"].get(sender)
        if inst is None:
            return no("unregistered", "sender key is not registered")
        if not inst["active"]:
            return no("revoked", "sender key has been revoked")
        if inst["role"] not in roles:
            return no("unauthorized", f"role {inst['role']} may not do this (needs {'/'.join(roles)})")
        return None

    def _precheck(self, tx: Transaction) -> TxResult | None:
        """The checks every contract call starts with (its row of :data:`ledger.txkinds.TX_KINDS`):
        the sender's role, then the payload's fields."""
        kind = TX_KINDS[tx.kind]
        err = self._auth(tx.sender, kind.roles)
        if err:
            return err
        msg = _fields(tx.payload, kind.required, kind.optional)
        return no("bad_payload", msg) if msg else None

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
        ``access/<r>/<pubkey>`` (bool), ``nonce/<sender>/<nonce>`` (bool), ``counters``,
        ``run/final`` (the ``run.finalize`` record, ``None`` before), ``kx[/<pubkey>]`` (registered
        secure-aggregation key-agreement keys by hospital key; a round's transcript summary is
        ``rounds/<r>/secagg``).
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
        if parts == ["run", "final"]:
            return copy.deepcopy(s.get("run"))
        if head == "kx":  # secure aggregation: registered key-agreement keys by hospital key
            node = s.get("secagg_kx", {})
            for key in rest:
                node = node.get(key) if isinstance(node, dict) else None
            return copy.deepcopy(node)
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

