"""TCP transport, node side: a PBFT replica as a process (``python -m ledger node``).

Paper link: B-FDL section 3.4 — consortium nodes exchange PBFT messages over the network and serve
the chain to hospitals and the aggregator.

Wire: every frame is ``length (u32 big-endian) | payload``. On accept the node sends a challenge
``b"CH" + 32 random bytes``. A replica peer answers ``b"HI" + sender u16 + Ed25519 signature`` over
``HELLO_DOMAIN | sender | target | challenge`` with its replica key: the connection is then a
*replica link* (frames up to ``MAX_FRAME``, PBFT messages accepted). Any other connection is a
*client*: it may send REQUEST frames (client transactions, handled by the replica) and queries
``b"CQ" + JSON`` (answered ``b"CA" + JSON`` by the query worker, :mod:`ledger.tcp_query`); it
receives the replica's REPLY frames. Outgoing replica links: one connection per peer with a
bounded send queue and reconnect-with-backoff; lost frames are recovered by retransmission.

Node hygiene (issue 17.5; :class:`NodeLimits`, all per client connection unless stated):

* frame size: at most ``client_frame_bytes`` (a larger announced frame closes the connection);
  a frame must arrive completely within ``frame_timeout_s`` (a half-sent frame is dropped with its
  connection), and the stream buffer is small, so a half-sent frame holds at most the bytes
  actually sent, at most ``client_frame_bytes``;
* rate: token buckets of ``frame_rate`` frames per second (burst ``frame_burst``) and
  ``answer_bytes_rate`` answer bytes per second (burst ``answer_bytes_burst``); past either the
  node stops reading that connection until it is due (TCP backpressure on the sender);
* pending queries: at most ``pending_queries`` per connection in the query worker; at the limit
  the node stops reading the connection; the worker's queue (all connections) holds
  ``query_queue`` jobs, beyond which queries are answered ``busy`` at once;
* the query worker (one thread for all connections) paces itself to ``query_cpu_share`` of wall
  time, so even a flood spread over many connections takes a bounded share of the node;
* unread output: with more than a quarter of ``client_buffer_bytes`` unsent to a client the node
  stops reading it until it reads (disconnected if it does not within ``frame_timeout_s``); a
  client whose unsent answers and replies exceed ``client_buffer_bytes`` is disconnected; queries
  of a closed connection are dropped unread; at most ``max_clients`` client connections.

Queries never run in the event loop that drives consensus: it only frames them and hands them to
the worker thread, which reads its own read-only sqlite connection.

The node process (:func:`run_node`) is one asyncio loop: network I/O, timers (``loop.call_later``)
and the replica, whose actions are performed in order (votes fsynced before the next send).

Config file (JSON, written by :class:`ledger.tcp_client.TcpCluster`): ``n``, ``keys_dir`` (replica
``i`` reads its signing key from ``<keys_dir>/replica-<i>.key``, :mod:`ledger.replica_keys`),
``replicas`` (the replicas' hex public keys, in id order; they must equal ``genesis.replicas`` when
the genesis lists them), ``genesis`` (``Genesis.to_dict()``), ``peers`` (``[[host, port], ...]``),
``data_dir``, ``checkpoint_interval``, ``batch_size``, ``max_inflight``, ``view_timeout_ms``,
``sync``, ``limits`` (:class:`NodeLimits` fields; optional).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

from ledger import crypto
from ledger import messages as M
from ledger import pbft
from ledger.contracts import Genesis
from ledger.errors import KeyFileError, LedgerError
from ledger.node import NodeSpec, ReplicaNode, StoreChain
from ledger.replica_keys import key_path, load_replica_key
from ledger.storage import LedgerStore
from ledger.tcp_query import QueryJob, QueryWorker

__all__ = ["NodeLimits", "TcpNode", "run_node", "hello", "LEN", "MAX_FRAME", "QUERY_PREFIX", "ANSWER_PREFIX",
           "CHALLENGE_PREFIX", "HELLO_PREFIX"]

MAX_FRAME = M.MAX_FRAME
LEN = struct.Struct(">I")
QUERY_PREFIX = b"CQ"
ANSWER_PREFIX = b"CA"
CHALLENGE_PREFIX = b"CH"
HELLO_PREFIX = b"HI"
HELLO_DOMAIN = b"bfdl-ledger-hello-v1\x00"
_U16 = struct.Struct(">H")
STREAM_LIMIT = 64 * 1024  # asyncio stream buffer high-water mark (pauses reading above it)
PEER_FRAME_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class NodeLimits:
    """Per-connection limits of a node's client connections (see the module docstring)."""

    client_frame_bytes: int = 4 * 1024 * 1024  # largest frame a client may send
    frame_timeout_s: float = 10.0  # a client frame must arrive completely within this
    frame_rate: float = 2000.0  # client frames (queries + requests) per second, token bucket
    frame_burst: int = 256  # bucket size
    pending_queries: int = 64  # queries of one connection queued or being answered
    answer_bytes_rate: float = 8 * 1024 * 1024  # answer bytes per second to one client, token bucket
    answer_bytes_burst: int = 1024 * 1024  # bucket size
    client_buffer_bytes: int = 4 * 1024 * 1024  # unsent bytes to one client before it is dropped
    max_clients: int = 256  # client connections at once
    query_queue: int = 4096  # the query worker's queue, all connections
    query_cpu_share: float = 0.2  # fraction of wall time the query worker may spend answering

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NodeLimits":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown node limits {unknown}")
        return cls(**d)


def hello(signer: crypto.Signer, sender: int, target: int, challenge: bytes) -> bytes:
    """The handshake answer of replica ``sender`` connecting to replica ``target``."""
    body = _U16.pack(sender) + _U16.pack(target) + challenge
    return HELLO_PREFIX + _U16.pack(sender) + bytes(signer.sign(HELLO_DOMAIN + body))


async def read_frame(reader: asyncio.StreamReader, limit: int, timeout: Optional[float]) -> bytes:
    """One frame; ``ValueError`` if it announces more than ``limit`` bytes, ``TimeoutError`` if its
    body does not arrive within ``timeout`` seconds."""
    (n,) = LEN.unpack(await reader.readexactly(4))
    if n > limit:
        raise ValueError(f"frame of {n} bytes exceeds the limit {limit}")
    return await asyncio.wait_for(reader.readexactly(n), timeout)


class _Link:
    """One accepted connection: a client, or (after the handshake) a replica peer."""

    def __init__(self, writer: asyncio.StreamWriter, limits: NodeLimits, now: float) -> None:
        self.writer = writer
        self.peer: Optional[int] = None  # authenticated replica id
        self.client = False  # sent a REQUEST or a query: receives REPLY frames
        self.closed = False
        self.pending = 0  # queries in the worker
        self.tokens = float(limits.frame_burst)  # frame tokens (rate limit)
        self.byte_tokens = float(limits.answer_bytes_burst)  # answer-byte tokens (bandwidth limit)
        self.t = now  # last refill of both buckets
        self.wake = asyncio.Event()

    def buffered(self) -> int:
        t = self.writer.transport
        return 0 if t is None or t.is_closing() else t.get_write_buffer_size()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.wake.set()
            if self.writer.transport is not None:
                self.writer.transport.abort()  # drop unsent bytes now (close() would wait for them)


class _Peer:
    """The outgoing link to replica ``rid`` (bounded queue, reconnect with backoff, handshake)."""

    def __init__(self, node: "TcpNode", rid: int, host: str, port: int) -> None:
        self.node, self.rid, self.host, self.port = node, rid, host, port
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=20_000)
        self.task = asyncio.get_event_loop().create_task(self._run())

    def send(self, raw: bytes) -> None:
        if self.queue.full():
            self.queue.get_nowait()  # drop the oldest: retransmission recovers
        self.queue.put_nowait(raw)

    async def _run(self) -> None:
        backoff = 0.02
        while True:
            try:
                r, w = await asyncio.open_connection(self.host, self.port)
                w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                ch = await read_frame(r, 64, 5.0)
                if ch[:2] != CHALLENGE_PREFIX:
                    raise ConnectionError("no handshake challenge")
                hi = hello(self.node.signer, self.node.rid, self.rid, ch[2:])
                w.write(LEN.pack(len(hi)) + hi)
                backoff = 0.02
                while True:
                    raw = await self.queue.get()
                    buf = [LEN.pack(len(raw)), raw]
                    while not self.queue.empty() and len(buf) < 256:
                        r2 = self.queue.get_nowait()
                        buf += [LEN.pack(len(r2)), r2]
                    w.write(b"".join(buf))
                    await w.drain()
            except (OSError, ConnectionError, ValueError, asyncio.IncompleteReadError, asyncio.TimeoutError):
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 0.5)


class TcpNode:
    """Transport for one :class:`ReplicaNode` in an asyncio loop, with the node's client limits."""

    def __init__(self, rid: int, conf: dict) -> None:
        self.rid = rid
        self.conf = conf
        self.loop = asyncio.get_event_loop()
        self.t0 = time.monotonic()
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.links: set[_Link] = set()
        self.peers: dict[int, _Peer] = {}
        self.limits = NodeLimits.from_dict(conf.get("limits", {}))
        self.stats: dict[str, int] = {}
        n = conf["n"]
        cfg = pbft.Config(n=n, checkpoint_interval=conf.get("checkpoint_interval", 10),
                          batch_size=conf.get("batch_size", 64), max_inflight=conf.get("max_inflight", 2),
                          view_timeout_ms=conf.get("view_timeout_ms", 1000))
        self.signer = load_replica_key(conf["keys_dir"], rid)
        self.ring = M.KeyRing([bytes.fromhex(k) for k in conf["replicas"]])
        if self.ring.pubkeys[rid] != self.signer.public_key():
            raise KeyFileError(f"{key_path(conf['keys_dir'], rid)}: key does not match replicas[{rid}] of the config")
        self.genesis = Genesis.from_dict(conf["genesis"])
        path = Path(conf["data_dir"]) / f"replica_{rid}.sqlite"
        self.store = LedgerStore(path, genesis=self.genesis, sync=conf.get("sync", "FULL"))
        restarted = self.store.height > 0 or bool(self.store.meta_keys("vote/"))
        for j, (host, port) in enumerate(conf["peers"]):
            if j != rid:
                self.peers[j] = _Peer(self, j, host, port)
        self.node = ReplicaNode(NodeSpec(rid, cfg, self.ring, self.signer, self.genesis), StoreChain(self.store), self,
                                restarted=restarted)
        self.queries = QueryWorker(path, self.genesis, deliver=self._deliver_threadsafe,
                                   view=lambda: self.node.replica.view, stats=lambda: dict(self.stats),
                                   snapshots=lambda: self.node.app.snapshots.copy(),
                                   queue_size=self.limits.query_queue, cpu_share=self.limits.query_cpu_share)

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    # -- Transport protocol for ReplicaNode ----------------------------------------------------
    def now_ms(self) -> int:
        return int((time.monotonic() - self.t0) * 1000) + 1

    def send(self, frm: int, to: Optional[int], raw: bytes) -> None:
        if to == pbft.CLIENT:
            data = LEN.pack(len(raw)) + raw
            for link in [x for x in self.links if x.client and not x.closed]:
                self._write(link, data)
            return
        targets = self.peers.values() if to is None else [self.peers[to]] if to in self.peers else []
        for p in targets:
            p.send(raw)

    def set_timer(self, rid: int, name: str, delay_ms: int) -> None:
        old = self.timers.pop(name, None)
        if old is not None:
            old.cancel()
        self.timers[name] = self.loop.call_later(delay_ms / 1000.0, self._fire, name)

    def cancel_timer(self, rid: int, name: str) -> None:
        old = self.timers.pop(name, None)
        if old is not None:
            old.cancel()

    def _fire(self, name: str) -> None:
        self.timers.pop(name, None)
        self.node.fire(name)

    # -- connections ---------------------------------------------------------------------------
    def _write(self, link: _Link, data: bytes) -> None:
        """Queue bytes to a client; a client that does not read is disconnected."""
        if link.closed:
            return
        try:
            link.writer.write(data)
        except Exception:
            link.abort()
            return
        if link.peer is None and link.buffered() > self.limits.client_buffer_bytes:
            self._count("clients_dropped_slow")
            link.abort()

    def _deliver_threadsafe(self, link: _Link, answer: bytes) -> None:
        try:
            self.loop.call_soon_threadsafe(self._deliver, link, answer)
        except RuntimeError:  # the loop is closed: the node is shutting down
            pass

    def _deliver(self, link: _Link, answer: bytes) -> None:
        link.pending -= 1
        link.byte_tokens -= len(answer)
        link.wake.set()
        self._write(link, LEN.pack(len(answer) + 2) + ANSWER_PREFIX + answer)

    async def _admit(self, link: _Link) -> None:
        """Backpressure for a client connection, before reading its next frame: wait until it has
        read most of what was sent to it (dropped if it does not within ``frame_timeout_s``),
        for a free pending-query slot and for rate tokens."""
        lim = self.limits
        if link.buffered() > lim.client_buffer_bytes // 4:
            self._count("throttled_unread")
            try:
                await asyncio.wait_for(link.writer.drain(), lim.frame_timeout_s)
            except (asyncio.TimeoutError, ConnectionError):
                self._count("clients_dropped_slow")
                link.abort()
                return
        while link.pending >= lim.pending_queries and not link.closed:
            self._count("throttled_pending")
            link.wake.clear()
            await link.wake.wait()
        now = time.monotonic()
        dt, link.t = now - link.t, now
        link.tokens = min(float(lim.frame_burst), link.tokens + dt * lim.frame_rate)
        link.byte_tokens = min(float(lim.answer_bytes_burst), link.byte_tokens + dt * lim.answer_bytes_rate)
        wait = max((1.0 - link.tokens) / lim.frame_rate, -link.byte_tokens / lim.answer_bytes_rate)
        if wait > 0:
            self._count("throttled_rate")
            await asyncio.sleep(wait)
            now = time.monotonic()
            dt, link.t = now - link.t, now
            link.tokens += dt * lim.frame_rate
            link.byte_tokens += dt * lim.answer_bytes_rate
        link.tokens -= 1.0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(writer, self.limits, time.monotonic())
        if sum(1 for x in self.links if x.peer is None) >= self.limits.max_clients:
            self._count("clients_refused")
            link.abort()
            return
        self.links.add(link)
        try:
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            challenge = os.urandom(32)
            writer.write(LEN.pack(34) + CHALLENGE_PREFIX + challenge)
            first = True
            while not link.closed:
                if link.peer is None:
                    await self._admit(link)
                    raw = await read_frame(reader, self.limits.client_frame_bytes, self.limits.frame_timeout_s)
                else:
                    raw = await read_frame(reader, MAX_FRAME, PEER_FRAME_TIMEOUT_S)
                if first and raw[:2] == HELLO_PREFIX:
                    self._hello(link, raw, challenge)
                else:
                    self._frame(link, raw)
                first = False
        except ValueError:
            self._count("frames_too_large")
        except asyncio.TimeoutError:
            self._count("frames_timed_out")
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self.links.discard(link)
            link.abort()

    def _hello(self, link: _Link, raw: bytes, challenge: bytes) -> None:
        if len(raw) != 2 + 2 + crypto.SIGNATURE_BYTES:
            raise ConnectionError("malformed handshake")
        (sender,) = _U16.unpack_from(raw, 2)
        body = _U16.pack(sender) + _U16.pack(self.rid) + challenge
        if not (0 <= sender < self.ring.n and sender != self.rid
                and crypto.verify(self.ring.pubkeys[sender], raw[4:], HELLO_DOMAIN + body)):
            self._count("bad_handshake")
            raise ConnectionError("bad handshake")
        link.peer = sender

    def _frame(self, link: _Link, raw: bytes) -> None:
        if link.peer is not None:
            self.node.handle(raw)
            return
        if raw[:2] == QUERY_PREFIX:
            link.client = True
            if self.queries.submit(QueryJob(link, raw[2:])):
                link.pending += 1
            else:
                self._count("queries_busy")
                busy = b'{"error":"busy"}'
                self._write(link, LEN.pack(len(busy) + 2) + ANSWER_PREFIX + busy)
            return
        if len(raw) > 3 and raw[:2] == M.MAGIC and raw[3] == M.Request.TYPE:
            link.client = True
            self.node.handle(raw)
            return
        self._count("client_frames_refused")  # replica messages only on authenticated links

    def close(self) -> None:
        self.queries.stop()
        for link in list(self.links):
            link.abort()
        self.store.close()


def load_config(rid: int, config_path: str | os.PathLike) -> dict:
    try:
        conf = json.loads(Path(config_path).read_text(encoding="utf-8"))
        if not isinstance(conf, dict) or not 0 <= rid < int(conf["n"]):
            raise ValueError(f"replica id {rid} is not in 0..n-1")
        NodeLimits.from_dict(conf.get("limits", {}))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LedgerError(f"{config_path}: not a ledger cluster config: {e}") from None
    return conf


def run_node(rid: int, config_path: str | os.PathLike) -> int:
    """Run replica ``rid`` of the cluster in ``config_path`` until SIGTERM/SIGINT."""
    conf = load_config(rid, config_path)
    # The query worker thread and the consensus loop share the interpreter lock: hand it over
    # every 0.5 ms instead of CPython's 5 ms so a busy worker cannot delay the loop for long.
    sys.setswitchinterval(0.0005)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    node = TcpNode(rid, conf)
    host, port = conf["peers"][rid]
    server = loop.run_until_complete(asyncio.start_server(node.serve, host, port, limit=STREAM_LIMIT))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"ledger node {rid} listening on {host}:{port} height {node.store.height}", flush=True)
    try:
        loop.run_until_complete(stop.wait())
    finally:
        server.close()
        node.close()
    return 0
