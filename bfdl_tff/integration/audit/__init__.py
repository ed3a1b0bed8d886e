"""``bfdl audit``: independent verification and a readable audit trail of a B-FDL run (paper
section 1.2 objective 6 "track, follow and audit the operations ... and prevent unauthorised
modifications"; 3.4 "Merkle root hashes on different nodes checked against one another").

:func:`verify_run` trusts nothing but the run directory and the genesis it records, and runs the
checks of :mod:`bfdl_tff.integration.audit.checks` (chain integrity of every replica, replica
agreement, signers, rounds 1..N each exactly once and agreeing with ``summary.json`` and the
``run.finalize`` record, off-chain checkpoints, the released model, the result files bound by
``run.finalize``, the privacy budget, the hospitals' openings, the chain-derived keys of
``ledger_summary.json``). The run passes only if every row holds; otherwise the first failing row
names the replica database and block / transaction, the round, or the file. The result is written
to ``RunDir.audit_dir / "verify.json"``. The genesis file itself is authenticated by block 0, and
``admin_key`` pins the expected administrator key for a verifier who does not want to trust the
run directory's copy of the genesis; ``genesis_hash`` pins all of it (admins, replica keys, cap).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from ledger.errors import LedgerError

from bfdl_tff.integration.audit.checks import BASE_CHECKS, CHAIN_CHECKS
from bfdl_tff.integration.audit.context import AuditContext, open_audit
from bfdl_tff.integration.audit.report import render
from bfdl_tff.integration.audit.result import AuditError, AuditResult, Check
from bfdl_tff.integration.chain import read_chain
from bfdl_tff.io_utils import atomic_write_json, atomic_write_text


def _chain_info(ctx: AuditContext) -> dict[str, object]:
    if ctx.chain is None or ctx.genesis is None:
        return {}
    c = ctx.chain
    return {"replica": c.db.name, "height": c.height, "head": c.head, "transactions": len(c.txs),
            "rejected": sum(1 for t in c.txs if not t.ok), "chain_id": ctx.genesis.chain_id,
            "epsilon_cap": ctx.genesis.epsilon_cap}


#: An audit check supplied by a layer above the integration (e.g. the DP audit of
#: ``bfdl_tff.privacy_eval``): ``(name, fn)`` with ``fn(run_dir) -> (ok, one-line message)``.
ExtraCheck = tuple[str, Callable[[Path], tuple[bool, str]]]


def run_checks(ctx: AuditContext, extra_checks: Sequence[ExtraCheck] = ()) -> AuditResult:
    """Every check in order (the chain checks only if a replica's chain verified), then the
    extra checks of higher layers."""
    res = AuditResult(run_dir=str(ctx.run.path))
    for check in BASE_CHECKS:
        res.checks.extend(check(ctx))
    if ctx.chain is not None:
        for check in CHAIN_CHECKS:
            res.checks.extend(check(ctx))
    for name, fn in extra_checks:
        ok, message = fn(ctx.run.path)
        res.checks.append(Check(name, ok, message))
    res.chain = _chain_info(ctx)
    return res.finish()


def verify_run(run_dir: str | Path, *, admin_key: str | None = None, genesis_hash: str | None = None,
               write: bool = True, extra_checks: Sequence[ExtraCheck] = ()) -> AuditResult:
    """Audit a run directory (raises :class:`AuditError` if it is not a B-FDL run with a ledger).

    ``genesis_hash`` / ``admin_key`` pin the genesis for a verifier who does not trust the run
    directory's ``genesis.json`` (which lists the admin and replica keys everything is checked
    against). ``extra_checks`` are appended as rows (``bfdl audit verify`` adds the DP audit)."""
    ctx = open_audit(run_dir, admin_key=admin_key, genesis_hash=genesis_hash)
    res = run_checks(ctx, extra_checks)
    if write:
        out = ctx.run.audit_dir / "verify.json"
        try:
            atomic_write_json(out, res.to_dict())
        except OSError as e:
            raise AuditError(f"{out}: cannot write the audit result ({e.strerror or e})") from None
    return res


def audit_report(run_dir: str | Path, *, verification: AuditResult | None = None) -> str:
    """A Markdown audit trail: verification status, institutions, rounds, epsilon, reputation,
    the bound result files and the (measured) ledger cost."""
    ctx = open_audit(run_dir)
    if verification is None:
        verification = run_checks(ctx)
    if ctx.chain is None:  # unverified chain or a given verification: the report states the result on top
        try:
            ctx.genesis = ctx.genesis or ctx.files.load_genesis()
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise AuditError(f"{ctx.files.genesis_file}: unreadable genesis: {e}") from None
        dbs = ctx.files.replica_dbs()
        named = [d for d in dbs if d.name == verification.chain.get("replica")]
        if not dbs:
            raise AuditError(f"{ctx.files.replicas_dir}: no replica database to report on")
        try:
            ctx.chain = read_chain((named or dbs)[0], ctx.genesis)
        except LedgerError as e:
            raise AuditError(f"cannot report on an unreadable chain: {e}") from None
    return render(ctx, verification, ctx.chain)


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write :func:`audit_report` to ``out`` (default ``RunDir.audit_dir / "report.md"``)."""
    ctx = open_audit(run_dir)
    p = Path(out) if out else ctx.run.audit_dir / "report.md"
    if p.is_dir():
        raise AuditError(f"{p}: is a directory; --out names the report file")
    text = audit_report(run_dir)
    try:
        atomic_write_text(p, text)
    except OSError as e:
        raise AuditError(f"{p}: cannot write the report ({e.strerror or e})") from None
    return p


__all__ = ["AuditError", "AuditResult", "Check", "audit_report", "run_checks", "verify_run", "write_report"]
