"""``bfdl ledger``: run a PBFT replica process, benchmark the ledger, verify a replica database.

* ``bfdl ledger node --id I --config FILE`` — one replica of a TCP cluster (paper 3.4), until
  SIGTERM/SIGINT. The config file is written by :class:`ledger.tcp.TcpCluster`.
* ``bfdl ledger bench --replicas N --transactions M [--transport inproc|sim|tcp] [--sweep] [--json]``
  — throughput, commit latency p50/p99, block interval, bytes per transaction, head agreement,
  Ed25519 verify cost (keys of INTERFACES.md "Result files"); ``inproc`` = replicas in threads of
  this process (real clock), ``sim`` = the single-threaded virtual-time network of the tests,
  ``tcp`` = replica processes; ``--sweep`` adds the latency/throughput curve.
* ``bfdl ledger verify --db FILE --genesis GENESIS.json`` — recompute hashes, Merkle roots,
  signatures and state roots of one replica database.
"""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ledger", help="PBFT ledger: run a replica node, benchmark, verify a chain")
    lsub = p.add_subparsers(dest="ledger_command", metavar="SUBCOMMAND")

    node = lsub.add_parser("node", help="run one replica of a TCP cluster (until SIGTERM)")
    node.add_argument("--id", type=int, required=True, help="replica id (0..n-1)")
    node.add_argument("--config", required=True, help="cluster config JSON (written by TcpCluster)")
    node.set_defaults(func=_node)

    b = lsub.add_parser("bench", help="throughput / latency benchmark of the PBFT ledger")
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
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--sweep", action="store_true",
                   help="also measure the latency/throughput curve (client batches 1..64, window 1)")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=_bench)

    v = lsub.add_parser("verify", help="verify one replica database against a genesis")
    v.add_argument("--db", required=True)
    v.add_argument("--genesis", required=True, help="genesis JSON (Genesis.to_dict())")
    v.set_defaults(func=_verify)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _node(args: argparse.Namespace) -> int:
    from ledger.tcp import run_node

    return run_node(args.id, args.config)


def _bench(args: argparse.Namespace) -> int:
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


def _verify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bfdl_tff.errors import DataError
    from ledger.contracts import Genesis
    from ledger.verify import verify_chain

    try:
        g = Genesis.from_dict(json.loads(Path(args.genesis).read_text()))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{args.genesis}: not a genesis file: {e}") from None
    rep = verify_chain(args.db, genesis=g)
    print(rep)
    return 0 if rep.ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(0)
