"""The checks of ``bfdl audit verify`` (paper 1.2 objective 6 "track, follow and audit the
operations ... and prevent unauthorised modifications"; 3.4 "Merkle root hashes on different
nodes checked against one another"; issue 17.3 "the audit binds the results").

Each check is a small function ``(AuditContext) -> list[Check]`` returning its rows; they run in
the order of :data:`BASE_CHECKS` then :data:`CHAIN_CHECKS`, and the first failing row is the
audit's first failure:

1. ``genesis``: the recorded genesis reads (and has the pinned genesis hash / holds the pinned
   admin key, if given; its hash is printed so that a consortium can publish it);
2. ``chain:replica_<i>``: :func:`ledger.verify.verify_chain` on every replica database (block
   hashes, links, Merkle roots, every signature, the commit certificate of every block against the
   replica keys listed in the genesis, re-execution reproducing results and state roots; failures
   are named by database, block and transaction);
3. ``replicas_agree``: every replica at the same height and head;
4. ``signers``: every accepted transaction signed by a key the registry held (active, with a role
   of :data:`ledger.txkinds.TX_KINDS` for the kind) at that height;
5. ``rounds``: the rounds on chain are 1..N, each opened, committed and closed exactly once;
6. ``rounds_agree``: N equals ``summary.json`` ``rounds`` and the ``run.finalize`` record;
7. ``offchain:round_<r>``: each checkpoint is in the off-chain store, hashes to its on-chain
   SHA-256 and address, and its weights hash to the on-chain ``model_hash``;
8. ``final_model``: ``final_model.npz`` holds the last round's committed weights;
9. ``finalize``: exactly one ``run.finalize`` record is on the chain;
10. ``file:<name>``: ``metrics.csv``, ``summary.json``, ``config.yaml`` and ``final_model.npz``
    hash to the values in ``run.finalize``;
11. ``privacy_budget``: the accepted epsilon records never decrease and never pass the cap;
    ``privacy_per_hospital`` (:mod:`~bfdl_tff.integration.audit.privacy_checks`, issue 16.2): each
    hospital's epsilon/delta/noise on the chain equal ``privacy_rounds.csv`` and ``privacy.json``;
12. ``openings``: the hospitals' commitment openings (when ``ledger/openings/`` is present) open
    their on-chain commitments;
13. ``secagg:round_<r>`` (masked secure aggregation, issue 18): every round has exactly one
    protocol transcript; :func:`bfdl_tff.secagg.transcript.audit_transcript` finds no problem in
    it (parameters digest; every key advertisement verifies against the identity key of the
    hospital that registered the advertised kx key; **no hospital's self-mask share and
    pairwise-secret share were both revealed**; self-mask shares only of survivors, pairwise
    only of dropped hospitals; t shares per reconstruction); it is bound to this chain and round;
    every survivor committed an update; an aborted round left the global model unchanged;
14. ``ledger_summary``: the chain-derived keys of ``ledger_summary.json`` equal the chain (its
    measured keys are declared unverified in the file itself).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable

from ledger.errors import LedgerError
from ledger.txkinds import TX_KINDS
from ledger.verify import verify_chain

from bfdl_tff.errors import BfdlError
from bfdl_tff.hashing import weights_digest
from bfdl_tff.integration.audit.context import AuditContext
from bfdl_tff.integration.audit.privacy_checks import check_privacy_per_hospital
from bfdl_tff.integration.audit.result import Check
from bfdl_tff.integration.chain import read_chain
from bfdl_tff.integration.commitments import commit_update, npz_to_weights
from bfdl_tff.integration.finalize import RESULT_FILES, result_files, sha256_file
from bfdl_tff.integration.ledger_summary import chain_keys, first_difference
from bfdl_tff.secagg.transcript import audit_transcript

CheckFn = Callable[[AuditContext], list[Check]]


# ---------------------------------------------------------------------------- chain integrity
def check_genesis(ctx: AuditContext) -> list[Check]:
    """The recorded genesis reads, lists the replica set, and matches the verifier's pins."""
    where = str(ctx.files.genesis_file)
    try:
        ctx.genesis = ctx.files.load_genesis()
    except (OSError, ValueError, KeyError, TypeError) as e:
        return [Check("genesis", False, f"unreadable genesis: {e}", where)]
    g, digest = ctx.genesis, ctx.genesis.hash().hex()
    if ctx.genesis_hash is not None and ctx.genesis_hash != digest:
        return [Check("genesis", False, f"genesis hash {digest[:16]}... is not the expected "
                      f"{ctx.genesis_hash[:16]}... (genesis.json was replaced)", where)]
    if ctx.admin_key is not None and ctx.admin_key not in g.admins:
        return [Check("genesis", False, f"expected admin key {ctx.admin_key[:16]}... is not in the genesis", where)]
    return [Check("genesis", True, f"chain {g.chain_id}, genesis hash {digest}, {len(g.admins)} admin key(s), "
                  f"{len(g.replicas)} replica keys, epsilon cap {g.epsilon_cap}")]


def check_replica_chains(ctx: AuditContext) -> list[Check]:
    if ctx.genesis is None:
        return []
    dbs = ctx.files.replica_dbs()
    if not dbs:
        return [Check("replicas", False, "no replica databases", str(ctx.files.replicas_dir))]
    rows = []
    for db in dbs:
        name = f"chain:{db.stem}"
        try:
            rep = verify_chain(db, genesis=ctx.genesis)
        except Exception as e:  # noqa: BLE001 - a damaged file must not crash the auditor
            rows.append(Check(name, False, f"{type(e).__name__}: {e}", str(db)))
            continue
        if rep.ok:
            ctx.reports[db] = rep
            rows.append(Check(name, True, f"{rep.blocks} blocks, {rep.txs} txs ({rep.rejected_txs} rejected)", str(db)))
        else:
            at = f"{db} block {rep.failing_height}" + (f" tx {rep.failing_tx}" if rep.failing_tx is not None else "")
            rows.append(Check(name, False, str(rep.first_error), at))
    return rows


def check_replicas_agree(ctx: AuditContext) -> list[Check]:
    dbs = ctx.files.replica_dbs()
    if ctx.genesis is None or not dbs:
        return []
    if not ctx.reports:
        return [Check("replicas_agree", False, "no replica chain verifies")]
    heads = {db.stem: (rep.head_height, rep.head_hash) for db, rep in ctx.reports.items()}
    first = next(iter(ctx.reports))
    ctx.chain = read_chain(first, ctx.genesis)
    failed = [d.stem for d in dbs if d not in ctx.reports]
    if not failed and len(set(heads.values())) == 1:
        (h, x), = set(heads.values())
        return [Check("replicas_agree", True, f"{len(dbs)} replicas at height {h} head {str(x)[:16]}")]
    desc = ", ".join(f"{k}@{h}:{str(x)[:12]}" for k, (h, x) in sorted(heads.items()))
    return [Check("replicas_agree", False, f"heads differ or replicas unverifiable: {desc}"
                  + (f"; failed: {', '.join(failed)}" if failed else ""))]


def check_signers(ctx: AuditContext) -> list[Check]:
    """Replays the registry independently of the contracts: each accepted transaction's sender
    must be registered, active and of a role its kind allows at that point of the chain."""
    assert ctx.chain is not None and ctx.genesis is not None
    reg: dict[str, tuple[str, bool]] = {a: ("admin", True) for a in ctx.genesis.admins}
    reg.update({pub: (role, True) for role, _, pub in ctx.genesis.institutions})
    accepted = ctx.chain.accepted()
    for t in accepted:
        role, active = reg.get(t.sender, (None, False))
        allowed = TX_KINDS[t.kind].roles if t.kind in TX_KINDS else ()
        if role is None or not active or role not in allowed:
            state = "unregistered" if role is None else ("revoked" if not active else f"role {role}")
            return [Check("signers", False, f"accepted {t.kind} signed by {state} key {t.sender[:16]}", ctx.where(t))]
        if t.kind == "registry.register" and t.code == "registered":
            reg[t.payload["pubkey"]] = (t.payload["role"], True)
        elif t.kind == "registry.revoke" and t.code == "revoked":
            reg[t.payload["pubkey"]] = (reg[t.payload["pubkey"]][0], False)
    return [Check("signers", True, f"{len(accepted)} accepted transactions, all from registered active keys")]


# ---------------------------------------------------------------------------- rounds
def _ranges(nums: list[int]) -> str:
    out, start = [], None
    for i, n in enumerate(nums):
        start = n if start is None else start
        if i + 1 == len(nums) or nums[i + 1] != n + 1:
            out.append(str(start) if start == n else f"{start}-{n}")
            start = None
    return ", ".join(out)


def check_rounds(ctx: AuditContext) -> list[Check]:
    assert ctx.chain is not None
    rounds, db = ctx.rounds, ctx.chain.db.name
    if not rounds:
        return [Check("rounds", False, "no round was recorded on the chain", db)]
    nums = list(rounds)
    gap = next((r for r in range(1, nums[-1] + 1) if r not in rounds), None)
    if gap is not None:
        return [Check("rounds", False, f"round {gap} is missing from the chain (rounds on chain: {_ranges(nums)})",
                      f"{db} round {gap}")]
    for r, v in rounds.items():
        problem = ("was aborted and never recorded again" if v.opens == 0 and v.aborted else
                   f"was opened {v.opens} times" if v.opens != 1 else
                   "was never closed" if v.closes == 0 else
                   f"was closed {v.closes} times" if v.closes != 1 else
                   "has no global-model commitment" if v.global_models == 0 else
                   f"has {v.global_models} global-model commitments" if v.global_models != 1 else
                   "has no hospital update commitment" if not v.commitments else None)
        if problem:
            return [Check("rounds", False, f"round {r} {problem}", f"{db} round {r}")]
    aborted = [f"round {r}: {a['reason']}" for r, v in rounds.items() for a in v.aborted]
    note = f"; {len(aborted)} aborted attempt(s) recorded again ({'; '.join(aborted)})" if aborted else ""
    return [Check("rounds", True, f"{len(nums)} rounds 1..{nums[-1]}, each opened, committed and closed once{note}")]


def check_rounds_agree(ctx: AuditContext) -> list[Check]:
    """N on the chain = ``summary.json`` ``rounds`` = the ``run.finalize`` record's ``rounds``."""
    n = max(ctx.rounds, default=0)
    try:
        claimed = int(ctx.run.summary()["rounds"])
    except BfdlError as e:
        return [Check("rounds_agree", False, str(e), str(ctx.run.summary_file))]
    except (KeyError, TypeError, ValueError) as e:
        return [Check("rounds_agree", False, f"no round count in summary.json ({e})", str(ctx.run.summary_file))]
    if claimed != n:
        what = f"round {n + 1} is missing from the chain" if claimed > n else f"the chain has {n - claimed} more"
        return [Check("rounds_agree", False, f"summary.json says {claimed} rounds, the chain has 1..{n}: {what}",
                      str(ctx.run.summary_file))]
    if ctx.finalize is not None and ctx.finalize.payload.get("rounds") != n:
        return [Check("rounds_agree", False, f"run.finalize says {ctx.finalize.payload.get('rounds')} rounds, "
                      f"the chain has 1..{n}", ctx.where(ctx.finalize))]
    return [Check("rounds_agree", True, f"summary.json and run.finalize agree with the chain: {n} rounds"
                  if ctx.finalize is not None else f"summary.json agrees with the chain: {n} rounds")]


# ---------------------------------------------------------------------------- models
def _checkpoint_row(ctx: AuditContext, r: int, model_hash: str, addr: str | None, sha: str | None) -> Check:
    name, store = f"offchain:round_{r}", ctx.files.offchain()
    if not addr:
        return Check(name, False, "no checkpoint address committed", f"round {r}")
    path = str(store.path_of(addr))
    try:
        data = store.get(addr)
    except KeyError:
        return Check(name, False, "checkpoint missing from the off-chain store", path)
    except (LedgerError, OSError, ValueError) as e:
        return Check(name, False, f"checkpoint does not hash to its on-chain address ({type(e).__name__})", path)
    if hashlib.sha256(data).hexdigest() != sha:
        return Check(name, False, "checkpoint bytes do not match the on-chain checkpoint_sha256", path)
    try:
        digest = weights_digest(npz_to_weights(data))
    except (OSError, ValueError) as e:
        return Check(name, False, f"checkpoint is not a readable weights npz: {e}", path)
    if digest != model_hash:
        return Check(name, False, "weights in the checkpoint do not hash to the on-chain model_hash", path)
    return Check(name, True, f"checkpoint {addr[:16]} matches model {digest[:16]}", path)


def check_offchain(ctx: AuditContext) -> list[Check]:
    return [_checkpoint_row(ctx, r, v.model_hash, v.checkpoint_address, v.checkpoint_sha256)
            for r, v in ctx.rounds.items() if v.model_hash]


def check_final_model(ctx: AuditContext) -> list[Check]:
    where = str(ctx.run.final_model_file)
    last = max((r for r, v in ctx.rounds.items() if v.model_hash), default=None)
    if last is None:
        return [Check("final_model", False, "no global-model commitment on the chain", where)]
    try:
        digest = weights_digest(ctx.run.load_model())
    except BfdlError as e:
        return [Check("final_model", False, str(e), where)]
    except Exception as e:  # noqa: BLE001 - any damage to the npz is a finding, not a crash
        return [Check("final_model", False, f"unreadable: {type(e).__name__}: {e}", where)]
    want = ctx.rounds[last].model_hash or ""
    ok = digest == want
    return [Check("final_model", ok, f"hashes to {digest[:16]}, round {last} commitment is {want[:16]}"
                  + ("" if ok else ": MISMATCH"), where)]


# ---------------------------------------------------------------------------- results
def check_finalize(ctx: AuditContext) -> list[Check]:
    assert ctx.chain is not None
    recs = ctx.chain.finalize_records()
    if not recs:
        return [Check("finalize", False, "no run.finalize record on the chain (the run did not finish, or was "
                      "recorded before result files were bound)", ctx.chain.db.name)]
    if len(recs) > 1:
        return [Check("finalize", False, f"{len(recs)} run.finalize records on the chain", ctx.where(recs[1]))]
    t = recs[0]
    return [Check("finalize", True, f"run.finalize at block {t.height}: {t.payload.get('rounds')} rounds, "
                  f"{len(t.payload.get('files') or {})} files bound")]


def check_result_files(ctx: AuditContext) -> list[Check]:
    if ctx.finalize is None:
        return []
    bound = ctx.finalize.payload.get("files") or {}
    rows = []
    for name, path in result_files(ctx.run).items():
        want = bound.get(name)
        if not isinstance(want, str):
            rows.append(Check(f"file:{name}", False, "not bound by the run.finalize record", str(path)))
        elif not path.is_file():
            rows.append(Check(f"file:{name}", False, "missing", str(path)))
        elif (got := sha256_file(path)) != want:
            rows.append(Check(f"file:{name}", False, f"sha256 {got[:16]} differs from run.finalize {want[:16]}: "
                              "changed after the run", str(path)))
        else:
            rows.append(Check(f"file:{name}", True, f"sha256 {got[:16]} matches run.finalize", str(path)))
    return rows


def check_privacy_budget(ctx: AuditContext) -> list[Check]:
    assert ctx.chain is not None and ctx.genesis is not None
    cap, prev = ctx.genesis.epsilon_cap, 0.0
    records = ctx.chain.accepted("privacy.record")
    for t in records:
        eps = float(t.payload["epsilon"])
        if not math.isfinite(eps) or eps < prev - 1e-12:
            return [Check("privacy_budget", False, f"epsilon {eps} decreases below {prev}", ctx.where(t))]
        if cap is not None and eps > cap + 1e-12:
            return [Check("privacy_budget", False, f"epsilon {eps} passed the cap {cap}", ctx.where(t))]
        prev = eps
    return [Check("privacy_budget", True, f"{len(records)} records, final epsilon {prev:.4g} <= cap {cap}")]


def _opening_error(ctx: AuditContext, pubkey: str | None, line: str) -> str | None:
    try:
        op = json.loads(line)
        r = int(op["round"])
        c = commit_update(r, op["update_digest"], bytes.fromhex(op["salt"]))
    except (ValueError, KeyError, TypeError) as e:
        return f"unreadable opening: {e}"
    view = ctx.rounds.get(r)
    attempts = [view.commitments] + [a["commitments"] for a in view.aborted] if view is not None else []
    onchain = [a[pubkey or ""]["commitment"] for a in attempts if (pubkey or "") in a]
    if c != op.get("commitment") or c not in onchain:
        return f"opening of round {r} does not match the on-chain commitment"
    return None


def check_openings(ctx: AuditContext) -> list[Check]:
    """Hospital-private openings (``ledger/openings/<hospital>.jsonl``), checked when present."""
    assert ctx.chain is not None
    if not ctx.files.openings_dir.is_dir():
        return []
    by_name = {name: pk for pk, name in ctx.chain.names.items()}
    checked = 0
    for f in sorted(ctx.files.openings_dir.glob("*.jsonl")):
        for ln, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            err = _opening_error(ctx, by_name.get(f.stem), line)
            if err:
                return [Check("openings", False, err, f"{f}:{ln}")]
            checked += 1
    return [Check("openings", True, f"{checked} hospital commitment openings match the chain")]


def _secagg_declared(ctx: AuditContext) -> str | None:
    """``privacy.secure_aggregation`` in effect per the run's config (None without a config)."""
    return ctx.run.config.privacy.aggregation if ctx.run.config_file.is_file() else None


def _transcript_row(ctx: AuditContext, r: int, kx_owner: dict[str, str], prev_model: str | None) -> Check:
    name, v = f"secagg:round_{r}", ctx.rounds[r]
    if len(v.secagg) != 1:
        return Check(name, False, f"round {r} has {len(v.secagg)} secure-aggregation transcripts (expected 1)",
                     f"{ctx.chain.db.name if ctx.chain else '?'} round {r}")
    t = v.secagg[0]
    rec = t.payload.get("transcript") or {}
    try:
        ids = {int(a["sender"]): kx_owner.get(a["kx_public"]) for a in rec["advertisements"]}
        unknown = sorted(i for i, k in ids.items() if k is None)
        if unknown:
            return Check(name, False, f"protocol ids {unknown} advertised kx keys no hospital registered", ctx.where(t))
        problems = audit_transcript(rec, identity_keys={i: bytes.fromhex(k) for i, k in ids.items() if k})
        params, masked = rec["params"], [ids.get(i) for i in rec["masked"]]
    except (KeyError, TypeError, ValueError) as e:
        return Check(name, False, f"unreadable transcript: {type(e).__name__}: {e}", ctx.where(t))
    if ctx.genesis is not None and (params.get("run_id") != ctx.genesis.chain_id or params.get("round") != r):
        problems.append(f"bound to run {params.get('run_id')!r} round {params.get('round')}, not this chain's round {r}")
    uncommitted = [k[:16] for k in masked if k not in v.commitments]
    if uncommitted:
        problems.append(f"survivors {uncommitted} have no update commitment in round {r}")
    if rec.get("aborted") and prev_model is not None and v.model_hash != prev_model:
        problems.append(f"the round aborted ({rec['aborted']}) but its global model differs from round {r - 1}'s: "
                        "a partial aggregate was applied")
    if problems:
        return Check(name, False, problems[0], ctx.where(t))
    if rec.get("aborted"):
        return Check(name, True, f"aborted, recorded with its reason ({rec['aborted'][:120]}); global model "
                     "unchanged" + ("" if prev_model is not None else " (round 1: not checkable)"))
    return Check(name, True, f"{rec['protocol']} t={params['threshold']}: {len(rec['masked'])} survivors, dropped "
                 f"{rec['dropped']}; self-mask shares of survivors only, pairwise secrets of dropped only, never "
                 "both; advertisements signed by the registered hospitals")


def check_secagg(ctx: AuditContext) -> list[Check]:
    """Masked secure aggregation (issue 18): one verified transcript per round (see the module docstring)."""
    assert ctx.chain is not None
    declared = _secagg_declared(ctx)
    present = any(v.secagg for v in ctx.rounds.values())
    if declared != "masked" and not present:
        return [Check("secagg", True, f"no secure-aggregation transcripts (privacy.secure_aggregation: {declared})")]
    registry = ctx.chain.state.query("kx") or {}
    kx_owner = {v["kx_pubkey"]: h for h, v in sorted(registry.items())}
    rows, prev = [], None
    for r, v in ctx.rounds.items():
        rows.append(_transcript_row(ctx, r, kx_owner, prev))
        prev = v.model_hash
    return rows


def check_ledger_summary(ctx: AuditContext) -> list[Check]:
    assert ctx.chain is not None
    path = ctx.files.summary_file
    if not path.is_file():
        return [Check("ledger_summary", True, "ledger_summary.json absent (a convenience file; nothing to check)")]
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return [Check("ledger_summary", False, f"unreadable: {e}", str(path))]
    if not isinstance(recorded, dict):
        return [Check("ledger_summary", False, "not a JSON object", str(path))]
    diff = first_difference(recorded, chain_keys(ctx.chain, ctx.heads()))
    if diff:
        return [Check("ledger_summary", False, diff, str(path))]
    return [Check("ledger_summary", True, "chain-derived keys match the chain (timings and sizes are unverified)",
                  str(path))]


#: Checks that establish the chain (run first; the chain checks need a verified replica).
BASE_CHECKS: tuple[CheckFn, ...] = (check_genesis, check_replica_chains, check_replicas_agree)
#: Checks of what the verified chain says against itself and against the run's files.
CHAIN_CHECKS: tuple[CheckFn, ...] = (
    check_signers, check_rounds, check_rounds_agree, check_offchain, check_final_model, check_finalize,
    check_result_files, check_privacy_budget, check_privacy_per_hospital, check_openings, check_secagg,
    check_ledger_summary,
)

__all__ = ["BASE_CHECKS", "CHAIN_CHECKS", "CheckFn"] + [f.__name__ for f in BASE_CHECKS + CHAIN_CHECKS]
