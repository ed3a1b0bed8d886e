"""Bytes per transaction and ledger growth per 100 federated rounds (claim C11: the paper reports
about 4.3 MB per 100 rounds with on-chain/off-chain storage; claim C6: 50-70 transactions per round).

Builds a real chain without consensus: every round's transactions are signed, executed by the
contracts and appended as one block to a durable ``LedgerStore`` (sqlite WAL, synchronous=FULL),
exactly the bytes a replica stores.  A round holds the B-FDL transactions (round.open, one
round.commit_update per hospital, round.global_model with the off-chain checkpoint address,
privacy.record, metrics.record with the per-finding AUCs, round.close); the paper does not break
its 50-70 transactions per round down, so the remainder up to ``--tx-per-round`` are hospitals'
``access.request_summary`` transactions.  With ``--checkpoint-bytes N`` a random N-byte
"checkpoint" per round goes to the off-chain store and is counted separately.

Run: ``.venv/bin/python benchmarks/bench_ledger_storage.py [--rounds 100] [--tx-per-round 60]
[--hospitals 3] [--checkpoint-bytes 0] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledger import crypto  # noqa: E402
from ledger.block import build_block, genesis_block  # noqa: E402
from ledger.contracts import ContractState, Genesis  # noqa: E402
from ledger.offchain import OffchainStore  # noqa: E402
from ledger.storage import LedgerStore  # noqa: E402
from ledger.tx import sign_tx  # noqa: E402
from ledger.verify import verify_chain  # noqa: E402

FINDINGS = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
            "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]


def run(rounds: int, tx_per_round: int, hospitals: int, checkpoint_bytes: int, workdir: Path) -> dict:
    admin = crypto.SigningKey.from_seed(bytes([1]) * 32)
    agg = crypto.SigningKey.from_seed(bytes([2]) * 32)
    hosp = [crypto.SigningKey.from_seed(crypto.sha256(b"h%d" % i)) for i in range(hospitals)]
    g = Genesis(admins=(admin.key_id(),), epsilon_cap=10.0,
                institutions=(("aggregator", "aggregator", agg.key_id()),
                              *(("hospital", f"hospital_{chr(97 + i)}", k.key_id()) for i, k in enumerate(hosp))))
    db = workdir / "replica.db"
    store = LedgerStore(db, genesis=g)
    off = OffchainStore(workdir / "offchain")
    state = ContractState(g)
    store.append_block(genesis_block(g))
    store.checkpoint()
    base = store.size_bytes()
    tx_bytes = 0
    n_tx = 0
    rejected = 0
    append_s = 0.0
    for r in range(1, rounds + 1):
        txs = [sign_tx(agg, "round.open", {"round": r})]
        for i, k in enumerate(hosp):
            txs.append(sign_tx(k, "round.commit_update", {
                "round": r, "commitment": crypto.sha256(b"update-%d-%d" % (r, i)).hex(),
                "num_examples": 1000 + i, "salt_hash": crypto.sha256(b"salt-%d-%d" % (r, i)).hex()}))
        ckpt = {}
        if checkpoint_bytes:
            addr = off.put(os.urandom(checkpoint_bytes))
            ckpt = {"checkpoint_address": addr, "checkpoint_sha256": addr}
        tail = [
            sign_tx(agg, "round.global_model", {"round": r, "model_hash": crypto.sha256(b"model-%d" % r).hex(), **ckpt}),
            sign_tx(agg, "privacy.record", {"round": r, "epsilon": round(0.01 * r, 6), "delta": 1e-5,
                                            "accountant": "rdp", "noise_multiplier": 1.1}),
            sign_tx(agg, "metrics.record", {"round": r, "metrics": {
                "train_loss": 0.31, "test_loss": 0.33, "test_macro_auc": 0.81, "test_micro_auc": 0.85,
                **{f"auc_{f}": 0.8 for f in FINDINGS}}}),
            sign_tx(agg, "round.close", {"round": r}),
        ]
        j = 0
        while len(txs) + len(tail) < tx_per_round:
            txs.append(sign_tx(hosp[j % hospitals], "access.request_summary", {"round": r}))
            j += 1
        txs += tail
        blk = build_block(state, txs, height=r, prev_hash=store.head_hash, view=0, proposer=r % 4,
                          timestamp_ms=1_700_000_000_000 + 1000 * r)
        t0 = time.perf_counter()
        store.append_block(blk)
        append_s += time.perf_counter() - t0
        tx_bytes += sum(len(t.encode()) for t in txs)
        n_tx += len(txs)
        rejected += sum(1 for x in blk.results if not x.ok)
    store.checkpoint()
    size = store.size_bytes()
    t0 = time.perf_counter()
    rep = verify_chain(store, genesis=g)
    verify_s = time.perf_counter() - t0
    store.close()
    t0 = time.perf_counter()
    LedgerStore(db, genesis=g).close()
    open_s = time.perf_counter() - t0
    growth = size - base
    return {
        "rounds": rounds, "tx_per_round": tx_per_round, "hospitals": hospitals, "transactions": n_tx,
        "rejected": rejected, "chain_ok": rep.ok,
        "bytes_on_chain_total": size, "bytes_on_chain_growth": growth,
        "bytes_per_tx_on_disk": round(growth / n_tx, 1), "bytes_per_tx_encoded": round(tx_bytes / n_tx, 1),
        "mb_per_100_rounds_on_chain": round(growth / rounds * 100 / 1e6, 3),
        "bytes_off_chain": off.total_bytes(),
        "mb_per_100_rounds_off_chain": round(off.total_bytes() / rounds * 100 / 1e6, 3),
        "append_ms_per_block_fsync": round(append_s / rounds * 1e3, 2),
        "verify_chain_s": round(verify_s, 2), "open_with_integrity_check_s": round(open_s, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--tx-per-round", type=int, default=60)
    ap.add_argument("--hospitals", type=int, default=3)
    ap.add_argument("--checkpoint-bytes", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bfdl-ledger-bench-") as d:
        configs = [(a.tx_per_round, a.checkpoint_bytes)]
        minimal = a.hospitals + 5
        if a.tx_per_round != minimal:
            configs.append((minimal, a.checkpoint_bytes))
        for i, (tpr, cb) in enumerate(configs):
            wd = Path(d) / str(i)
            wd.mkdir()
            results.append(run(a.rounds, tpr, a.hospitals, cb, wd))
    if a.json:
        print(json.dumps(results, indent=2))
        return
    for res in results:
        print(f"--- {res['rounds']} rounds x {res['tx_per_round']} tx ({res['hospitals']} hospitals): "
              f"{res['transactions']} transactions, {res['rejected']} rejected, chain verifies: {res['chain_ok']}")
        print(f"  bytes per transaction: {res['bytes_per_tx_encoded']} encoded, {res['bytes_per_tx_on_disk']} on disk "
              f"(sqlite incl. index and results)")
        print(f"  on-chain growth: {res['bytes_on_chain_growth']} bytes = {res['mb_per_100_rounds_on_chain']} MB "
              f"per 100 rounds (paper: 4.3 MB per 100 rounds)")
        print(f"  off-chain: {res['bytes_off_chain']} bytes = {res['mb_per_100_rounds_off_chain']} MB per 100 rounds")
        print(f"  append (fsync) {res['append_ms_per_block_fsync']} ms/block; verify_chain {res['verify_chain_s']} s; "
              f"open with full integrity check {res['open_with_integrity_check_s']} s")


if __name__ == "__main__":
    main()
