"""PBFT ledger benchmark: throughput, commit latency, block interval, bytes per transaction.

Paper link: B-FDL section 4 / CLAIMS.md — the paper reports 211 tx/s, blocks under 0.5 s and
23.4 ms per transaction; issue 6 sets the target at >= 2,110 tx/s for n=4 in-process with
p50 commit latency <= 5 ms, every signature verified by every replica.

Transports. ``inproc`` (default): ``n`` replicas with sqlite databases (WAL, ``synchronous`` as
given; FULL by default), each in its own thread of this process on the real clock
(:mod:`ledger.threadnet`). ``sim``: the same replicas on the one-thread, zero-delay simulated
network of the tests (all replicas share one core). The transactions (B-FDL round traffic from
:class:`ledger.sim.Workload`) are signed before the clock starts. An open-loop-with-window client
keeps ``window`` REQUEST frames of ``client_batch`` transactions in flight; a transaction's commit
latency is the wall time from its REQUEST to the moment the client holds f+1 matching signed
REPLY frames for the block that contains it. Every replica decodes and Ed25519-verifies every
client transaction once and every replica message it needs (surplus votes are dropped unread).

The Ed25519 bound: each transaction costs at least ``n * t_verify`` of CPU, so
``1e6 / (n * verify_us_per_sig)`` tx/s bounds ``sim`` (one thread) and
``cores * 1e6 / (n * verify_us_per_sig)`` bounds ``inproc`` and ``tcp`` (verification releases the
GIL; replica-message signatures are amortised over a batch).

TCP: the same workload against ``n`` ``bfdl ledger node`` processes; the client waits for each
group of ``window * client_batch`` transactions (receipts fetched over the client query channel).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

from ledger import crypto
from ledger import messages as M


def measure_verify_us(reps: int = 2000) -> float:
    from ledger.sim import Workload

    w = Workload(99, 1)
    tx = w.round_txs(1)[0]
    pub, sig, msg = bytes.fromhex(tx.sender), tx.signature, tx.signing_bytes()
    assert crypto.verify(pub, sig, msg)
    t = time.perf_counter()
    for _ in range(reps):
        crypto.verify(pub, sig, msg)
    return (time.perf_counter() - t) / reps * 1e6


def _workload(transactions: int, seed: int, keys_dir: Path, replicas: int) -> tuple[Any, list[Any]]:
    """Signed round traffic; the genesis lists the replica keys of ``keys_dir`` (created there)."""
    from ledger.replica_keys import replica_public_keys
    from ledger.sim import Workload

    w = Workload(seed, 8, replicas=replica_public_keys(keys_dir, replicas))
    txs: list[Any] = []
    r = 0
    while len(txs) < transactions:
        r += 1
        txs += w.round_txs(r, 60)
    return w, txs[:transactions]


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(q * (len(xs) - 1)))))
    return xs[k]


def _db_bytes(paths: list[Path]) -> int:
    total = 0
    for p in paths[:1]:
        for suffix in ("", "-wal"):
            q = Path(str(p) + suffix)
            if q.exists():
                total += q.stat().st_size
    return total


class _WindowClient:
    """The benchmark client: keeps ``window`` REQUEST frames of ``client_batch`` transactions in
    flight and records, per transaction, the time from its REQUEST to the certified block."""

    def __init__(self, raws: list[bytes], hashes: list[bytes], client_batch: int, window: int) -> None:
        self.raws, self.hashes = raws, hashes
        self.client_batch, self.window = client_batch, window
        self.total = len(raws)
        self.sent_at: dict[bytes, float] = {}
        self.tx_req: dict[bytes, int] = {}
        self.req_left: list[int] = []  # outstanding transactions per request
        self.latencies: list[float] = []
        self.block_times: list[float] = []
        self.committed = self.next_tx = self.inflight = 0

    def fill(self, send: Callable[[list[bytes]], None]) -> None:
        while self.inflight < self.window and self.next_tx < self.total:
            lo, hi = self.next_tx, self.next_tx + self.client_batch
            chunk = self.raws[lo:hi]
            now = time.perf_counter()
            rid = len(self.req_left)
            self.req_left.append(len(chunk))
            for h in self.hashes[lo:hi]:
                self.sent_at[h] = now
                self.tx_req[h] = rid
            send(chunk)
            self.next_tx += len(chunk)
            self.inflight += 1

    def on_block(self, blk: Any) -> None:
        now = time.perf_counter()
        self.block_times.append(now)
        for t in blk.txs:
            h = t.tx_hash()
            st = self.sent_at.pop(h, None)
            if st is None:
                continue
            self.latencies.append((now - st) * 1000.0)
            self.committed += 1
            rid = self.tx_req.pop(h)
            self.req_left[rid] -= 1
            if self.req_left[rid] == 0:
                self.inflight -= 1

    def run(self, *, send: Callable[[list[bytes]], None], pump: Callable[[], None], collector: Any,
            block_at: Callable[[int, bytes], Any], first_seq: int) -> tuple[float, float]:
        """Drive the cluster until every transaction is in a certified block; returns (wall s,
        process CPU s). ``pump`` moves the network on; ``block_at(seq, block_hash)`` returns the
        certified block or None if it cannot be read yet."""
        seq = first_seq
        c0, t0 = time.process_time(), time.perf_counter()
        while self.committed < self.total:
            self.fill(send)
            pump()
            while True:
                cert = collector.certified(seq)
                blk = block_at(seq, cert[0]) if cert is not None else None
                if blk is None:
                    break
                self.on_block(blk)
                collector.forget_below(seq)
                seq += 1
        return time.perf_counter() - t0, time.process_time() - c0


def _result(wc: _WindowClient, elapsed: float, cpu_s: float, *, nodes: list[Any], heads: list[tuple[int, str]],
            db_path: Path, net_bytes: int, rings: Any) -> dict:
    """The keys every in-process runner reports (see ``bfdl ledger bench --json``)."""
    n = wc.total
    app0 = nodes[0].app
    block_bytes = sum(len(app0.block(h).encode()) for h in range(1, app0.height() + 1))
    roots = {node.app.contracts.state_root() for node in nodes}
    intervals = [b - a for a, b in zip(wc.block_times, wc.block_times[1:])]
    return {
        "elapsed_s": elapsed,
        "tx_per_s": n / elapsed,
        # CPU seconds of the whole process (all replicas + client) over the timed loop.
        "cpu_s": cpu_s,
        "tx_per_cpu_s": n / cpu_s if cpu_s > 0 else float("nan"),
        "latency_ms_p50": _pct(wc.latencies, 0.5),
        "latency_ms_p99": _pct(wc.latencies, 0.99),
        "block_interval_ms": (statistics.mean(intervals) * 1000.0) if intervals else float("nan"),
        "blocks": len(wc.block_times),
        "txs_per_block": n / max(1, len(wc.block_times)),
        "bytes_per_tx": block_bytes / n,
        "db_bytes_per_tx": _db_bytes([db_path]) / n,
        "net_bytes_per_tx": net_bytes / n,
        "heads_agree": len(set(heads)) == 1 and len(roots) == 1,
        "heads": [list(h) for h in heads[:1]],
        "client_sig_verifications": sum(node.app.verify_count for node in nodes),
        "replica_msg_verifications": sum(r.verifications for r in rings.values()),
    }


def _client_for(transactions: int, seed: int, client_batch: int, window: int, keys_dir: Path,
                replicas: int) -> tuple[Any, _WindowClient]:
    w, txs = _workload(transactions, seed, keys_dir, replicas)
    return w, _WindowClient([t.encode() for t in txs], [t.tx_hash() for t in txs], client_batch, window)


def run_inproc(*, replicas: int, transactions: int, batch_size: int, client_batch: int, window: int,
               data_dir: Path, sync: str, seed: int) -> dict:
    """The one-thread simulated network (``--transport sim``): all replicas share one core."""
    from ledger.cluster import LocalCluster

    w, wc = _client_for(transactions, seed, client_batch, window, data_dir / "keys", replicas)
    lc = LocalCluster(replicas, data_dir=data_dir, genesis=w.genesis, keys_dir=data_dir / "keys", seed=seed,
                      batch_size=batch_size,
                      max_inflight=2, sync=sync)
    try:
        sim = lc.sim
        assert sim is not None
        net = sim.net
        app0 = sim.nodes[0].app

        def pump() -> None:
            if not net.step():
                raise RuntimeError(f"network idle with {wc.total - wc.committed} transactions uncommitted")

        def block_at(seq: int, block_hash: bytes) -> Any:
            return app0.block(seq) if app0.block_hash(seq) == block_hash else lc._honest_block(seq, block_hash)

        elapsed, cpu_s = wc.run(
            send=lambda chunk: net.client_broadcast(M.encode(M.Request(tuple(chunk)), M.CLIENT_SENDER, None)),
            pump=pump, collector=sim.client, block_at=block_at, first_seq=app0.height() + 1)
        net.run(until=lambda: len(set(sim.heights())) == 1, max_ms=10_000)
        return _result(wc, elapsed, cpu_s, nodes=sim.nodes, heads=lc.heads(), db_path=lc.db_paths()[0],
                       net_bytes=net.bytes_sent, rings=sim.rings)
    finally:
        lc.close()


def run_threads(*, replicas: int, transactions: int, batch_size: int, client_batch: int, window: int,
                data_dir: Path, sync: str, seed: int, max_inflight: int = 4,
                switch_interval_s: Optional[float] = None) -> dict:
    """In-process, one thread per replica (:class:`ledger.threadnet.ThreadCluster`), real clock;
    the client runs in this thread."""
    from ledger import pbft
    from ledger.node import StoreChain
    from ledger.storage import LedgerStore
    from ledger.threadnet import ThreadCluster, set_switch_interval

    from ledger.replica_keys import load_or_create_replica_keys

    w, wc = _client_for(transactions, seed, client_batch, window, data_dir / "keys", replicas)
    cfg = pbft.Config(n=replicas, batch_size=batch_size, max_inflight=max_inflight)
    chains = [StoreChain(LedgerStore(data_dir / f"replica_{i}.sqlite", genesis=w.genesis, sync=sync))
              for i in range(replicas)]
    old_switch = set_switch_interval(switch_interval_s)
    cl = ThreadCluster(replicas, genesis=w.genesis, seed=seed, cfg=cfg, chains=chains,
                       keys=load_or_create_replica_keys(data_dir / "keys", replicas))
    try:
        deadline = time.monotonic() + 120.0

        def pump() -> None:
            for raw in cl.replies(timeout=0.5):
                cl.collector.on_frame(raw)
            cl.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{wc.total - wc.committed} transactions not committed within 120 s")

        def block_at(seq: int, block_hash: bytes) -> Any:
            # None when no replica has stored it yet (certified by replies first): retried later.
            for node in cl.nodes:
                if node.app.block_hash(seq) == block_hash:
                    return node.app.block(seq)
            return None

        elapsed, cpu_s = wc.run(send=cl.submit_raw, pump=pump, collector=cl.collector, block_at=block_at,
                                first_seq=1)
        cl.wait_until(lambda: len(set(cl.heights())) == 1, 20.0)
        cl.stop()
        res = _result(wc, elapsed, cpu_s, nodes=cl.nodes, heads=cl.heads(), db_path=data_dir / "replica_0.sqlite",
                      net_bytes=cl.net.bytes_sent, rings=cl.rings)
        res.update({"max_inflight": max_inflight, "switch_interval_s": switch_interval_s})
        return res
    finally:
        set_switch_interval(old_switch)
        cl.close()


def run_tcp(*, replicas: int, transactions: int, batch_size: int, client_batch: int, window: int,
            data_dir: Path, sync: str, seed: int) -> dict:
    from ledger import pbft
    from ledger.tcp import TcpCluster

    w, txs = _workload(transactions, seed, data_dir / "keys", replicas)
    cfg = pbft.Config(n=replicas, batch_size=batch_size, max_inflight=2)
    cl = TcpCluster(replicas, data_dir=data_dir, genesis=w.genesis, keys_dir=data_dir / "keys", cfg=cfg, sync=sync)
    try:
        latencies: list[float] = []
        heights: dict[int, float] = {}
        group = max(1, client_batch * window)
        block_bytes = 0
        t0 = time.perf_counter()
        for i in range(0, transactions, group):
            chunk = txs[i:i + group]
            ts = time.perf_counter()
            rs = cl.submit_many(chunk, timeout_s=120.0)
            te = time.perf_counter()
            latencies += [(te - ts) * 1000.0] * len(rs)
            for r in rs:
                heights.setdefault(r.height, te)
        elapsed = time.perf_counter() - t0
        deadline = time.monotonic() + 20.0
        heads = cl.heads()
        while len(set(heads)) != 1 and time.monotonic() < deadline:  # let lagging replicas catch up
            time.sleep(0.1)
            heads = cl.heads()
        for h in sorted(heights):
            txt = cl.client.conns[0].ask({"op": "block", "height": h})
            if isinstance(txt, str):
                block_bytes += len(txt.encode())
        times = sorted(heights.values())
        nblocks = max(1, heads[0][0])
        return {
            "elapsed_s": elapsed,
            "tx_per_s": transactions / elapsed,
            "latency_ms_p50": _pct(latencies, 0.5),
            "latency_ms_p99": _pct(latencies, 0.99),
            "block_interval_ms": elapsed * 1000.0 / nblocks,
            "blocks": nblocks,
            "txs_per_block": transactions / nblocks,
            "bytes_per_tx": block_bytes / transactions,
            "db_bytes_per_tx": _db_bytes([data_dir / "replica_0.sqlite"]) / transactions,
            "heads_agree": len(set(heads)) == 1 and heads[0][0] > 0,
            "heads": [list(h) for h in heads[:1]],
            "latency_note": "per client group of window*client_batch transactions (submit to receipt)",
            "_times": len(times),
        }
    finally:
        cl.close()


SWEEP_CLIENT_BATCHES = (1, 2, 4, 8, 16, 32, 64)
TARGET_TX_PER_S = 2110.0  # issue 6: 10x the paper's 211 tx/s
TARGET_P50_MS = 5.0


def summarize_curve(curve: list[dict]) -> dict:
    """From a latency/throughput curve: the best throughput whose p50 meets the latency target,
    and the lowest p50 among points that meet the throughput target (None if no point does)."""
    fast = [c for c in curve if c["latency_ms_p50"] <= TARGET_P50_MS]
    strong = [c for c in curve if c["tx_per_s"] >= TARGET_TX_PER_S]
    both = [c for c in curve if c["latency_ms_p50"] <= TARGET_P50_MS and c["tx_per_s"] >= TARGET_TX_PER_S]
    return {
        "target_tx_per_s": TARGET_TX_PER_S, "target_p50_ms": TARGET_P50_MS,
        "max_tx_per_s_with_p50_target": max((c["tx_per_s"] for c in fast), default=None),
        "min_p50_ms_with_tx_per_s_target": min((c["latency_ms_p50"] for c in strong), default=None),
        "both_targets_at_one_point": bool(both),
    }


def run_bench(*, replicas: int = 4, transactions: int = 2000, transport: str = "inproc", batch_size: int = 64,
              client_batch: int = 64, window: int = 1, data_dir: Optional[str] = None, sync: str = "FULL",
              seed: int = 0, sweep: bool = False) -> dict:
    """One benchmark run (see the module docstring); ``sweep=True`` adds ``latency_curve``: the
    same cluster size and transport at window 1 with client batches of
    :data:`SWEEP_CLIENT_BATCHES` transactions (one request = one block at this load), and its
    :func:`summarize_curve`."""
    res = _run_bench(replicas=replicas, transactions=transactions, transport=transport, batch_size=batch_size,
                     client_batch=client_batch, window=window, data_dir=data_dir, sync=sync, seed=seed)
    if sweep:
        curve = []
        for cb in SWEEP_CLIENT_BATCHES:
            n_tx = max(8 * cb, min(transactions, 100 * cb))
            r = _run_bench(replicas=replicas, transactions=n_tx, transport=transport, batch_size=max(batch_size, cb),
                           client_batch=cb, window=1, data_dir=data_dir, sync=sync, seed=seed)
            curve.append({"client_batch": cb, "window": 1, "transactions": n_tx, "tx_per_s": r["tx_per_s"],
                          "latency_ms_p50": r["latency_ms_p50"], "latency_ms_p99": r["latency_ms_p99"],
                          "txs_per_block": r["txs_per_block"], "heads_agree": r["heads_agree"]})
        res["latency_curve"] = curve
        res.update(summarize_curve(curve))
    return res


def _run_bench(*, replicas: int, transactions: int, transport: str, batch_size: int, client_batch: int,
               window: int, data_dir: Optional[str], sync: str, seed: int) -> dict:
    verify_us = measure_verify_us()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        cores = os.cpu_count() or 1
    tmp = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bfdl-ledger-bench-")
        base = Path(tmp.name)
    else:
        base = Path(data_dir)
        base.mkdir(parents=True, exist_ok=True)
    try:
        fn = {"inproc": run_threads, "sim": run_inproc, "tcp": run_tcp}[transport]
        res = fn(replicas=replicas, transactions=transactions, batch_size=batch_size, client_batch=client_batch,
                 window=window, data_dir=base / f"{transport}-n{replicas}-{os.getpid()}-{time.time_ns()}",
                 sync=sync, seed=seed)
    finally:
        if tmp is not None:
            tmp.cleanup()
    res.pop("_times", None)
    res.update({
        "replicas": replicas, "transport": transport, "transactions": transactions,
        "verify_us_per_sig": verify_us,
        # sim: all n replicas share one thread (one core). inproc (threads) and tcp: the replicas'
        # signature checks run on all of the machine's cores (Ed25519 verification releases the GIL).
        "ed25519_bound_tx_per_s": (1 if transport == "sim" else cores) * 1e6 / (replicas * verify_us),
        "cores": cores,
        "batch_size": batch_size, "client_batch": client_batch, "window": window, "sync": sync,
        "storage": str(base),
    })
    return res


def format_result(r: dict) -> str:
    out = _format_one(r)
    curve = r.get("latency_curve")
    if curve:
        out += "\n  latency/throughput curve (window 1; one request = one block):"
        out += "\n    client batch   tx/s      p50 ms   p99 ms"
        for c in curve:
            out += f"\n    {c['client_batch']:>12}   {c['tx_per_s']:>7.0f}   {c['latency_ms_p50']:>6.2f}   {c['latency_ms_p99']:>6.2f}"
        best, p50 = r.get("max_tx_per_s_with_p50_target"), r.get("min_p50_ms_with_tx_per_s_target")
        out += (f"\n  best tx/s with p50 <= {TARGET_P50_MS:g} ms: " + (f"{best:.0f}" if best is not None else "none")
                + f"; lowest p50 at >= {TARGET_TX_PER_S:.0f} tx/s: " + (f"{p50:.2f} ms" if p50 is not None else "none")
                + f"; both at one point: {r.get('both_targets_at_one_point')}")
    return out


def _format_one(r: dict) -> str:
    return (f"replicas={r['replicas']} transport={r['transport']} transactions={r['transactions']} "
            f"sync={r['sync']}\n"
            f"  throughput        {r['tx_per_s']:.0f} tx/s (Ed25519 bound {r['ed25519_bound_tx_per_s']:.0f} tx/s; "
            f"verify {r['verify_us_per_sig']:.1f} us/sig)\n"
            f"  commit latency    p50 {r['latency_ms_p50']:.2f} ms, p99 {r['latency_ms_p99']:.2f} ms\n"
            f"  block interval    {r['block_interval_ms']:.2f} ms ({r['txs_per_block']:.1f} tx/block, {r['blocks']} blocks)\n"
            f"  bytes per tx      {r['bytes_per_tx']:.0f} (block encoding), {r['db_bytes_per_tx']:.0f} (sqlite file)\n"
            f"  heads agree       {r['heads_agree']}")
