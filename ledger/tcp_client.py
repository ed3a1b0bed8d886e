"""TCP transport, client side: submit transactions to ``python -m ledger node`` processes and start
a local cluster of them (:class:`TcpCluster`).

Paper link: B-FDL section 3.4 — hospitals and the aggregator submit signed round records to the
consortium's PBFT nodes and obtain f+1 matching replies.

Wire (see :mod:`ledger.tcp`): frames ``length u32 | payload``; a REQUEST frame is broadcast to every
replica; REPLY frames come back on the same connection; queries are ``b"CQ" + JSON`` answered
with ``b"CA" + JSON``; the node's handshake challenge (``b"CH" + nonce``, for replica peers) is
ignored by clients. A connection is used by one thread at a time (``ask`` waits for its answer).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from queue import Empty, Queue
from typing import Any, Optional

from ledger import messages as M
from ledger import pbft
from ledger.block import Block
from ledger.client import LedgerError, Receipt, ReplyCollector, receipt_from_block
from ledger.contracts import Genesis
from ledger.replica_keys import replica_public_keys
from ledger.tcp import ANSWER_PREFIX, CHALLENGE_PREFIX, LEN, MAX_FRAME, QUERY_PREFIX, NodeLimits

__all__ = ["TcpClient", "TcpCluster", "free_ports"]


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
                (n,) = LEN.unpack(head)
                if n > MAX_FRAME:
                    break
                raw = f.read(n)
                if len(raw) < n:
                    break
                if raw[:2] == ANSWER_PREFIX:
                    self.answers.put(raw[2:])
                elif raw[:2] == CHALLENGE_PREFIX:
                    continue  # the node's handshake challenge is for replica peers
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
                self.sock.sendall(LEN.pack(len(raw)) + raw)  # type: ignore[union-attr]
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
    """Start n ``python -m ledger node`` processes on free loopback ports (killed on close).
    ``limits``: the nodes' per-connection limits (:class:`ledger.tcp.NodeLimits`; defaults if None)."""

    def __init__(self, n: int, *, data_dir: Path, genesis: Genesis, keys_dir: str | os.PathLike, cfg: pbft.Config,
                 sync: str = "FULL", ports: Optional[list[int]] = None, limits: Optional[NodeLimits] = None) -> None:
        self.n = n
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ports = ports or free_ports(n)
        self.peers = [("127.0.0.1", p) for p in ports]
        replicas = list(replica_public_keys(keys_dir, n))
        self.conf = {
            "n": n, "keys_dir": str(Path(keys_dir).resolve()), "replicas": replicas, "genesis": genesis.to_dict(),
            "peers": [list(p) for p in self.peers],
            "data_dir": str(self.data_dir), "checkpoint_interval": cfg.checkpoint_interval,
            "batch_size": cfg.batch_size, "max_inflight": cfg.max_inflight, "view_timeout_ms": 1000, "sync": sync,
            "limits": asdict(limits or NodeLimits()),
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
