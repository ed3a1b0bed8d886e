"""Query flood against a TCP ledger cluster (issue 17.5): do commits continue?

Paper link: B-FDL section 3.4 — the consortium chain keeps ordering round records while
hospitals and the aggregator read it.

Starts ``n`` (default 4) ``python -m ledger node`` processes, then measures the commit throughput
of a client submitting signed B-FDL round transactions (groups of ``--group`` transactions, each
waited for: f+1 matching replies and a receipt) in ``--pairs`` alternating phases of
``--transactions`` transactions: unflooded, then while ONE other client (its own process) floods
the primary (replica 0) with pipelined block queries over one connection (``--flood read``: it
reads the answers as fast as it can, keeping up to ``--pipeline`` queries in flight; ``--flood
burst``: it sends ``--burst`` queries at a time without reading, reconnecting when the node drops
it). Alternating short phases cancel slow drifts of the machine's load (other processes share it).

It prints one JSON object: commit tx/s unflooded and flooded (all phases of each kind together,
and per phase), their ratio (target >= 0.8), the flood's sent and answered query rates, and the
primary's hygiene counters (``stats`` query: throttling, dropped clients, queries dropped).
Timing numbers depend on the machine load; the script prints them, nothing asserts on them.
Usage::

    .venv/bin/python benchmarks/bench_ledger_flood.py [--pairs 6] [--transactions 400] [--flood read|burst]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledger import pbft  # noqa: E402
from ledger.replica_keys import replica_public_keys  # noqa: E402
from ledger.sim import Workload  # noqa: E402
from ledger.tcp import ANSWER_PREFIX, QUERY_PREFIX  # noqa: E402
from ledger.tcp_client import TcpCluster  # noqa: E402

LEN = struct.Struct(">I")


class Flooder:
    """One client connection flooding block queries at ``addr``, in its own process (so that it
    does not compete with the submitting client for this process's interpreter lock)."""

    def __init__(self, addr: tuple[str, int], *, mode: str, pipeline: int, burst: int, top: int) -> None:
        ctx = mp.get_context("spawn")
        self.sent, self.answered, self.disconnects = ctx.Value("q", 0), ctx.Value("q", 0), ctx.Value("q", 0)
        self.stop, self.active = ctx.Event(), ctx.Event()
        self.proc = ctx.Process(target=_flood, args=(addr, mode, pipeline, burst, max(1, top), self.sent,
                                                     self.answered, self.disconnects, self.stop, self.active),
                                daemon=True)

    def counts(self) -> tuple[int, int]:
        return self.sent.value, self.answered.value


def _query(i: int, top: int) -> bytes:
    q = QUERY_PREFIX + json.dumps({"op": "block", "height": 1 + i % top}).encode()
    return LEN.pack(len(q)) + q


def _flood(addr, mode, pipeline, burst, top, sent, answered, disconnects, stop, active) -> None:  # child process
    n = got = 0
    while not stop.is_set():
        if not active.wait(0.1):
            continue
        try:
            with socket.create_connection(tuple(addr), timeout=5.0) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if mode == "burst":
                    s.settimeout(2.0)
                    while active.is_set():
                        s.sendall(b"".join(_query(n + k, top) for k in range(burst)))
                        n += burst
                        sent.value = n
                    continue
                f = s.makefile("rb")
                inflight = 0
                while active.is_set():
                    if inflight < pipeline:
                        k = pipeline - inflight
                        s.sendall(b"".join(_query(n + j, top) for j in range(k)))
                        n += k
                        inflight += k
                        sent.value = n
                    (m,) = LEN.unpack(f.read(4))
                    if f.read(m)[:2] == ANSWER_PREFIX:
                        got += 1
                        inflight -= 1
                        if got % 16 == 0:
                            answered.value = got
        except OSError:
            disconnects.value += 1
            time.sleep(0.05)


def commit_rate(cl: TcpCluster, txs: list, group: int) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(txs), group):
        rs = cl.submit_many(txs[i:i + group], timeout_s=120.0)
        assert all(r.verify() for r in rs)
    return len(txs) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=6, help="unflooded/flooded phase pairs")
    ap.add_argument("--transactions", type=int, default=400, help="per phase")
    ap.add_argument("--group", type=int, default=64, help="transactions per submit (waited for)")
    ap.add_argument("--flood", choices=("read", "burst"), default="read")
    ap.add_argument("--pipeline", type=int, default=2000, help="read mode: queries in flight")
    ap.add_argument("--burst", type=int, default=20_000, help="burst mode: queries per write")
    args = ap.parse_args()
    k = args.transactions
    with tempfile.TemporaryDirectory(prefix="bfdl-ledger-flood-") as d:
        w = Workload(5, 8, replicas=replica_public_keys(Path(d) / "keys", args.replicas))
        txs: list = []
        r = 0
        while len(txs) < 2 * args.pairs * k + 200:
            r += 1
            txs += w.round_txs(r, 60)
        cfg = pbft.Config(n=args.replicas, batch_size=64, max_inflight=2)
        cl = TcpCluster(args.replicas, data_dir=Path(d) / "db", genesis=w.genesis, keys_dir=Path(d) / "keys", cfg=cfg)
        fl = None
        try:
            commit_rate(cl, txs[:200], args.group)  # warm-up; gives the flood blocks to read
            fl = Flooder(cl.peers[0], mode=args.flood, pipeline=args.pipeline, burst=args.burst, top=cl.heads()[0][0])
            fl.proc.start()
            phases: dict[str, list[float]] = {"unflooded": [], "flooded": []}
            times = {"unflooded": 0.0, "flooded": 0.0}
            sent = answered = 0
            flood_s = 0.0
            for i in range(2 * args.pairs):
                kind = "flooded" if i % 2 else "unflooded"
                chunk = txs[200 + i * k:200 + (i + 1) * k]
                if kind == "flooded":
                    fl.active.set()
                    time.sleep(0.5)  # the flood is running before the phase starts
                    (s0, a0), t0 = fl.counts(), time.perf_counter()
                rate = commit_rate(cl, chunk, args.group)
                if kind == "flooded":
                    (s1, a1), flood_s = fl.counts(), flood_s + time.perf_counter() - t0
                    sent, answered = sent + s1 - s0, answered + a1 - a0
                    fl.active.clear()
                    time.sleep(0.5)
                phases[kind].append(round(rate, 1))
                times[kind] += len(chunk) / rate
            stats = cl.client.conns[0].ask({"op": "stats"}) or {}
            deadline = time.monotonic() + 20.0
            heads = cl.heads()
            while len(set(heads)) != 1 and time.monotonic() < deadline:  # let lagging replicas catch up
                time.sleep(0.1)
                heads = cl.heads()
        finally:
            if fl is not None:
                fl.stop.set()
                fl.proc.join(timeout=10)
                if fl.proc.is_alive():
                    fl.proc.kill()
            cl.close()
    unflooded, flooded = args.pairs * k / times["unflooded"], args.pairs * k / times["flooded"]
    print(json.dumps({
        "replicas": args.replicas, "pairs": args.pairs, "transactions_per_phase": k, "group": args.group,
        "flood": args.flood, "flood_target": "replica 0 (primary)",
        "commit_tx_per_s_unflooded": round(unflooded, 1), "commit_tx_per_s_flooded": round(flooded, 1),
        "ratio": round(flooded / unflooded, 3), "target_ratio": 0.8, "phases_tx_per_s": phases,
        "flood_queries_sent_per_s": round(sent / flood_s, 1), "flood_queries_answered_per_s": round(answered / flood_s, 1),
        "flood_disconnects": fl.disconnects.value, "primary_stats": stats, "heads_agree": len(set(heads)) == 1,
    }, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
