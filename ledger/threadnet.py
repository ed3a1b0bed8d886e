"""Threaded in-process PBFT cluster: one OS thread per replica, real clock, in-memory links.

Paper link: B-FDL section 3.4 — the consortium chain; issue 6 "Performance" (n=4 in-process).

:mod:`ledger.sim` runs every replica in one thread in virtual time: deterministic, ideal for the
fault tests, but it serialises everything (signature checks and fsyncs of all replicas one after
the other). Here the same replicas (:class:`ledger.node.ReplicaNode`: the pure
:class:`ledger.pbft.Replica`, contracts, sqlite storage) each run in their own thread of this
process, like the replica processes of :mod:`ledger.tcp` but without sockets:

* a link is a ``queue.SimpleQueue`` per replica (FIFO, lossless, no delay);
* timers are per-replica deadlines on the monotonic clock, checked by the replica's own thread;
* every action is performed by the replica's thread in order (votes fsynced before the next
  send, exactly as over TCP);
* Ed25519 verification (``cryptography``) and sqlite's fsync release the GIL, so the replicas'
  signature checks and disk writes overlap on the machine's cores; Python-level protocol work
  still takes turns on the GIL.

Each replica still decodes and verifies every client transaction and every replica frame itself
(own :class:`ledger.messages.KeyRing` and signature cache). Client REPLY frames go to a queue the
caller drains (:meth:`ThreadCluster.replies`).
"""

from __future__ import annotations

import queue
import sys
import threading
import time
import traceback
from typing import Any, Callable, Iterable, Optional

from ledger import messages as M
from ledger import pbft
from ledger.client import LedgerError, Receipt, ReplyCollector, locate_certified, receipt_from_block
from ledger.contracts import Genesis
from ledger.node import MemoryChain, NodeSpec, ReplicaNode
from ledger.sim import make_keys

_STOP = object()


class ThreadNet:
    """Transport (``ledger.node.Transport``) for replicas running in threads of one process."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.t0 = time.monotonic()
        self.inbox: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in range(n)]
        self.timers: list[dict[str, float]] = [{} for _ in range(n)]
        self.client_q: queue.SimpleQueue = queue.SimpleQueue()
        self.frames_sent = 0
        self.bytes_sent = 0

    def now_ms(self) -> int:
        return int((time.monotonic() - self.t0) * 1000.0) + 1

    def send(self, frm: int, to: Optional[int], raw: bytes) -> None:
        if to == pbft.CLIENT:
            self.client_q.put(raw)
            return
        targets = range(self.n) if to is None else (to,)
        for j in targets:
            if j != frm:
                self.frames_sent += 1
                self.bytes_sent += len(raw)
                self.inbox[j].put(raw)

    def client_broadcast(self, raw: bytes, targets: Optional[Iterable[int]] = None) -> None:
        for j in (range(self.n) if targets is None else targets):
            self.inbox[j].put(raw)

    # Timers are only touched by the replica's own thread (and during construction, before the
    # thread starts), so the per-replica dict needs no lock.
    def set_timer(self, rid: int, name: str, delay_ms: int) -> None:
        self.timers[rid][name] = time.monotonic() + max(0, delay_ms) / 1000.0

    def cancel_timer(self, rid: int, name: str) -> None:
        self.timers[rid].pop(name, None)


class ThreadCluster:
    """``n`` replicas, each in its own thread (see the module docstring).

    ``chains``: one chain per replica (``StoreChain`` over sqlite, or ``MemoryChain``).
    ``keys``: the replicas' signing keys (:mod:`ledger.replica_keys`); without them, test keys
    derived from ``seed`` as in :class:`ledger.sim.SimCluster`. Thread-safe for one client at a time: :meth:`submit` from any thread, :meth:`replies`
    from the client's thread. :meth:`close` stops and joins every thread (idempotent).
    """

    def __init__(self, n: int, *, genesis: Genesis, seed: int = 0, cfg: Optional[pbft.Config] = None,
                 chains: Optional[list[Any]] = None, keys: Optional[list[Any]] = None) -> None:
        self.n = n
        self.genesis = genesis
        self.cfg = cfg or pbft.Config(n=n)
        if self.cfg.n != n:
            raise ValueError("cfg.n != n")
        self.f = self.cfg.f
        self.net = ThreadNet(n)
        self.keys = list(keys) if keys is not None else make_keys(n, seed)
        if len(self.keys) != n:
            raise ValueError(f"{len(self.keys)} replica keys for {n} replicas")
        self.client_keyring = M.KeyRing([k.public_key() for k in self.keys])
        self.collector = ReplyCollector(self.client_keyring, self.f)
        self.chains = chains or [MemoryChain() for _ in range(n)]
        self.rings: dict[int, M.KeyRing] = {}
        self.nodes: list[ReplicaNode] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        for i in range(n):
            ring = M.KeyRing([k.public_key() for k in self.keys])
            self.rings[i] = ring
            self.nodes.append(ReplicaNode(NodeSpec(i, self.cfg, ring, self.keys[i], genesis), self.chains[i],
                                          self.net, restarted=self.chains[i].height() > 0))
        self.threads = [threading.Thread(target=self._run, args=(i,), name=f"pbft-replica-{i}", daemon=True)
                        for i in range(n)]
        for t in self.threads:
            t.start()

    # -- replica threads ---------------------------------------------------------------------------

    def _run(self, rid: int) -> None:
        node = self.nodes[rid]
        inbox = self.net.inbox[rid]
        timers = self.net.timers[rid]
        try:
            while not self._stop.is_set():
                timeout = None
                if timers:
                    timeout = max(0.0, min(timers.values()) - time.monotonic())
                try:
                    raw = inbox.get(timeout=timeout)
                except queue.Empty:
                    raw = None
                while raw is not None:
                    if raw is _STOP:
                        return
                    node.handle(raw)
                    try:
                        raw = inbox.get_nowait()
                    except queue.Empty:
                        raw = None
                if timers:
                    now = time.monotonic()
                    for name in [k for k, dl in timers.items() if dl <= now]:
                        if timers.get(name, now + 1) <= now:
                            del timers[name]
                            node.fire(name)
        except BaseException:  # pragma: no cover - reported by close()/check()
            self.errors.append(f"replica {rid}: {traceback.format_exc()}")
            self._stop.set()

    # -- client side -------------------------------------------------------------------------------

    def submit_raw(self, raws: list[bytes], targets: Optional[Iterable[int]] = None) -> None:
        """Broadcast one REQUEST frame carrying ``raws`` (encoded signed transactions)."""
        self.net.client_broadcast(M.encode(M.Request(tuple(raws)), M.CLIENT_SENDER, None), targets)

    def replies(self, timeout: Optional[float] = None) -> list[bytes]:
        """REPLY frames sent to the client since the last call (waits up to ``timeout`` for one)."""
        out: list[bytes] = []
        try:
            out.append(self.net.client_q.get(timeout=timeout))
            while True:
                out.append(self.net.client_q.get_nowait())
        except queue.Empty:
            pass
        return out

    def submit_many(self, txs: list[Any], *, timeout_s: float = 60.0) -> list[Receipt]:
        """Broadcast ``txs``, wait until each is in a block certified by f+1 matching signed
        replies, and return one :class:`ledger.client.Receipt` each (inclusion proof included)."""
        raws = [t if isinstance(t, bytes) else t.encode() for t in txs]
        hashes = [M.sha256(r) for r in raws]
        if not raws:
            return []
        self.submit_raw(raws)
        deadline = time.monotonic() + timeout_s
        found: dict[bytes, Receipt] = {}
        while True:
            for raw in self.replies(timeout=0.005):
                self.collector.on_frame(raw)
            self.check()
            for h in hashes:
                if h in found:
                    continue
                got = locate_certified((node.app for node in self.nodes), self.collector, h)
                if got is not None:
                    app, height, index, _bh = got
                    found[h] = receipt_from_block(app.block(height), index)
            if len(found) == len(set(hashes)):
                top = max(r.height for r in found.values())
                self.collector.forget_below(top - 2 * self.cfg.L)
                return [found[h] for h in hashes]
            if time.monotonic() > deadline:
                raise LedgerError(f"{len(set(hashes)) - len(found)} of {len(set(hashes))} transactions not "
                                  f"committed within {timeout_s:.0f} s — heights {self.heights()}")

    def check(self) -> None:
        if self.errors:
            raise RuntimeError("a replica thread failed:\n" + self.errors[0])

    # -- observation (call after close(), or accept a racy read) -----------------------------------

    def heights(self) -> list[int]:
        return [self.nodes[i].app.height() for i in range(self.n)]

    def heads(self) -> list[tuple[int, str]]:
        out = []
        for i in range(self.n):
            app = self.nodes[i].app
            h = app.height()
            out.append((h, app.block(h).hash().hex()))
        return out

    def wait_until(self, pred: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check()
            if pred():
                return True
            time.sleep(0.002)
        return pred()

    def stop(self) -> None:
        """Stop and join the replica threads (chains stay open)."""
        if self._stop.is_set() and not any(t.is_alive() for t in self.threads):
            return
        self._stop.set()
        for q in self.net.inbox:
            q.put(_STOP)
        for t in self.threads:
            t.join(timeout=30.0)
        for node in self.nodes:
            node.alive = False

    def close(self) -> None:
        self.stop()
        for c in self.chains:
            c.close()


def replica_threads_alive() -> int:
    """Number of live replica threads in this process (tests check that close() joined them)."""
    return sum(1 for t in threading.enumerate() if t.name.startswith("pbft-replica-") and t.is_alive())


def set_switch_interval(seconds: Optional[float]) -> Optional[float]:
    """Set the interpreter's GIL switch interval (returns the old one; ``None`` = unchanged).

    CPython hands the GIL to a waiting thread every 5 ms by default; with several replica
    threads doing short Python steps between GIL-free signature checks and fsyncs, a shorter
    interval cuts the time a ready replica waits for its turn (measured by the ledger benchmark).
    """
    old = sys.getswitchinterval()
    if seconds is not None:
        sys.setswitchinterval(seconds)
    return old
