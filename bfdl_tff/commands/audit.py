"""``bfdl audit verify RUN_DIR`` and ``bfdl audit report RUN_DIR`` (paper 1.2 objective 6; see
:mod:`bfdl_tff.integration.audit`). ``verify`` exits 0 only if every check holds, 1 otherwise
(printing the first failing block, transaction, round or file), 2 if the directory cannot be
audited or an argument is bad (one line on stderr)."""

from __future__ import annotations

import argparse
import re
import sys

from bfdl_tff.errors import BfdlError


def _hex32(option: str, value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[0-9a-f]{64}", value):
        raise BfdlError(f"{option} {value[:80]!r}: expected 64 lowercase hex characters")
    return value


def _verify(args: argparse.Namespace) -> int:
    from bfdl_tff.integration.audit import verify_run
    from bfdl_tff.privacy_eval.dp_audit import dp_audit_check

    res = verify_run(args.run_dir, admin_key=_hex32("--admin-key", args.admin_key),
                     genesis_hash=_hex32("--genesis-hash", args.genesis_hash),
                     extra_checks=[("dp_audit", dp_audit_check)])
    for c in res.checks:
        if args.verbose or not c.ok:
            print(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.message}" + (f" [{c.where}]" if c.where and not c.ok else ""))
    if res.ok:
        print(f"audit verify: OK ({len(res.checks)} checks; {res.chain.get('transactions')} transactions, "
              f"height {res.chain.get('height')})")
        return 0
    print(f"audit verify: FAILED: {res.first_failure}", file=sys.stderr)
    return 1


def _report(args: argparse.Namespace) -> int:
    from bfdl_tff.integration.audit import audit_report, write_report

    if args.out == "-":
        sys.stdout.write(audit_report(args.run_dir))
    else:
        print(write_report(args.run_dir, args.out or None))
    return 0


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = subparsers.add_parser("audit", help="verify a B-FDL run's ledger trail / write an audit report")
    sub = p.add_subparsers(dest="audit_command", metavar="SUBCOMMAND")
    pv = sub.add_parser("verify", help="re-verify chain, replicas, signatures, rounds, checkpoints, result files, budget")
    pv.add_argument("run_dir")
    pv.add_argument("--admin-key", default=None, help="hex admin public key the genesis must contain")
    pv.add_argument("--genesis-hash", default=None,
                    help="hex hash the genesis must have (pins admins, replica keys and cap; printed by -v)")
    pv.add_argument("-v", "--verbose", action="store_true", help="print every check")
    pv.set_defaults(func=_verify)
    pr = sub.add_parser("report", help="Markdown audit trail (default RUN_DIR/audit/report.md; '-' = stdout)")
    pr.add_argument("run_dir")
    pr.add_argument("--out", default="")
    pr.set_defaults(func=_report)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
