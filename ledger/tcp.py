"""TCP transport: PBFT replicas as separate processes on localhost (``bfdl ledger node``).

Paper link: B-FDL section 3.4 — consortium nodes exchange PBFT messages over the network.

Wire: every frame is ``length (u32 big-endian) | payload`` with ``length <= MAX_FRAME``; a peer that
announces a larger frame is disconnected. Payloads are PBFT frames (:mod:`ledger.messages`,
signed and strictly decoded by the replica) or, from clients only, JSON requests prefixed with
``b"CQ"`` (``find`` tx hashes, ``block`` by height, ``query`` a state path, ``head``) answered
with ``b"CA" + JSON``. A replica broadcasts its REPLY frames to every connection that has sent a
client frame. Replica-to-replica links are one outgoing connection per peer with a bounded send
queue and reconnect-with-backoff; lost frames are recovered by the protocol's retransmission.

The node process (:func:`run_node`) is one asyncio loop: network I/O, timers (``loop.call_later``)
and the replica, whose actions are performed in order (votes fsynced before the next send).

Config file (JSON, written by :class:`TcpCluster`): ``n``, ``keys_dir`` (replica ``i`` reads its
signing key from ``<keys_dir>/replica-<i>.key``, :mod:`ledger.replica_keys`), ``replicas`` (the
replicas' hex public keys, in id order; they must equal ``genesis.replicas`` when the genesis lists
them), ``genesis`` (``Genesis.to_dict()``), ``peers`` (``[[host, port], ...]``), ``data_dir``,
``checkpoint_interval``, ``batch_size``, ``max_inflight``, ``view_timeout_ms``, ``sync``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from queue import Empty, Queue
from typing import Any, Optional

from ledger import messages as M
from ledger import pbft
from ledger.client import LedgerError, Receipt, ReplyCollector, receipt_from_block
from ledger.contracts import Genesis
from ledger.node import NodeSpec, ReplicaNode, StoreChain
from ledger.errors import KeyFileError
from ledger.replica_keys import key_path, load_replica_key, replica_public_keys

MAX_FRAME = M.MAX_FRAME
_LEN = struct.Struct(">I")
QUERY_PREFIX = b"CQ"
ANSWER_PREFIX = b"CA"


def free_ports(k: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(k):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(4)
    (n,) = _LEN.unpack(head)
    if n > MAX_FRAME:
        raise ValueError(f"frame of {n} bytes exceeds the limit")
    return await reader.readexactly(n)


class _Peer:
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
                _r, w = await asyncio.open_connection(self.host, self.port)
                w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                backoff = 0.02
                while True:
                    raw = await self.queue.get()
                    buf = [_LEN.pack(len(raw)), raw]
                    while not self.queue.empty() and len(buf) < 256:
                        r2 = self.queue.get_nowait()
                        buf += [_LEN.pack(len(r2)), r2]
                    w.write(b"".join(buf))
                    await w.drain()
            except (OSError, ConnectionError, asyncio.IncompleteReadError):
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 0.5)


class TcpNode:
    """Transport for one :class:`ReplicaNode` in an asyncio loop."""

    def __init__(self, rid: int, conf: dict) -> None:
        self.rid = rid
        self.conf = conf
        self.loop = asyncio.get_event_loop()
        self.t0 = time.monotonic()
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.clients: set[asyncio.StreamWriter] = set()
        self.peers: dict[int, _Peer] = {}
        n = conf["n"]
        cfg = pbft.Config(n=n, checkpoint_interval=conf.get("checkpoint_interval", 10),
                          batch_size=conf.get("batch_size", 64), max_inflight=conf.get("max_inflight", 2),
                          view_timeout_ms=conf.get("view_timeout_ms", 1000))
        signer = load_replica_key(conf["keys_dir"], rid)
        ring = M.KeyRing([bytes.fromhex(k) for k in conf["replicas"]])
        if ring.pubkeys[rid] != signer.public_key():
            raise KeyFileError(f"{key_path(conf['keys_dir'], rid)}: key does not match replicas[{rid}] of the config")
        self.genesis = Genesis.from_dict(conf["genesis"])
        from ledger.storage import LedgerStore

        path = Path(conf["data_dir"]) / f"replica_{rid}.sqlite"
        self.store = LedgerStore(path, genesis=self.genesis, sync=conf.get("sync", "FULL"))
        restarted = self.store.height > 0 or bool(self.store.meta_keys("vote/"))
        for j, (host, port) in enumerate(conf["peers"]):
            if j != rid:
                self.peers[j] = _Peer(self, j, host, port)
        self.node = ReplicaNode(NodeSpec(rid, cfg, ring, signer, self.genesis), StoreChain(self.store), self,
                                restarted=restarted)

    # -- Transport protocol for ReplicaNode ----------------------------------------------------
    def now_ms(self) -> int:
        return int((time.monotonic() - self.t0) * 1000) + 1

    def send(self, frm: int, to: Optional[int], raw: bytes) -> None:
        if to == pbft.CLIENT:
            data = _LEN.pack(len(raw)) + raw
            for w in list(self.clients):
                try:
                    w.write(data)
                except Exception:
                    self.clients.discard(w)
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

    # -- server --------------------------------------------------------------------------------
    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                raw = await _read_frame(reader)
                if raw[:2] == QUERY_PREFIX:
                    self.clients.add(writer)
                    ans = self._answer(raw[2:])
                    writer.write(_LEN.pack(len(ans) + 2) + ANSWER_PREFIX + ans)
                    continue
                if len(raw) > 3 and raw[3] == M.Request.TYPE:
                    self.clients.add(writer)
                self.node.handle(raw)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, OSError):
            pass
        finally:
            self.clients.discard(writer)
            writer.close()

    def _answer(self, data: bytes) -> bytes:
        try:
            q = json.loads(data.decode("utf-8"))
            op = q.get("op")
            app = self.node.app
            if op == "find":
                res = {h: app.locate(bytes.fromhex(h)) for h in q["hashes"][:10_000]}
            elif op == "block":
                res = self.node.app.block(int(q["height"])).encode().decode("utf-8")
            elif op == "query":
                res = [app.height(), app.contracts.query(str(q["path"]))]
            elif op == "head":
                res = [app.height(), app.block(app.height()).hash().hex(), self.node.replica.view]
            else:
                res = None
        except Exception as e:  # a bad query never hurts the replica
            res = {"error": type(e).__name__}
        return json.dumps(res, separators=(",", ":")).encode("utf-8")


def run_node(rid: int, config_path: str | os.PathLike) -> int:
    try:
        conf = json.loads(Path(config_path).read_text(encoding="utf-8"))
        if not isinstance(conf, dict) or not 0 <= rid < int(conf["n"]):
            raise ValueError(f"replica id {rid} is not in 0..n-1")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LedgerError(f"{config_path}: not a ledger cluster config: {e}") from None
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    node = TcpNode(rid, conf)
    host, port = conf["peers"][rid]
    server = loop.run_until_complete(asyncio.start_server(node.serve, host, port, limit=MAX_FRAME))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"ledger node {rid} listening on {host}:{port} height {node.store.height}", flush=True)
    try:
        loop.run_until_complete(stop.wait())
    finally:
        server.close()
        node.store.close()
    return 0


# ---------------------------------------------------------------------------------------------
# Client side


class _Conn:
    def __init__(self, host: str, port: int, inbox: "Queue[tuple[int, bytes]]", idx: int) -> None:
        self.addr = (host, port)
        self.inbox = inbox
        self.idx = idx
        self.sock: Optional[socket.socket] = None
        self.lock = threading.Lock()
        self.answers: "Queue[bytes]" = Queue()

    def connect(self) -> bool:
        if self.sock is not None:
            return True
        try:
            s = socket.create_connection(self.addr, timeout=2.0)
        except OSError:
            return False
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(None)
        self.sock = s
        threading.Thread(target=self._reader, args=(s,), daemon=True).start()
        return True

    def _reader(self, s: socket.socket) -> None:
        f = s.makefile("rb")
        try:
            while True:
                head = f.read(4)
                if len(head) < 4:
                    break
                (n,) = _LEN.unpack(head)
                if n > MAX_FRAME:
                    break
                raw = f.read(n)
                if len(raw) < n:
                    break
                if raw[:2] == ANSWER_PREFIX:
                    self.answers.put(raw[2:])
                else:
                    self.inbox.put((self.idx, raw))
        except OSError:
            pass
        finally:
            if self.sock is s:
                self.sock = None

    def send(self, raw: bytes) -> bool:
        if not self.connect():
            return False
        try:
            with self.lock:
                self.sock.sendall(_LEN.pack(len(raw)) + raw)  # type: ignore[union-attr]
            return True
        except OSError:
            self.sock = None
            return False

    def ask(self, q: dict, timeout: float = 5.0) -> Any:
        while not self.answers.empty():
            self.answers.get_nowait()
        if not self.send(QUERY_PREFIX + json.dumps(q).encode()):
            return None
        try:
            return json.loads(self.answers.get(timeout=timeout))
        except (Empty, ValueError):
            return None

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None


class TcpClient:
    """Submit transactions to TCP replicas and wait for f+1 matching replies."""

    def __init__(self, peers: list[tuple[str, int]], *, replicas: list[str]) -> None:
        self.n = n = len(replicas)
        self.f = (n - 1) // 3
        self.collector = ReplyCollector(M.KeyRing([bytes.fromhex(k) for k in replicas]), self.f)
        self.inbox: "Queue[tuple[int, bytes]]" = Queue()
        self.conns = [_Conn(h, p, self.inbox, i) for i, (h, p) in enumerate(peers)]

    def _drain(self, timeout: float) -> None:
        try:
            _i, raw = self.inbox.get(timeout=timeout)
            self.collector.on_frame(raw)
            while True:
                _i, raw = self.inbox.get_nowait()
                self.collector.on_frame(raw)
        except Empty:
            pass

    def broadcast(self, raws: list[bytes]) -> None:
        frame = M.encode(M.Request(tuple(raws)), M.CLIENT_SENDER, None)
        for c in self.conns:
            c.send(frame)

    def submit_many(self, txs: list[Any], *, timeout_s: float = 60.0) -> list[Receipt]:
        raws = [t.encode() for t in txs]
        hashes = [M.sha256(r).hex() for r in raws]
        self.broadcast(raws)
        deadline = time.monotonic() + timeout_s
        located: dict[str, tuple[int, int]] = {}
        blocks: dict[int, Any] = {}
        resend = time.monotonic() + 2.0
        while True:
            self._drain(0.002)
            todo = [h for h in hashes if h not in located]
            if todo:
                for c in self.conns:
                    ans = c.ask({"op": "find", "hashes": todo}, timeout=2.0)
                    if isinstance(ans, dict):
                        for h, loc in ans.items():
                            if loc and h in todo:
                                located[h] = (int(loc[0]), int(loc[1]))
                        break
            heights = sorted({located[h][0] for h in hashes if h in located})
            for ht in heights:
                if ht in blocks:
                    continue
                cert = self.collector.certified(ht)
                if cert is None:
                    continue
                for c in self.conns:
                    txt = c.ask({"op": "block", "height": ht})
                    if isinstance(txt, str):
                        from ledger.block import Block

                        b = Block.decode(txt.encode())
                        if b.hash() == cert[0]:
                            blocks[ht] = b
                            break
            if all(h in located and located[h][0] in blocks for h in hashes):
                return [receipt_from_block(blocks[located[h][0]], located[h][1]) for h in hashes]
            now = time.monotonic()
            if now > deadline:
                raise LedgerError(f"{sum(1 for h in hashes if h not in located)} of {len(hashes)} transactions "
                                  f"not committed within {timeout_s:.0f} s over TCP")
            if now > resend:
                self.broadcast([r for r, h in zip(raws, hashes) if h not in located])
                resend = now + 2.0
            time.sleep(0.001)

    def query(self, path: str) -> Any:
        votes: dict[str, int] = {}
        for c in self.conns:
            ans = c.ask({"op": "query", "path": path})
            if not isinstance(ans, list):
                continue
            key = json.dumps(ans, sort_keys=True)
            votes[key] = votes.get(key, 0) + 1
            if votes[key] >= self.f + 1:
                return ans[1]
        raise LedgerError(f"no f+1 replicas agree on {path!r}")

    def heads(self) -> list[tuple[int, str]]:
        out = []
        for c in self.conns:
            ans = c.ask({"op": "head"})
            out.append((int(ans[0]), str(ans[1])) if isinstance(ans, list) else (-1, ""))
        return out

    def close(self) -> None:
        for c in self.conns:
            c.close()


class TcpCluster:
    """Start n ``bfdl ledger node`` processes on free loopback ports (killed on close)."""

    def __init__(self, n: int, *, data_dir: Path, genesis: Genesis, keys_dir: str | os.PathLike, cfg: pbft.Config,
                 sync: str = "FULL", ports: Optional[list[int]] = None) -> None:
        self.n = n
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ports = ports or free_ports(n)
        self.peers = [("127.0.0.1", p) for p in ports]
        replicas = list(replica_public_keys(keys_dir, n))
        self.conf = {
            "n": n, "keys_dir": str(Path(keys_dir).resolve()), "replicas": replicas, "genesis": genesis.to_dict(), "peers": [list(p) for p in self.peers],
            "data_dir": str(self.data_dir), "checkpoint_interval": cfg.checkpoint_interval,
            "batch_size": cfg.batch_size, "max_inflight": cfg.max_inflight, "view_timeout_ms": 1000, "sync": sync,
        }
        self.config_path = self.data_dir / "cluster.json"
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.conf, indent=1))
        os.replace(tmp, self.config_path)
        self.procs: list[Optional[subprocess.Popen]] = [None] * n
        try:
            for i in range(n):
                self.start(i)
            self.client = TcpClient(self.peers, replicas=replicas)
            self.wait_ready()
        except BaseException:
            self.close()
            raise

    def start(self, i: int) -> None:
        log = open(self.data_dir / f"replica_{i}.log", "ab")
        self.procs[i] = subprocess.Popen(
            [sys.executable, "-m", "ledger", "node", "--id", str(i), "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()

    def wait_ready(self, timeout_s: float = 30.0, ids: Optional[list[int]] = None) -> None:
        deadline = time.monotonic() + timeout_s
        for i in (range(self.n) if ids is None else ids):
            while True:
                p = self.procs[i]
                if p is not None and p.poll() is not None:
                    raise LedgerError(f"ledger node {i} exited with code {p.returncode}; see "
                                      f"{self.data_dir / f'replica_{i}.log'}")
                try:
                    socket.create_connection(self.peers[i], timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise LedgerError(f"ledger node {i} did not start within {timeout_s} s")
                    time.sleep(0.05)

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        p = self.procs[i]
        if p is not None and p.poll() is None:
            p.send_signal(sig)
            p.wait(timeout=10)

    def submit_many(self, txs: list[Any], *, timeout_s: float = 60.0) -> list[Receipt]:
        return self.client.submit_many(txs, timeout_s=timeout_s)

    def query(self, path: str) -> Any:
        return self.client.query(path)

    def heads(self) -> list[tuple[int, str]]:
        return self.client.heads()

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.terminate()
        for p in self.procs:
            if p is not None:
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)
