"""Cost of the ledger's cryptographic primitives on this machine (issue 6 "Performance").

Prints Ed25519 sign/verify time, the per-transaction verification path (``Transaction.decode`` +
``verify_signature``), SHA-256, the Merkle root of a 64-transaction block and contract execution
per transaction, then the throughput bound the verify cost implies when every replica of an
in-process cluster verifies every signature on one core:  ``tx/s <= 1e6 / (n * verify_us)``.

Run: ``.venv/bin/python benchmarks/bench_ledger_crypto.py [--n 2000] [--json]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledger import crypto, merkle  # noqa: E402
from ledger.contracts import ContractState, Genesis  # noqa: E402
from ledger.tx import Transaction, sign_tx  # noqa: E402


def _time_us(fn, items, repeats: int = 3) -> float:
    best = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for it in items:
            fn(it)
        best.append((time.perf_counter() - t0) / len(items) * 1e6)
    return min(best)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    n = a.n
    key = crypto.SigningKey.from_seed(bytes([5]) * 32)
    pub = key.public_key()
    msgs = [b"bfdl-bench-%d" % i for i in range(n)]
    sigs = [key.sign(m) for m in msgs]
    pairs = list(zip(sigs, msgs))
    sign_us = _time_us(key.sign, msgs)
    verify_us = _time_us(lambda sm: crypto.verify(pub, sm[0], sm[1]), pairs)

    admin = crypto.SigningKey.from_seed(bytes([1]) * 32)
    hosp = crypto.SigningKey.from_seed(bytes([2]) * 32)
    agg = crypto.SigningKey.from_seed(bytes([3]) * 32)
    g = Genesis(admins=(admin.key_id(),), institutions=(("hospital", "h", hosp.key_id()), ("aggregator", "a", agg.key_id())))
    txs = [sign_tx(hosp, "access.request_summary", {"round": 1}, nonce=f"n{i}") for i in range(n)]
    encs = [t.encode() for t in txs]
    tx_bytes = statistics.mean(len(e) for e in encs)
    decode_verify_us = _time_us(lambda b: Transaction.decode(b).verify_signature(), encs)
    decode_us = _time_us(Transaction.decode, encs)
    sha_us = _time_us(crypto.sha256, encs)
    leaves = [t.tx_hash() for t in txs[:64]]
    merkle64_us = _time_us(lambda _: merkle.merkle_root(leaves), range(200))

    def run_contracts(_):
        st = ContractState(g)
        st.apply(sign_tx(agg, "round.open", {"round": 1}, nonce="open"), height=1, timestamp_ms=0)
        t0 = time.perf_counter()
        for t in txs:
            st.apply(t, height=2, timestamp_ms=0, check_signature=False)
        return (time.perf_counter() - t0) / len(txs) * 1e6

    apply_us = min(run_contracts(None) for _ in range(3))
    st = ContractState(g)
    root_us = _time_us(lambda _: (setattr(st, "_root", None), st.state_root()), range(200))

    out = {
        "ed25519_sign_us": round(sign_us, 2),
        "verify_us_per_sig": round(verify_us, 2),
        "tx_decode_us": round(decode_us, 2),
        "tx_decode_and_verify_us": round(decode_verify_us, 2),
        "sha256_tx_us": round(sha_us, 3),
        "merkle_root_64_us": round(merkle64_us, 1),
        "contract_apply_us_per_tx": round(apply_us, 2),
        "state_root_small_state_us": round(root_us, 1),
        "tx_bytes_access_request": round(tx_bytes, 1),
        "bound_tx_per_s_single_core": {
            str(r): round(1e6 / (r * verify_us)) for r in (1, 4, 7, 10)
        },
    }
    if a.json:
        print(json.dumps(out, indent=2))
        return
    print(f"Ed25519 sign                 {sign_us:8.2f} us")
    print(f"Ed25519 verify               {verify_us:8.2f} us   (cryptography/OpenSSL, n={n})")
    print(f"tx decode (strict)           {decode_us:8.2f} us")
    print(f"tx decode + verify           {decode_verify_us:8.2f} us   ({tx_bytes:.0f}-byte transactions)")
    print(f"sha256 of one tx             {sha_us:8.3f} us")
    print(f"Merkle root, 64 tx           {merkle64_us:8.1f} us")
    print(f"contract apply per tx        {apply_us:8.2f} us   (signature already checked)")
    print(f"state root (small state)     {root_us:8.1f} us")
    print("throughput bound if every replica of an in-process cluster verifies every signature on one core:")
    for r, v in out["bound_tx_per_s_single_core"].items():
        print(f"  n={r:>2}: <= {v:>7} tx/s")


if __name__ == "__main__":
    main()
