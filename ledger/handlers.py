"""The contract handlers: one per row of :data:`ledger.txkinds.TX_KINDS` (paper 3.4).

Paper 3.4's Solidity contracts (a) let only registered hospitals take part and read gradient
summaries, (b) log model-update hash commitments with contributor signatures, (c) record the
differential-privacy budget and (d) keep contribution and reputation records. Each handler here is
registered against its kind with :func:`handles`; :class:`ledger.contracts.ContractState` runs the
kind's common checks (its row: roles, required and optional fields) before calling it, so a
handler only checks field values and the contract rules. Importing this module checks that every
kind of the table has exactly one handler.

Handlers run inside the deterministic state machine: no clocks (``ts`` is the block's timestamp),
no randomness, rejections are results (``no(code, message)``), never exceptions.

Reputation (paper 3.4 (d); the paper gives no formula): per hospital ``accepted`` (commitments
accepted), ``rejected`` (its commitment-type transactions refused: duplicate / wrong round),
``participated`` / ``missed`` (at round close, over the hospitals registered and active when the
round opened) and ``examples`` (sum of ``num_examples``);
``score = (participated + 1) / (participated + missed + rejected + 2)`` (Laplace-smoothed
reliability, rounded to 6 decimals; documented in ``docs/ledger.md``). ``round.abort`` (crash
recovery, issue 17.1) undoes the open round's accepted commitments, its privacy record and
``last_round``, and keeps the attempt under ``rounds/<r>/aborted``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

from ledger import crypto
from ledger.secagg_rules import check_transcript, transcript_summary
from ledger.tx import Transaction
from ledger.txkinds import ROLES, RUN_FILES, TX_KINDS

__all__ = ["HANDLERS", "ContractHandlers", "TxResult", "handles", "no", "ok"]

MAX_ROUND = 2**31


class TxResult(NamedTuple):
    """The outcome of one transaction (stored in its block, compared by ``verify_chain``)."""

    ok: bool  # True if the transaction took effect
    code: str  # machine-readable outcome ("accepted", "wrong_round", ...)
    message: str = ""  # one line for humans


def ok(code: str = "ok", message: str = "") -> TxResult:
    return TxResult(True, code, message)


def no(code: str, message: str) -> TxResult:
    return TxResult(False, code, message)


Handler = Callable[[Any, Transaction, int, int], TxResult]

#: kind -> handler (``handler(state, tx, height, timestamp_ms)``), filled by :func:`handles`.
HANDLERS: dict[str, Handler] = {}


def handles(kind: str) -> Callable[[Handler], Handler]:
    """Register the decorated method as the handler of ``kind`` (a row of ``TX_KINDS``)."""

    def register(fn: Handler) -> Handler:
        if kind not in TX_KINDS:
            raise ValueError(f"handler for {kind!r}, which is not in ledger.txkinds.TX_KINDS")
        if kind in HANDLERS:
            raise ValueError(f"two handlers for {kind!r}")
        HANDLERS[kind] = fn
        return fn

    return register


# ---------------------------------------------------------------------------------------------
# payload value checks and the reputation formula


def _is_int(v: Any, lo: int, hi: int) -> bool:
    return type(v) is int and lo <= v <= hi


def _is_num(v: Any) -> bool:
    return (type(v) is int or type(v) is float) and math.isfinite(v)


def _is_str(v: Any, maxlen: int = 128, minlen: int = 1) -> bool:
    return isinstance(v, str) and minlen <= len(v) <= maxlen


def score(rep: dict[str, int]) -> float:
    p, m, r = rep["participated"], rep["missed"], rep["rejected"]
    return round((p + 1) / (p + m + r + 2), 6)


def new_reputation() -> dict[str, Any]:
    rep = {"accepted": 0, "rejected": 0, "participated": 0, "missed": 0, "examples": 0}
    rep["score"] = score(rep)
    return rep


class ContractHandlers:
    """The handlers, as methods of :class:`ledger.contracts.ContractState` (a mixin: they read and
    write its state dict ``_s`` and use its admin-quorum vote)."""

    _s: dict[str, Any]

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
            return no("duplicate_vote", "this admin already voted for this proposal")
        pend["votes"] = sorted(pend["votes"] + [tx.sender])
        active = set(self._active_admins())
        votes = [v for v in pend["votes"] if v in active]
        if len(votes) < q:
            return ok("vote_recorded", f"{len(votes)}/{q} admin votes for proposal {pid[:16]}")
        del self._s["pending"][pid]
        return None

    # ---- registry -----------------------------------------------------------------------------
    @handles("registry.register")
    def _register(self, tx: Transaction, height: int, ts: int) -> TxResult:
        p = tx.payload
        if p["role"] not in ROLES:
            return no("bad_payload", f"role must be one of {ROLES}")
        if not _is_str(p["name"]):
            return no("bad_payload", "name must be a string of 1-128 characters")
        if not crypto.is_hex(p["pubkey"], 32):
            return no("bad_payload", "pubkey must be 64 lowercase hex characters")
        cur = self._s["institutions"].get(p["pubkey"])
        if cur is not None:
            if cur["active"]:
                return no("already_registered", f"key already registered as {cur['role']}")
            return no("key_revoked", "a revoked key cannot be registered again")
        payload = {"role": p["role"], "name": p["name"], "pubkey": p["pubkey"]}
        pending = self._vote(tx, "register", payload)
        if pending is not None:
            return pending
        self._s["institutions"][p["pubkey"]] = {
            "role": p["role"], "name": p["name"], "active": True,
            "registered_height": height, "revoked_height": None,
        }
        if p["role"] == "hospital" and p["pubkey"] not in self._s["reputation"]:
            self._s["reputation"][p["pubkey"]] = new_reputation()
        return ok("registered", f"{p['role']} {p['name']}")

    @handles("registry.revoke")
    def _revoke(self, tx: Transaction, height: int, ts: int) -> TxResult:
        p = tx.payload
        if not crypto.is_hex(p["pubkey"], 32):
            return no("bad_payload", "pubkey must be 64 lowercase hex characters")
        cur = self._s["institutions"].get(p["pubkey"])
        if cur is None:
            return no("unknown_key", "key is not registered")
        if not cur["active"]:
            return no("already_revoked", "key is already revoked")
        if cur["role"] == "admin" and len(self._active_admins()) - 1 < self._s["admin_quorum"]:
            return no("quorum_violation", "revoking this admin would leave fewer admins than the quorum")
        pending = self._vote(tx, "revoke", {"pubkey": p["pubkey"]})
        if pending is not None:
            return pending
        cur["active"] = False
        cur["revoked_height"] = height
        return ok("revoked", f"{cur['role']} {cur['name']}")

    # ---- rounds -------------------------------------------------------------------------------
    def _open_round_of(self, p: dict) -> tuple[dict | None, TxResult | None]:
        r = p.get("round")
        if not _is_int(r, 1, MAX_ROUND):
            return None, no("bad_payload", "round must be an integer >= 1")
        if self._s["open_round"] != r:
            return None, no("wrong_round", f"round {r} is not the open round ({self._s['open_round']})")
        return self._s["rounds"][str(r)], None

    @handles("round.open")
    def _round_open(self, tx: Transaction, height: int, ts: int) -> TxResult:
        p = tx.payload
        r = p["round"]
        if not _is_int(r, 1, MAX_ROUND):
            return no("bad_payload", "round must be an integer >= 1")
        if "run" in self._s:
            return no("run_finalized", f"the run was finalized after round {self._s['run']['rounds']}")
        if self._s["open_round"] is not None:
            return no("round_still_open", f"round {self._s['open_round']} is still open")
        if r <= self._s["last_round"]:
            return no("wrong_round", f"round {r} is not after the last round {self._s['last_round']}")
        eligible = sorted(k for k, v in self._s["institutions"].items() if v["active"] and v["role"] == "hospital")
        prev = self._s["rounds"].get(str(r))
        self._s["rounds"][str(r)] = {
            "status": "open", "opener": tx.sender, "opened_height": height, "opened_ms": ts,
            "closed_height": None, "eligible": eligible, "commitments": {},
            "global_model": None, "privacy": None, "metrics": None, "access": [],
        }
        if prev is not None:  # re-opened after round.abort: keep every aborted attempt
            self._s["rounds"][str(r)]["aborted"] = list(prev.get("aborted", []))
        self._s["open_round"] = r
        self._s["last_round"] = r
        return ok("opened", f"round {r}")

    @handles("round.commit_update")
    def _commit_update(self, tx: Transaction, height: int, ts: int) -> TxResult:
        p = tx.payload
        if not crypto.is_hex(p["commitment"], 32):
            return no("bad_payload", "commitment must be 64 lowercase hex characters")
        if not _is_int(p["num_examples"], 0, 2**40):
            return no("bad_payload", "num_examples must be an integer >= 0")
        if "salt_hash" in p and not crypto.is_hex(p["salt_hash"], 32):
            return no("bad_payload", "salt_hash must be 64 lowercase hex characters")
        rep = self._s["reputation"].setdefault(tx.sender, new_reputation())
        rnd, err = self._open_round_of(p)
        if err:
            if err.code == "wrong_round":
                rep["rejected"] += 1
                rep["score"] = score(rep)
            return err
        assert rnd is not None
        if tx.sender in rnd["commitments"]:
            rep["rejected"] += 1
            rep["score"] = score(rep)
            return no("duplicate", f"hospital already committed an update for round {p['round']}")
        rnd["commitments"][tx.sender] = {
            "commitment": p["commitment"], "num_examples": p["num_examples"],
            "salt_hash": p.get("salt_hash"), "tx": tx.tx_hash().hex(), "nonce": tx.nonce, "height": height,
        }
        rep["accepted"] += 1
        rep["examples"] += p["num_examples"]
        rep["score"] = score(rep)
        return ok("accepted", f"commitment for round {p['round']}")

    @handles("round.global_model")
    def _global_model(self, tx: Transaction, height: int, ts: int) -> TxResult:
        p = tx.payload
        for k in ("model_hash", "checkpoint_address", "checkpoint_sha256"):
            if k in p and not crypto.is_hex(p[k], 32):
                return no("bad_payload", f"{k} must be 64 lowercase hex characters")
        rnd, err = self._open_round_of(p)
        if err:
            return err
        assert rnd is not None
        if rnd["global_model"] is not None:
            return no("duplicate", f"global model already recorded for round {p['round']}")
        rnd["global_model"] = {k: p.get(k) for k in ("model_hash", "checkpoint_address", "checkpoint_sha256")}
        rnd["global_model"]["tx"] = tx.tx_hash().hex()
        return ok("recorded", f"global model of round {p['round']}")

    @handles("privacy.record")
    def _privacy_record(self, tx: Transaction, height: int, ts: int) -> TxResult:
        p = tx.payload
        if not _is_num(p["epsilon"]) or p["epsilon"] < 0:
            return no("bad_payload", "epsilon must be a finite number >= 0")
        if not _is_num(p["delta"]) or not 0 <= p["delta"] < 1:
            return no("bad_payload", "delta must be a number in [0, 1)")
        if not _is_str(p["accountant"], 64):
            return no("bad_payload", "accountant must be a string of 1-64 characters")
        if not _is_num(p["noise_multiplier"]) or p["noise_multiplier"] < 0:
            return no("bad_payload", "noise_multiplier must be a finite number >= 0")
        rnd, err = self._open_round_of(p)
        if err:
            return err
        assert rnd is not None
        if rnd["privacy"] is not None:
            return no("duplicate", f"privacy already recorded for round {p['round']}")
        priv = self._s["privacy"]
        eps = p["epsilon"]
        if eps < priv["epsilon"]:
            return no("epsilon_decreasing", f"epsilon {eps} is below the recorded {priv['epsilon']}")
        cap = self._s["epsilon_cap"]
        if cap is not None and eps > cap:
            return no("budget_exceeded", f"epsilon {eps} exceeds the cap {cap}")
        if "hospitals" in p:
            bad = self._hospital_budgets(p["hospitals"], p["round"], cap)
            if bad is not None:
                return bad
        rnd["privacy"] = {"epsilon": eps, "delta": p["delta"], "accountant": p["accountant"],
                          "noise_multiplier": p["noise_multiplier"], "tx": tx.tx_hash().hex()}
        if "hospitals" in p:
            rnd["privacy"]["hospitals"] = {h: dict(v) for h, v in p["hospitals"].items()}
        priv["epsilon"] = eps
        priv["records"] += 1
        priv["last_round"] = p["round"]
        return ok("recorded", f"epsilon {eps} after round {p['round']}")

    def _hospital_budgets(self, hospitals: Any, round_num: int, cap: float | None) -> TxResult | None:
        """Issue 16.2: each hospital's cumulative ``{epsilon, delta, noise_multiplier}``; an epsilon
        may not decrease against the latest earlier record nor pass the cap. ``None`` if valid."""
        if not isinstance(hospitals, dict) or not 0 < len(hospitals) <= 64:
            return no("bad_payload", "hospitals must be an object of 1-64 hospitals")
        earlier = [int(k) for k, v in self._s["rounds"].items() if int(k) < round_num and v["privacy"] is not None]
        prev = self._s["rounds"][str(max(earlier))]["privacy"].get("hospitals", {}) if earlier else {}
        for name, v in hospitals.items():
            if not _is_str(name, 64) or not isinstance(v, dict) or set(v) != {"epsilon", "delta", "noise_multiplier"}:
                return no("bad_payload", "each hospital needs exactly epsilon, delta, noise_multiplier")
            if not _is_num(v["epsilon"]) or v["epsilon"] < 0 or not _is_num(v["noise_multiplier"]) or v["noise_multiplier"] < 0:
                return no("bad_payload", f"hospital {name}: epsilon and noise_multiplier must be finite numbers >= 0")
            if not _is_num(v["delta"]) or not 0 <= v["delta"] < 1:
                return no("bad_payload", f"hospital {name}: delta must be a number in [0, 1)")
            if name in prev and v["epsilon"] < prev[name]["epsilon"]:
                return no("epsilon_decreasing", f"hospital {name}: epsilon {v['epsilon']} is below the recorded "
                          f"{prev[name]['epsilon']}")
            if cap is not None and v["epsilon"] > cap:
                return no("budget_exceeded", f"hospital {name}: epsilon {v['epsilon']} exceeds the cap {cap}")
        return None

    @handles("metrics.record")
    def _metrics_record(self, tx: Transaction, height: int, ts: int) -> TxResult:
        p = tx.payload
        m = p["metrics"]
        if not isinstance(m, dict) or len(m) > 128:
            return no("bad_payload", "metrics must be an object of at most 128 entries")
        for k, v in m.items():
            if not _is_str(k, 64) or not (_is_num(v) or v is None):
                return no("bad_payload", "metrics: names of 1-64 characters, finite numbers or null")
        rnd, err = self._open_round_of(p)
        if err:
            return err
        assert rnd is not None
        if rnd["metrics"] is not None:
            return no("duplicate", f"metrics already recorded for round {p['round']}")
        rnd["metrics"] = dict(m)
        return ok("recorded", f"metrics of round {p['round']}")

    @handles("round.close")
    def _round_close(self, tx: Transaction, height: int, ts: int) -> TxResult:
        p = tx.payload
        rnd, err = self._open_round_of(p)
        if err:
            return err
        assert rnd is not None
        for h in sorted(set(rnd["eligible"]) | set(rnd["commitments"])):
            rep = self._s["reputation"].setdefault(h, new_reputation())
            if h in rnd["commitments"]:
                rep["participated"] += 1
            else:
                rep["missed"] += 1
            rep["score"] = score(rep)
        rnd["status"] = "closed"
        rnd["closed_height"] = height
        self._s["open_round"] = None
        return ok("closed", f"round {p['round']} with {len(rnd['commitments'])} commitments")

    @handles("round.abort")
    def _round_abort(self, tx: Transaction, height: int, ts: int) -> TxResult:
        """Crash recovery: undo the open round's effects (reputation, privacy budget, last round)
        and record the attempt with its reason under ``rounds/<r>/aborted``; round r may open again."""
        p = tx.payload
        if not _is_str(p["reason"], 256):
            return no("bad_payload", "reason must be a string of 1-256 characters")
        rnd, err = self._open_round_of(p)
        if err:
            return err
        assert rnd is not None
        r = p["round"]
        for sender, c in rnd["commitments"].items():
            rep = self._s["reputation"].setdefault(sender, new_reputation())
            rep["accepted"] -= 1
            rep["examples"] -= c["num_examples"]
            rep["score"] = score(rep)
        if rnd["privacy"] is not None:
            priv = self._s["privacy"]
            earlier = [int(k) for k, v in self._s["rounds"].items() if int(k) < r and v["privacy"] is not None]
            last = max(earlier, default=0)
            priv["epsilon"] = self._s["rounds"][str(last)]["privacy"]["epsilon"] if last else 0.0
            priv["records"] -= 1
            priv["last_round"] = last
        attempt = {"reason": p["reason"], "aborter": tx.sender, "opened_height": rnd["opened_height"],
                   "aborted_height": height, "commitments": sorted(rnd["commitments"]),
                   "tx": tx.tx_hash().hex()}
        rnd["status"] = "aborted"
        rnd["aborted"] = rnd.get("aborted", []) + [attempt]
        self._s["open_round"] = None
        self._s["last_round"] = r - 1
        return ok("aborted", f"round {r}: {p['reason'][:64]}")

    @handles("access.request_summary")
    def _access_request(self, tx: Transaction, height: int, ts: int) -> TxResult:
        p = tx.payload
        r = p["round"]
        if not _is_int(r, 1, MAX_ROUND):
            return no("bad_payload", "round must be an integer >= 1")
        rnd = self._s["rounds"].get(str(r))
        if rnd is None:
            return no("wrong_round", f"round {r} was never opened")
        if tx.sender not in rnd["access"]:
            rnd["access"] = sorted(rnd["access"] + [tx.sender])
        return ok("granted", f"gradient summary of round {r}")

    # ---- run ----------------------------------------------------------------------------------
    @handles("run.finalize")
    def _run_finalize(self, tx: Transaction, height: int, ts: int) -> TxResult:
        p = tx.payload
        if not _is_int(p["rounds"], 1, MAX_ROUND):
            return no("bad_payload", "rounds must be an integer >= 1")
        files = p["files"]
        if not isinstance(files, dict) or set(files) != set(RUN_FILES):
            return no("bad_payload", f"files must name exactly {sorted(RUN_FILES)}")
        for name in RUN_FILES:
            if not crypto.is_hex(files[name], 32):
                return no("bad_payload", f"files[{name!r}] must be a 64-hex SHA-256")
        if "run" in self._s:
            return no("duplicate", f"the run was already finalized at height {self._s['run']['height']}")
        if self._s["open_round"] is not None:
            return no("round_still_open", f"round {self._s['open_round']} is still open")
        if p["rounds"] != self._s["last_round"]:
            return no("wrong_round", f"rounds {p['rounds']} is not the last round {self._s['last_round']}")
        # Created only now: chains that never finalize keep the state (and state roots) they had.
        self._s["run"] = {"rounds": p["rounds"], "files": {k: files[k] for k in RUN_FILES},
                          "finalizer": tx.sender, "height": height, "tx": tx.tx_hash().hex()}
        return ok("finalized", f"run of {p['rounds']} rounds")

    # ---- secure aggregation (issue 18.1) ------------------------------------------------------
    def _kx_owners(self) -> dict[str, str]:
        """kx key -> identity key of each *active* hospital's registered key-agreement key."""
        insts = self._s["institutions"]
        return {v["kx_pubkey"]: h for h, v in sorted(self._s.get("secagg_kx", {}).items())
                if insts.get(h, {}).get("active")}

    @handles("secagg.register_kx")
    def _register_kx(self, tx: Transaction, height: int, ts: int) -> TxResult:
        kx = tx.payload["kx_pubkey"]
        if not crypto.is_hex(kx, 32):
            return no("bad_payload", "kx_pubkey must be 64 lowercase hex characters")
        reg = self._s.get("secagg_kx", {})
        if tx.sender in reg:
            return no("duplicate", f"this hospital registered its kx key at height {reg[tx.sender]['height']}")
        if any(v["kx_pubkey"] == kx for v in reg.values()):
            return no("duplicate", "this kx key is registered to another hospital")
        # Created only now: chains without secure aggregation keep their state roots.
        self._s.setdefault("secagg_kx", {})[tx.sender] = {"kx_pubkey": kx, "height": height, "tx": tx.tx_hash().hex()}
        return ok("registered", "key-agreement key")

    @handles("secagg.transcript")
    def _secagg_transcript(self, tx: Transaction, height: int, ts: int) -> TxResult:
        p = tx.payload
        rnd, err = self._open_round_of(p)
        if err:
            return err
        assert rnd is not None
        if rnd.get("secagg") is not None:
            return no("duplicate", f"a secure-aggregation transcript is already recorded for round {p['round']}")
        owners = self._kx_owners()
        problem = check_transcript(p["transcript"], round_num=p["round"], chain_id=self._s["chain_id"], kx_owner=owners)
        if problem is not None:
            return no(*problem)
        rnd["secagg"] = transcript_summary(p["transcript"], tx_hash=tx.tx_hash().hex(), kx_owner=owners)
        state = "aborted" if p["transcript"]["aborted"] is not None else "completed"
        return ok("recorded", f"secure aggregation of round {p['round']} ({state})")


_missing = sorted(set(TX_KINDS) - set(HANDLERS))
if _missing:  # pragma: no cover - caught by importing the module
    raise ImportError(f"no handler for transaction kinds {_missing} of ledger.txkinds.TX_KINDS")
