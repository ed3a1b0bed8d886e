"""PBFT ledger benchmark (issue 6 "Performance"): n = 4/7/10, in-process (threads), sim and TCP.

Prints one JSON line per configuration (keys of ``bfdl ledger bench --json``), then the ledger
growth of 100 simulated B-FDL rounds of 60 transactions through full consensus (paper: 4.3 MB
per 100 rounds). Usage::

    .venv/bin/python benchmarks/bench_ledger.py [--transactions 2000] [--replicas 4 7 10]
        [--transports inproc sim tcp] [--rounds 100]

Transports: ``inproc`` = replicas in threads of this process (:mod:`ledger.threadnet`), ``sim``
= the one-thread virtual-time network of the tests (all replicas on one core), ``tcp`` = replica
processes. Expected runtime: about 2 minutes on 2 cores (most of it TCP with n = 10 and the
growth run).

Timing numbers depend on the machine load; the script prints them, nothing asserts on them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def growth(rounds: int, size: int = 60, n: int = 4) -> dict:
    from ledger.cluster import LocalCluster, replica_public_keys
    from ledger.sim import Workload

    with tempfile.TemporaryDirectory(prefix="bfdl-ledger-growth-") as d:
        keys = Path(d) / "keys"
        w = Workload(7, 8, replicas=replica_public_keys(keys, n))
        t0 = time.perf_counter()
        with LocalCluster(n, data_dir=Path(d) / "db", genesis=w.genesis, keys_dir=keys, seed=7, batch_size=64) as lc:
            ok = 0
            for r in range(1, rounds + 1):
                ok += sum(1 for x in lc.submit_many(w.round_txs(r, size)) if x.ok)
            heads = lc.heads()
            db = lc.bytes_on_chain()
            sim = lc.sim
            block_bytes = sum(len(sim.nodes[0].app.block(h).encode()) for h in range(1, heads[0][0] + 1))
        return {
            "rounds": rounds, "tx_per_round": size, "replicas": n, "transactions": rounds * size, "accepted": ok,
            "blocks": heads[0][0], "db_bytes": db, "block_bytes": block_bytes,
            "mb_per_100_rounds_db": db / rounds * 100 / 1e6, "mb_per_100_rounds_blocks": block_bytes / rounds * 100 / 1e6,
            "heads_agree": len(set(heads)) == 1, "wall_s": time.perf_counter() - t0,
        }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--transactions", type=int, default=2000)
    ap.add_argument("--replicas", type=int, nargs="+", default=[4, 7, 10])
    ap.add_argument("--transports", nargs="+", default=["inproc", "sim", "tcp"])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--client-batch", type=int, default=64)
    ap.add_argument("--window", type=int, default=1)
    args = ap.parse_args()
    from ledger.bench import run_bench

    for transport in args.transports:
        for n in args.replicas:
            r = run_bench(replicas=n, transactions=args.transactions, transport=transport, batch_size=args.batch_size,
                          client_batch=args.client_batch, window=args.window)
            r["bound_fraction"] = r["tx_per_s"] / r["ed25519_bound_tx_per_s"]
            print(json.dumps(r, sort_keys=True), flush=True)
    if args.rounds > 0:
        print(json.dumps({"growth": growth(args.rounds)}, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
