"""``bfdl audit``: independent verification and a readable audit trail of a B-FDL run (paper
section 1.2 objective 6 "track, follow and audit the operations ... and prevent unauthorised
modifications"; 3.4 "Merkle root hashes on different nodes checked against one another").

:func:`verify_run` trusts nothing but the run directory and the genesis it records:

1. ``chain:replica_<i>`` — every replica database is re-verified with
   :func:`ledger.verify.verify_chain` (block hashes, hash links, Merkle roots, every signature,
   re-execution of every transaction from genesis reproducing stored results and state roots);
2. ``replicas_agree`` — every replica ends at the same height and head hash;
3. ``signers`` — every accepted transaction was signed by a key the on-chain registry held
   (active, with a role allowed for the kind) at that height (a second, contract-independent
   check of the registry rule);
4. ``rounds`` — every opened round was closed and carries a global-model commitment;
5. ``offchain:round_<r>`` — each round's checkpoint exists in the off-chain store, its bytes hash
   to the on-chain ``checkpoint_sha256`` and address, and the weights inside hash
   (``weights_digest``) to the on-chain ``model_hash``;
6. ``final_model`` — ``final_model.npz`` hashes to the last round's ``model_hash``;
7. ``privacy_budget`` — the accepted epsilon records never decrease and never pass the genesis cap;
8. ``openings`` — where the hospitals' commitment openings are present (``ledger/openings``),
   each opens its on-chain commitment for the right round and hospital.

The run passes only if every check holds; otherwise the first failing check names the replica
database and block / transaction, or the file. The result is written to ``audit/verify.json``.
The genesis file itself is authenticated by block 0 (``verify_chain`` rejects a chain whose block
0 is not the genesis block of ``genesis.json``), and ``bfdl audit verify --admin-key HEX`` pins
the expected administrator key for a verifier who does not want to trust the run directory's
copy of the genesis.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bfdl_tff.errors import BfdlError
from bfdl_tff.hashing import weights_digest
from bfdl_tff.integration import ledger_api as L
from bfdl_tff.integration.commitments import commit_update, npz_to_weights
from bfdl_tff.io_utils import atomic_write_json, atomic_write_text
from ledger.txkinds import TX_KINDS



class AuditError(BfdlError):
    """The run directory cannot be audited at all (not a B-FDL run, no ledger)."""


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    where: str = ""


@dataclass
class TxRecord:
    height: int
    index: int
    kind: str
    sender: str
    payload: dict
    ok: bool
    code: str
    tx_hash: str
    timestamp_ms: int


@dataclass
class AuditResult:
    run_dir: str
    ok: bool = False
    checks: list[Check] = field(default_factory=list)
    first_failure: str | None = None
    chain: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, ok: bool, detail: str, where: str = "") -> Check:
        c = Check(name, ok, detail, where)
        self.checks.append(c)
        return c

    def finish(self) -> "AuditResult":
        self.ok = bool(self.checks) and all(c.ok for c in self.checks)
        bad = next((c for c in self.checks if not c.ok), None)
        self.first_failure = None if bad is None else f"{bad.name}: {bad.where + ': ' if bad.where else ''}{bad.detail}"
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": self.run_dir,
            "ok": self.ok,
            "first_failure": self.first_failure,
            "checks": [asdict(c) for c in self.checks],
            "chain": self.chain,
        }


# --------------------------------------------------------------------------------------------
def read_chain(db_path: Path) -> tuple[list[TxRecord], Any]:
    """All transactions (with results) of a replica, and the contract state after re-execution."""
    from ledger.contracts import ContractState
    from ledger.storage import LedgerStore

    genesis = L.load_genesis(db_path.parent.parent)
    state = ContractState(genesis)
    out: list[TxRecord] = []
    with LedgerStore(db_path, verify="none") as store:
        for block in store.iter_blocks(1):
            for i, (tx, res) in enumerate(zip(block.txs, block.results)):
                state.apply(tx, height=block.height, timestamp_ms=block.header.timestamp_ms)
                out.append(
                    TxRecord(block.height, i, tx.kind, tx.sender, dict(tx.payload), bool(res.ok), str(res.code),
                             tx.tx_hash().hex(), block.header.timestamp_ms)
                )
    return out, state


def _where(db: Path, t: TxRecord) -> str:
    return f"{db.name} block {t.height} tx {t.index} ({t.kind} {t.tx_hash[:16]})"


def verify_run(run_dir: str | Path, *, admin_key: str | None = None, write: bool = True) -> AuditResult:
    from ledger.verify import verify_chain

    run_dir = Path(run_dir)
    ledger_dir = run_dir / "ledger"
    res = AuditResult(run_dir=str(run_dir))
    if not (ledger_dir / "genesis.json").exists():
        raise AuditError(f"{run_dir}: no ledger/genesis.json (not a B-FDL run with the ledger enabled?)")
    try:
        genesis = L.load_genesis(ledger_dir)
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
        res.add("genesis", False, f"unreadable genesis: {e}", str(ledger_dir / "genesis.json"))
        return _done(res, run_dir, write)
    if admin_key is not None and admin_key not in genesis.admins:
        res.add("genesis", False, f"expected admin key {admin_key[:16]}... is not in the genesis",
                str(ledger_dir / "genesis.json"))
    dbs = L.replica_db_paths(ledger_dir)
    if not dbs:
        res.add("replicas", False, "no replica databases", str(L.replicas_dir(ledger_dir)))
        return _done(res, run_dir, write)

    # 1. every replica's chain
    heads: dict[str, tuple[int, str | None]] = {}
    good: list[Path] = []
    for db in dbs:
        try:
            rep = verify_chain(db, genesis=genesis)
        except Exception as e:  # a damaged file must not crash the auditor
            res.add(f"chain:{db.stem}", False, f"{type(e).__name__}: {e}", str(db))
            continue
        if rep.ok:
            good.append(db)
            heads[db.stem] = (rep.head_height, rep.head_hash)
            res.add(f"chain:{db.stem}", True, f"{rep.blocks} blocks, {rep.txs} txs ({rep.rejected_txs} rejected)", str(db))
        else:
            where = f"{db} block {rep.failing_height}" + (f" tx {rep.failing_tx}" if rep.failing_tx is not None else "")
            res.add(f"chain:{db.stem}", False, str(rep.first_error), where)

    # 2. replicas agree
    distinct = {h for h in heads.values()}
    if len(good) == len(dbs) and len(distinct) == 1:
        (hh, hx), = distinct
        res.add("replicas_agree", True, f"{len(dbs)} replicas at height {hh} head {str(hx)[:16]}")
    elif not good:
        res.add("replicas_agree", False, "no replica chain verifies")
    else:
        desc = ", ".join(f"{k}@{h}:{str(x)[:12]}" for k, (h, x) in sorted(heads.items()))
        missing = [d.stem for d in dbs if d not in good]
        res.add("replicas_agree", False,
                f"heads differ or replicas unverifiable: {desc}" + (f"; failed: {', '.join(missing)}" if missing else ""))
    if not good:
        return _done(res, run_dir, write)

    db = good[0]
    txs, state = read_chain(db)
    res.chain = {
        "replica": db.name,
        "height": heads[db.stem][0],
        "head": heads[db.stem][1],
        "transactions": len(txs),
        "rejected": sum(1 for t in txs if not t.ok),
        "chain_id": genesis.chain_id,
        "epsilon_cap": genesis.epsilon_cap,
    }

    # 3. signers against the registry as of each transaction
    reg: dict[str, dict[str, Any]] = {a: {"role": "admin", "active": True, "name": "genesis-admin"} for a in genesis.admins}
    for role, name, pub in genesis.institutions:
        reg[pub] = {"role": role, "active": True, "name": name}
    bad_signer = None
    for t in txs:
        if not t.ok:
            continue
        who = reg.get(t.sender)
        allowed = TX_KINDS[t.kind].roles if t.kind in TX_KINDS else ()
        if who is None or not who["active"] or who["role"] not in allowed:
            state_desc = "unregistered" if who is None else ("revoked" if not who["active"] else f"role {who['role']}")
            bad_signer = (t, f"accepted {t.kind} signed by {state_desc} key {t.sender[:16]}")
            break
        if t.kind == "registry.register" and t.code == "registered":
            p = t.payload
            reg[p["pubkey"]] = {"role": p["role"], "active": True, "name": p["name"]}
        elif t.kind == "registry.revoke" and t.code == "revoked":
            reg[t.payload["pubkey"]]["active"] = False
    if bad_signer:
        res.add("signers", False, bad_signer[1], _where(db, bad_signer[0]))
    else:
        res.add("signers", True, f"{sum(1 for t in txs if t.ok)} accepted transactions, all from registered active keys")
    names = {pk: v["name"] for pk, v in reg.items()}

    # 4. rounds complete
    rounds = collect_rounds(txs, names)
    incomplete = [r for r, v in sorted(rounds.items()) if not v["closed"] or not v.get("model_hash")]
    if not rounds:
        res.add("rounds", False, "no round was recorded on the chain", str(db))
    elif incomplete:
        r = incomplete[0]
        res.add("rounds", False, f"round {r} " + ("was never closed" if not rounds[r]["closed"] else "has no global model"),
                f"{db.name} round {r}")
    else:
        res.add("rounds", True, f"{len(rounds)} rounds opened, committed and closed")

    # 5. off-chain checkpoints
    store = L.open_offchain(ledger_dir)
    for r, v in sorted(rounds.items()):
        if not v.get("model_hash"):
            continue
        addr, sha = v.get("checkpoint_address"), v.get("checkpoint_sha256")
        name = f"offchain:round_{r}"
        if not addr:
            res.add(name, False, "no checkpoint address committed", f"{db.name} round {r}")
            continue
        path = store.path_of(addr)
        try:
            data = store.get(addr)
        except KeyError:
            res.add(name, False, "checkpoint missing from the off-chain store", str(path))
            continue
        except Exception as e:
            res.add(name, False, f"checkpoint does not hash to its on-chain address ({type(e).__name__})", str(path))
            continue
        if hashlib.sha256(data).hexdigest() != sha:
            res.add(name, False, "checkpoint bytes do not match the on-chain checkpoint_sha256", str(path))
            continue
        try:
            digest = weights_digest(npz_to_weights(data))
        except Exception as e:
            res.add(name, False, f"checkpoint is not a readable weights npz: {e}", str(path))
            continue
        if digest != v["model_hash"]:
            res.add(name, False, "weights in the checkpoint do not hash to the on-chain model_hash", str(path))
            continue
        res.add(name, True, f"checkpoint {addr[:16]} matches model {digest[:16]}", str(path))

    # 6. final model
    final = run_dir / "final_model.npz"
    last = max((r for r, v in rounds.items() if v.get("model_hash")), default=None)
    if last is None:
        res.add("final_model", False, "no global-model commitment on the chain", str(final))
    elif not final.exists():
        res.add("final_model", False, "final_model.npz is missing", str(final))
    else:
        try:
            digest = weights_digest(npz_to_weights(final))
        except Exception as e:
            res.add("final_model", False, f"unreadable: {type(e).__name__}: {e}", str(final))
        else:
            ok = digest == rounds[last]["model_hash"]
            res.add("final_model", ok,
                    f"hashes to {digest[:16]}, round {last} commitment is {rounds[last]['model_hash'][:16]}"
                    + ("" if ok else ": MISMATCH"), str(final))

    # 7. privacy budget
    cap = genesis.epsilon_cap
    prev = 0.0
    bad = None
    n = 0
    for t in txs:
        if t.kind != "privacy.record" or not t.ok:
            continue
        n += 1
        eps = float(t.payload["epsilon"])
        if not math.isfinite(eps) or eps < prev - 1e-12:
            bad = (t, f"epsilon {eps} decreases below {prev}")
            break
        if cap is not None and eps > cap + 1e-12:
            bad = (t, f"epsilon {eps} passed the cap {cap}")
            break
        prev = eps
    if bad:
        res.add("privacy_budget", False, bad[1], _where(db, bad[0]))
    else:
        res.add("privacy_budget", True, f"{n} records, final epsilon {prev:.4g} <= cap {cap}")

    # 8. openings (hospital-private; checked when present)
    odir = ledger_dir / "openings"
    if odir.is_dir():
        by_name = {v["name"]: pk for pk, v in reg.items()}
        checked = 0
        failure = None
        for f in sorted(odir.glob("*.jsonl")):
            pk = by_name.get(f.stem)
            for ln, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
                try:
                    op = json.loads(line)
                    c = commit_update(int(op["round"]), op["update_digest"], bytes.fromhex(op["salt"]))
                except Exception as e:
                    failure = (f"{f}:{ln}", f"unreadable opening: {e}")
                    break
                onchain = rounds.get(int(op["round"]), {}).get("commitments", {}).get(pk) if pk else None
                if c != op.get("commitment") or onchain is None or onchain["commitment"] != c:
                    failure = (f"{f}:{ln}", f"opening of round {op['round']} does not match the on-chain commitment")
                    break
                checked += 1
            if failure:
                break
        if failure:
            res.add("openings", False, failure[1], failure[0])
        else:
            res.add("openings", True, f"{checked} hospital commitment openings match the chain")
    return _done(res, run_dir, write)


def _done(res: AuditResult, run_dir: Path, write: bool) -> AuditResult:
    res.finish()
    if write:
        atomic_write_json(run_dir / "audit" / "verify.json", res.to_dict())
    return res


def collect_rounds(txs: list[TxRecord], names: dict[str, str]) -> dict[int, dict[str, Any]]:
    """Per-round view of the accepted transactions."""
    rounds: dict[int, dict[str, Any]] = {}
    for t in txs:
        if not t.ok or not t.kind.startswith(("round.", "privacy.", "metrics.", "access.")):
            continue
        r = int(t.payload.get("round", 0))
        v = rounds.setdefault(r, {"round": r, "closed": False, "commitments": {}, "txs": 0, "heights": set(),
                                  "access": []})
        v["txs"] += 1
        v["heights"].add(t.height)
        if t.kind == "round.open":
            v["opened_ms"] = t.timestamp_ms
        elif t.kind == "round.commit_update":
            v["commitments"][t.sender] = {"name": names.get(t.sender, t.sender[:16]), **t.payload}
        elif t.kind == "round.global_model":
            v.update({k: t.payload.get(k) for k in ("model_hash", "checkpoint_address", "checkpoint_sha256")})
        elif t.kind == "privacy.record":
            v["privacy"] = dict(t.payload)
        elif t.kind == "metrics.record":
            v["metrics"] = dict(t.payload.get("metrics", {}))
        elif t.kind == "access.request_summary":
            v["access"].append(names.get(t.sender, t.sender[:16]))
        elif t.kind == "round.close":
            v["closed"] = True
            v["closed_ms"] = t.timestamp_ms
    for v in rounds.values():
        v["heights"] = sorted(v["heights"])
    return rounds


# --------------------------------------------------------------------------------------------
def audit_report(run_dir: str | Path, *, verification: AuditResult | None = None) -> str:
    """A Markdown audit trail: verification status, institutions, rounds, epsilon, reputation."""
    run_dir = Path(run_dir)
    ledger_dir = run_dir / "ledger"
    if verification is None:
        verification = verify_run(run_dir)
    dbs = L.replica_db_paths(ledger_dir)
    db = Path(verification.chain.get("replica")) if verification.chain.get("replica") else None
    db = next((d for d in dbs if db is not None and d.name == db.name), dbs[0] if dbs else None)
    if db is None:
        raise AuditError(f"{ledger_dir}: no replica database to report on")
    txs, state = read_chain(db)
    insts = state.query("institutions") or {}
    names = {pk: v["name"] for pk, v in insts.items()}
    rounds = collect_rounds(txs, names)
    genesis = L.load_genesis(ledger_dir)
    lines: list[str] = []
    a = lines.append
    a(f"# B-FDL audit trail: `{run_dir.name}`")
    a("")
    status = "**PASSED**" if verification.ok else f"**FAILED** — {verification.first_failure}"
    a(f"Verification (`bfdl audit verify`): {status}")
    a("")
    a(f"- chain id `{genesis.chain_id}`, replicas: {len(dbs)}, height {verification.chain.get('height')}, "
      f"head `{str(verification.chain.get('head'))[:16]}`")
    a(f"- transactions: {len(txs)} ({sum(1 for t in txs if not t.ok)} rejected by the contracts)")
    a(f"- privacy budget cap (genesis): epsilon = {genesis.epsilon_cap}")
    a("")
    a("| check | result | detail |")
    a("|---|---|---|")
    for c in verification.checks:
        a(f"| {c.name} | {'ok' if c.ok else 'FAIL'} | {c.detail}{(' — ' + c.where) if (c.where and not c.ok) else ''} |")
    a("")
    a("## Institutions (on-chain registry)")
    a("")
    a("| name | role | key id | registered at block | status |")
    a("|---|---|---|---|---|")
    for pk, v in sorted(insts.items(), key=lambda kv: (kv[1]["role"], kv[1]["name"])):
        st = "active" if v["active"] else f"revoked at block {v['revoked_height']}"
        a(f"| {v['name']} | {v['role']} | `{pk[:16]}…` | {v['registered_height']} | {st} |")
    a("")
    a("## Rounds")
    a("")
    a("| round | blocks | txs | contributors (examples) | global model | checkpoint | epsilon | test macro AUC |")
    a("|---|---|---|---|---|---|---|---|")
    for r, v in sorted(rounds.items()):
        contrib = ", ".join(f"{c['name']} ({c['num_examples']})" for c in v["commitments"].values())
        eps = v.get("privacy", {}).get("epsilon")
        auc = (v.get("metrics") or {}).get("test_macro_auc")
        blocks = f"{v['heights'][0]}-{v['heights'][-1]}" if len(v["heights"]) > 1 else str(v["heights"][0])
        a(f"| {r} | {blocks} | {v['txs']} | {contrib} | `{str(v.get('model_hash'))[:16]}` | "
          f"`{str(v.get('checkpoint_address'))[:12]}` | {'' if eps is None else f'{eps:.4f}'} | "
          f"{'' if auc is None else f'{auc:.4f}'} |")
    a("")
    eps_series = [(r, v["privacy"]["epsilon"]) for r, v in sorted(rounds.items()) if v.get("privacy")]
    if eps_series:
        a("## Privacy budget over rounds")
        a("")
        cap = genesis.epsilon_cap or max(e for _, e in eps_series) or 1.0
        for r, e in eps_series:
            bar = "#" * max(0, min(40, int(round(40 * e / cap))))
            a(f"    round {r:>4}  eps {e:8.4f}  |{bar:<40}| cap {genesis.epsilon_cap}")
        a("")
    rep = state.query("reputation") or {}
    if rep:
        a("## Reputation (contract state after the last block)")
        a("")
        a("| hospital | score | participated | missed | accepted | rejected | examples |")
        a("|---|---|---|---|---|---|---|")
        for pk, v in sorted(rep.items(), key=lambda kv: names.get(kv[0], kv[0])):
            a(f"| {names.get(pk, pk[:16])} | {v['score']:.3f} | {v['participated']} | {v['missed']} | "
              f"{v['accepted']} | {v['rejected']} | {v['examples']} |")
        a("")
    rejected = [t for t in txs if not t.ok]
    if rejected:
        a("## Transactions rejected by the contracts")
        a("")
        a("| block | tx | kind | sender | code |")
        a("|---|---|---|---|---|")
        for t in rejected[:200]:
            a(f"| {t.height} | {t.index} | {t.kind} | {names.get(t.sender, t.sender[:16])} | {t.code} |")
        a("")
    summary = ledger_dir / "ledger_summary.json"
    if summary.exists():
        s = json.loads(summary.read_text(encoding="utf-8"))
        a("## Ledger cost")
        a("")
        a(f"- transactions per round: {s.get('tx_per_round')}")
        hs, rs = s.get("hook_seconds") or [], s.get("round_seconds") or []
        if hs and rs and sum(rs) > 0:
            a(f"- hook time on the training thread: {1000 * sum(hs) / len(hs):.3f} ms/round "
              f"({100 * sum(hs) / sum(rs):.4f}% of round time); background ledger work "
              f"{1000 * sum(s.get('ledger_seconds') or [0]) / len(hs):.1f} ms/round")
        a(f"- bytes on chain (one replica): {s.get('bytes_on_chain')}; off chain: {s.get('bytes_off_chain')}")
        a("")
    return "\n".join(lines) + "\n"


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    run_dir = Path(run_dir)
    text = audit_report(run_dir)
    p = Path(out) if out else run_dir / "audit" / "report.md"
    atomic_write_text(p, text)
    return p
