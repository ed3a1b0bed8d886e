"""Benchmark of the B-FDL round hook (integration area): per-round transactions, the time the
training thread spends in the hook, the background ledger time (hash + off-chain store + sign +
PBFT commit), and bytes on/off chain, on synthetic rounds (no TensorFlow) against a real
4-replica LocalCluster, for the local and (if the bao binary is present) Vault backends.

    .venv/bin/python benchmarks/bench_integration.py [--rounds 10] [--params 100000,2000000]

The share of *real* round time is measured by an end-to-end ``bfdl`` arm run instead (its
``ledger/ledger_summary.json`` has ``hook_seconds`` and ``round_seconds``); here ``round_seconds``
is nominal, so only absolute times are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def bench(backend: str, params: int, rounds: int, hospitals: int, wait: bool) -> dict:
    from bfdl_tff.integration.hook import LedgerHook
    from bfdl_tff.integration.simulate import run_synthetic, synthetic_run_dir
    from bfdl_tff.keys.devserver import BaoDevServer
    from bfdl_tff.keys.local import LocalKeyStore
    from bfdl_tff.keys.vault import VaultKeyStore

    names = [f"hospital_{chr(97 + i)}" for i in range(hospitals)]
    side = max(1, int((params / 2) ** 0.5))
    shapes = ((side, side), (side, side))
    with tempfile.TemporaryDirectory() as td:
        run = synthetic_run_dir(Path(td) / "run")
        srv = None
        try:
            if backend == "vault":
                srv = BaoDevServer(Path(td) / "bao.log").start()
                store = VaultKeyStore(srv.url, srv.token)
            else:
                store = LocalKeyStore(Path(td) / "keystore")  # keys outside the run directory
            hook = LedgerHook(run, keystore=store, keystore_root=Path(td) / "keystore", replicas=4, epsilon_cap=1e6,
                              wait_for_commit=wait)
            t0 = time.perf_counter()
            run_synthetic(hook, run, hospitals=names, rounds=rounds, shapes=shapes, epsilon_per_round=0.01)
            total = time.perf_counter() - t0
        finally:
            if srv is not None:
                srv.stop()
        s = json.loads((run.ledger_dir / "ledger_summary.json").read_text())
    med = statistics.median
    return {
        "backend": backend,
        "params": 2 * side * side,
        "hospitals": hospitals,
        "rounds": rounds,
        "wait_for_commit": wait,
        "tx_per_round": med(s["tx_per_round"]),
        "hook_ms_p50": 1000 * med(s["hook_seconds"]),
        "hook_ms_max": 1000 * max(s["hook_seconds"]),
        "ledger_ms_p50": 1000 * med(s["ledger_seconds"]),
        "sign_ms_p50": 1000 * med(s["sign_seconds"]),
        "commit_ms_p50": 1000 * med(s["commit_seconds"]),
        "registration_s": s["registration_seconds"],
        "bytes_on_chain_per_round": s["bytes_on_chain"] / rounds,
        "bytes_off_chain_per_round": s["bytes_off_chain"] / rounds,
        "tx_bytes_per_round": med(s["tx_bytes_per_round"]),
        "total_s": total,
    }


def bench_e2e(rounds: int, wait: bool, size: int = 16) -> dict:
    """A real ``bfdl`` arm run (TFF, DP-SGD, secure sum) on the toy federation with the hook."""
    from bfdl_tff.config import ExperimentConfig
    from bfdl_tff.federated.runner import run_experiment
    from bfdl_tff.federated.testing import toy_federation
    from bfdl_tff.integration.hook import attach_hooks
    from bfdl_tff.runs import RunDir

    cfg = ExperimentConfig(name="bench", arm="bfdl", seed=0)
    cfg.model.overrides = {"input_size": size, "width": 8}
    cfg.federated.rounds = rounds
    cfg.federated.batch_size = 8
    cfg.ledger.wait_for_commit = wait
    with tempfile.TemporaryDirectory() as td:
        cfg.keys.path = str(Path(td) / "keystore")  # keys outside the run directory, not in $HOME
        rd = RunDir.create(Path(td) / "bench-bfdl", cfg)
        t0 = time.perf_counter()
        run_experiment(cfg, rd, hooks=attach_hooks(cfg, rd), data=toy_federation(size=size), progress=False)
        wall = time.perf_counter() - t0
        s = json.loads((rd.ledger_dir / "ledger_summary.json").read_text())
    rs = s["round_seconds"][1:] or s["round_seconds"]  # round 1 includes TFF tracing
    hs = s["hook_seconds"][1:] or s["hook_seconds"]
    ls = s["ledger_seconds"][1:] or s["ledger_seconds"]
    return {
        "rounds": rounds,
        "wait_for_commit": wait,
        "tx_per_round": statistics.median(s["tx_per_round"]),
        "hook_ms_per_round": [round(1000 * x, 3) for x in s["hook_seconds"]],
        "ledger_ms_per_round": [round(1000 * x, 1) for x in s["ledger_seconds"]],
        "round_s_per_round": [round(x, 3) for x in s["round_seconds"]],
        "hook_share_all_rounds": s["hook_share"],
        "hook_share_excl_round1": sum(hs) / sum(rs),
        "ledger_share_excl_round1": sum(ls) / sum(rs),
        "registration_s": s["registration_seconds"],
        "end_wait_s": s["end_wait_seconds"],
        "blocking_share_total": s["blocking_share"],
        "run_wall_s": wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--hospitals", type=int, default=3)
    ap.add_argument("--params", default="100000,2000000")
    ap.add_argument("--backends", default="local,vault")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--reverse", action="store_true", help="e2e: run wait_for_commit first")
    ap.add_argument("--e2e", type=int, default=0, metavar="ROUNDS",
                    help="instead: real bfdl-arm runs (TFF) of ROUNDS rounds, async and wait_for_commit")
    args = ap.parse_args()
    if args.e2e:
        from bfdl_tff import tff_runtime

        try:
            for wait in ((True, False) if args.reverse else (False, True)):
                print(json.dumps(bench_e2e(args.e2e, wait)), flush=True)
        finally:
            tff_runtime.shutdown_workers()
        return
    from bfdl_tff.keys.devserver import bao_binary

    rows = []
    for backend in args.backends.split(","):
        if backend == "vault" and bao_binary() is None:
            print("# vault: bao binary not installed, skipped")
            continue
        for p in (int(x) for x in args.params.split(",")):
            for wait in ((True, False) if args.reverse else (False, True)):
                rows.append(bench(backend, p, args.rounds, args.hospitals, wait))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    cols = ["backend", "params", "wait_for_commit", "tx_per_round", "hook_ms_p50", "hook_ms_max", "ledger_ms_p50",
            "sign_ms_p50", "commit_ms_p50", "bytes_on_chain_per_round", "bytes_off_chain_per_round"]
    print("\t".join(cols))
    for r in rows:
        print("\t".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols))


if __name__ == "__main__":
    main()
