"""Client queries of a TCP ledger node, answered off the consensus path (issue 17.5).

Paper link: B-FDL section 3.4 — hospitals and the aggregator read the chain (receipts, round
records) while the consortium keeps ordering new ones; reads must not stall consensus.

A :class:`QueryWorker` is one thread with a bounded queue. The node's event loop only parses a
query's framing and enqueues it (or answers ``busy`` at once when the queue is full); the worker
reads its own read-only sqlite connection (:class:`ledger.storage.StoreReader`: committed blocks,
never blocking the replica's writes) and a follower contract state it keeps by re-executing the
committed blocks (for ``query``), and hands each answer back to the loop. Jobs of a connection
that has closed are dropped unread. The worker shares the process (and CPython's interpreter
lock) with the consensus loop, so it paces itself: its CPU time stays within ``cpu_share`` of
wall time (a flood is served more slowly, never at the expense of consensus).

Operations (JSON, as before): ``find`` (tx hashes -> [height, index] or null), ``block`` (height
-> the block's canonical encoding as a string), ``query`` (a contract state path -> [height,
value]), ``head`` ([height, block hash, view]), ``stats`` (the node's hygiene counters).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from ledger.contracts import ContractState, Genesis
from ledger.storage import StoreReader

__all__ = ["QueryJob", "QueryWorker", "MAX_FIND_HASHES"]

MAX_FIND_HASHES = 4096
BUDGET_BURST_S = 0.05  # the worker may answer for this long at once before pacing applies


class QueryJob:
    """One query of one connection (``link`` is the node's connection object: it has ``closed``)."""

    __slots__ = ("link", "data")

    def __init__(self, link: Any, data: bytes) -> None:
        self.link = link
        self.data = data


class QueryWorker:
    """See the module docstring. ``deliver(link, answer_bytes)`` is called from the worker thread
    (the node passes a function that hands the answer to its event loop); ``view()`` and
    ``stats()`` are read by the worker (plain ints: safe to read from another thread);
    ``snapshots()`` returns the replica's recent :class:`ledger.contracts.StateCheckpoint` by
    height, to start the follower state without replaying the whole chain."""

    def __init__(self, db_path: str | Path, genesis: Genesis, *, deliver: Callable[[Any, bytes], None],
                 view: Callable[[], int], stats: Callable[[], dict[str, int]],
                 snapshots: Callable[[], dict[int, Any]], queue_size: int, cpu_share: float = 0.2) -> None:
        self.db_path = Path(db_path)
        self.genesis = genesis
        self._deliver, self._view, self._stats, self._snapshots = deliver, view, stats, snapshots
        self.q: "queue.Queue[Optional[QueryJob]]" = queue.Queue(maxsize=queue_size)
        self.served = 0  # queries answered
        self.dropped = 0  # queries of closed connections, dropped unread
        self.paused_s = 0.0  # time the worker slept to stay within its share
        self.cpu_share = cpu_share  # fraction of wall time the worker may spend answering
        self._budget = BUDGET_BURST_S  # seconds of answering the worker may still spend now
        self._reader: Optional[StoreReader] = None
        self._follower: Optional[ContractState] = None
        self._follower_height = 0
        self._t = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="ledger-query-worker", daemon=True)
        self._thread.start()

    def submit(self, job: QueryJob) -> bool:
        """Enqueue (never blocks); False when the queue is full (the caller answers ``busy``)."""
        try:
            self.q.put_nowait(job)
            return True
        except queue.Full:
            return False

    def stop(self) -> None:
        try:
            self.q.put(None, timeout=1.0)
        except queue.Full:
            pass
        self._thread.join(timeout=5.0)

    # -- worker thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._reader = StoreReader(self.db_path)
            while True:
                job = self.q.get()
                if job is None:
                    return
                if job.link.closed:
                    self.dropped += 1
                    continue
                t0 = time.thread_time()
                ans = self.answer(job.data)
                self.served += 1
                self._deliver(job.link, ans)
                self._pace(time.thread_time() - t0)
        finally:
            if self._reader is not None:
                self._reader.close()

    def _pace(self, spent: float) -> None:
        """Keep the worker's CPU time (``spent``: this thread's CPU seconds for the last answer)
        within ``cpu_share`` of wall time (it shares the process and the interpreter lock with the
        consensus loop): a budget refilled at ``cpu_share`` seconds per second, at most
        :data:`BUDGET_BURST_S`; when spent, the worker sleeps."""
        now = time.monotonic()
        self._budget = min(BUDGET_BURST_S, self._budget + (now - self._t) * self.cpu_share) - spent
        self._t = now
        if self._budget < 0:
            pause = -self._budget / self.cpu_share
            self.paused_s += pause
            time.sleep(pause)

    def answer(self, data: bytes) -> bytes:
        """The answer bytes (JSON) to one query; a bad query gets ``{"error": ...}``."""
        try:
            q = json.loads(data.decode("utf-8"))
            res = self._dispatch(q["op"], q)
        except Exception as e:  # a bad query never hurts the node
            res = {"error": type(e).__name__}
        if isinstance(res, bytes):  # already JSON
            return res
        return json.dumps(res, separators=(",", ":")).encode("utf-8")

    def _dispatch(self, op: str, q: dict) -> Any:
        reader = self._reader
        assert reader is not None
        if op == "find":
            return {h: reader.find_tx(bytes.fromhex(h)) for h in q["hashes"][:MAX_FIND_HASHES]}
        if op == "block":
            raw = reader.block_bytes(int(q["height"]))
            if raw is None:
                return {"error": "KeyError"}
            return json.dumps(raw.decode("utf-8"), ensure_ascii=False).encode("utf-8")
        if op == "head":
            height, h = reader.head()
            return [height, h.hex() if h else "", self._view()]
        if op == "query":
            height = self._catch_up()
            assert self._follower is not None
            return [height, self._follower.query(str(q["path"]))]
        if op == "stats":
            return {**self._stats(), "queries_served": self.served, "queries_dropped": self.dropped,
                    "query_worker_paused_s": round(self.paused_s, 3)}
        return None

    def _catch_up(self) -> int:
        """Bring the follower state to the newest committed block; returns its height."""
        assert self._reader is not None
        head, _h = self._reader.head()
        if self._follower is None or head < self._follower_height:
            snaps = {s: cp for s, cp in dict(self._snapshots()).items() if s <= head}
            if snaps:
                top = max(snaps)
                self._follower = ContractState.from_snapshot(self.genesis, snaps[top].to_bytes())
                self._follower_height = top
            else:
                self._follower, self._follower_height = ContractState(self.genesis), 0
        if head > self._follower_height:
            for b in self._reader.blocks(self._follower_height + 1, head):
                self._follower.apply_block(b.txs, height=b.height, timestamp_ms=b.header.timestamp_ms,
                                           check_signature=False)
            self._follower_height = head
        return self._follower_height
