"""Cost of commit certificates (issue 17.2): bytes per block and verification time.

Paper link: B-FDL section 3.4 — every block carries the 2f+1 signed COMMIT votes that committed
it. For n = 4, 7, 10 replicas, commits ``--rounds`` B-FDL rounds of 60 transactions through a
``LocalCluster`` (full PBFT, sqlite, replica key files) and prints one JSON line each: the mean
encoded certificate size per block (and per transaction), its share of the database, the time to
check one certificate (2f+1 Ed25519 verifications) and ``verify_chain`` with and without the
certificate checks. Timing numbers depend on the machine load; nothing asserts on them. Usage::

    .venv/bin/python benchmarks/bench_ledger_certificates.py [--rounds 30] [--replicas 4 7 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledger.certificate import CommitCertificate, check_certificate, keyring_of  # noqa: E402
from ledger.cluster import LocalCluster, replica_public_keys  # noqa: E402
from ledger.sim import Workload  # noqa: E402
from ledger.storage import LedgerStore  # noqa: E402
from ledger.verify import verify_chain  # noqa: E402


def measure(n: int, rounds: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bfdl-cert-bench-") as d:
        keys = Path(d) / "keys"
        w = Workload(3, 8, replicas=replica_public_keys(keys, n))
        with LocalCluster(n, data_dir=Path(d) / "db", genesis=w.genesis, keys_dir=keys, batch_size=64) as lc:
            for r in range(1, rounds + 1):
                lc.submit_many(w.round_txs(r, 60))
            db = lc.db_paths()[0]
            db_bytes = lc.bytes_on_chain()
        with LedgerStore(db, verify="none") as st:
            blocks = list(st.iter_blocks(0))
            certs = [CommitCertificate.decode(st.get_certificate(b.height)) for b in blocks[1:]]
        ring = keyring_of(w.genesis.replicas)
        sizes = [len(c.encode()) for c in certs]
        t0 = time.perf_counter()
        for b, prev, c in zip(blocks[1:], blocks, certs):
            ring._ok.clear()  # no signature cache: every vote verified
            assert check_certificate(c, b.header, prev.header.timestamp_ms, ring) is None
        check_ms = (time.perf_counter() - t0) * 1000 / len(certs)
        t0 = time.perf_counter()
        with_certs = verify_chain(db, genesis=w.genesis)
        t_with = time.perf_counter() - t0
        t0 = time.perf_counter()
        without = verify_chain(db, genesis=w.genesis, require_certificates=False)
        t_without = time.perf_counter() - t0
        assert with_certs.ok and without.ok
        txs = sum(len(b.txs) for b in blocks)
        return {
            "replicas": n, "blocks": len(certs), "transactions": txs, "votes_per_certificate": len(certs[0].commits),
            "certificate_bytes_per_block": sum(sizes) / len(sizes), "certificate_bytes_per_tx": sum(sizes) / txs,
            "certificate_share_of_db": sum(sizes) / db_bytes, "check_ms_per_certificate": check_ms,
            "verify_chain_s_with_certificates": t_with, "verify_chain_s_without": t_without,
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--replicas", type=int, nargs="+", default=[4, 7, 10])
    args = ap.parse_args()
    for n in args.replicas:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in measure(n, args.rounds).items()},
                         sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
