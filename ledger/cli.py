"""``python -m ledger``: run a PBFT replica process, benchmark the ledger, verify a replica database.

Paper link: B-FDL section 3.4 (the consortium chain) and section 4 (its throughput).

* ``python -m ledger node --id I --config FILE`` — one replica of a TCP cluster, until
  SIGTERM/SIGINT. The config file is written by :class:`ledger.tcp.TcpCluster`; the replica's
  signing key is read from ``<keys_dir>/replica-<I>.key`` (the config names ``keys_dir``).
* ``python -m ledger bench --replicas N --transactions M [--transport inproc|sim|tcp] [--sweep]
  [--json]`` — throughput, commit latency p50/p99, block interval, bytes per transaction, head
  agreement, Ed25519 verify cost; ``inproc`` = replicas in threads of this process (real clock),
  ``sim`` = the single-threaded virtual-time network of the tests, ``tcp`` = replica processes;
  ``--sweep`` adds the latency/throughput curve.
* ``python -m ledger verify --db FILE --genesis GENESIS.json`` — recompute hashes, Merkle roots,
  signatures, commit certificates and state roots of one replica database.

``bfdl ledger ...`` is a thin wrapper over :func:`add_commands` (same options, same behaviour).
Errors are :class:`ledger.errors.LedgerError`: :func:`main` prints them as one line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

from ledger.errors import LedgerError

__all__ = ["add_commands", "build_parser", "main"]


def add_commands(parser: argparse.ArgumentParser, *, prog: str = "ledger") -> None:
    """Add the ``node``, ``bench`` and ``verify`` subcommands to ``parser``. Each sets ``func``
    to its command wrapped by :func:`guarded` (a :class:`LedgerError` becomes one line
    ``<prog>: error: ...`` on stderr and exit code 2)."""
    sub = parser.add_subparsers(dest="ledger_command", metavar="SUBCOMMAND")

    node = sub.add_parser("node", help="run one replica of a TCP cluster (until SIGTERM)")
    node.add_argument("--id", type=int, required=True, help="replica id (0..n-1)")
    node.add_argument("--config", required=True, help="cluster config JSON (written by TcpCluster)")
    node.set_defaults(func=guarded(cmd_node, prog))

    b = sub.add_parser("bench", help="throughput / latency benchmark of the PBFT ledger")
    b.add_argument("--replicas", type=int, default=4)
    b.add_argument("--transactions", type=int, default=2000)
    b.add_argument("--transport", choices=("inproc", "sim", "tcp"), default="inproc",
                   help="inproc: replicas in threads of this process; sim: one-thread virtual-time network; "
                        "tcp: replica processes on loopback")
    b.add_argument("--batch-size", type=int, default=64, help="max transactions per PRE-PREPARE")
    b.add_argument("--client-batch", type=int, default=64, help="transactions per client request")
    b.add_argument("--window", type=int, default=1, help="client requests in flight")
    b.add_argument("--data-dir", default="", help="replica databases (default: a temporary directory)")
    b.add_argument("--sync", default="FULL", choices=("FULL", "NORMAL", "OFF"), help="sqlite synchronous level")
    b.add_argument("--seed", type=int, default=0, help="seed of the benchmark workload (never of replica keys)")
    b.add_argument("--sweep", action="store_true",
                   help="also measure the latency/throughput curve (client batches 1..64, window 1)")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=guarded(cmd_bench, prog))

    v = sub.add_parser("verify", help="verify one replica database against a genesis")
    v.add_argument("--db", required=True)
    v.add_argument("--genesis", required=True, help="genesis JSON (Genesis.to_dict())")
    v.add_argument("--allow-uncertified", action="store_true",
                   help="accept a genesis without replica keys (chains from before commit certificates); "
                        "commit certificates are then not checked")
    v.set_defaults(func=guarded(cmd_verify, prog))
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def cmd_node(args: argparse.Namespace) -> int:
    from ledger.tcp import run_node

    return run_node(args.id, args.config)


def cmd_bench(args: argparse.Namespace) -> int:
    from ledger.bench import format_result, run_bench

    res = run_bench(replicas=args.replicas, transactions=args.transactions, transport=args.transport,
                    batch_size=args.batch_size, client_batch=args.client_batch, window=args.window,
                    data_dir=args.data_dir or None, sync=args.sync, seed=args.seed, sweep=args.sweep)
    if args.json:
        print(json.dumps(res, sort_keys=True))
    else:
        print(format_result(res))
    ok = res["heads_agree"] and all(c["heads_agree"] for c in res.get("latency_curve", []))
    return 0 if ok else 1


def cmd_verify(args: argparse.Namespace) -> int:
    from ledger.contracts import Genesis
    from ledger.verify import verify_chain

    try:
        g = Genesis.from_dict(json.loads(Path(args.genesis).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LedgerError(f"{args.genesis}: not a genesis file: {e}") from None
    if not Path(args.db).is_file():
        raise LedgerError(f"{args.db}: no such replica database")
    rep = verify_chain(args.db, genesis=g, require_certificates=not args.allow_uncertified)
    print(rep)
    return 0 if rep.ok else 1


def guarded(fn: Callable[[argparse.Namespace], int], prog: str) -> Callable[[argparse.Namespace], int]:
    """``fn`` with :class:`LedgerError` printed as one line ``<prog>: error: ...`` (its exit code)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except LedgerError as e:
            print(f"{prog}: error: {e}", file=sys.stderr)
            return e.exit_code

    return run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ledger", description="B-FDL PBFT ledger (paper 3.4)")
    add_commands(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("ledger: interrupted", file=sys.stderr)
        return 130
