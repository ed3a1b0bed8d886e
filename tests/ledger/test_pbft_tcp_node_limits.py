"""Ledger node hygiene (issue 17.5; B-FDL paper 3.4: nodes serve reads while ordering writes).

A flood of pipelined block queries from one connection that never reads is bounded (the node
stops reading it, then drops it) while commits still complete; oversized and half-sent frames,
replica frames from clients and forged replica handshakes close the connection; queries of a
closed connection are dropped unread; the query worker answers from committed state. Nothing
here is timed: deadlines are generous bounds for a loaded machine, not measurements.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from ledger import messages as M
from ledger import pbft
from ledger.block import Block
from ledger.replica_keys import replica_public_keys
from ledger.sim import Workload
from ledger.storage import LedgerStore
from ledger.tcp import ANSWER_PREFIX, QUERY_PREFIX, NodeLimits
from ledger.tcp_client import TcpCluster
from ledger.tcp_query import QueryJob, QueryWorker

LEN = struct.Struct(">I")
LIMITS = NodeLimits(client_frame_bytes=64 * 1024, frame_timeout_s=1.0, frame_rate=500.0, frame_burst=32,
                    pending_queries=8, client_buffer_bytes=256 * 1024, answer_bytes_rate=4 * 1024 * 1024,
                    answer_bytes_burst=256 * 1024)


def _frame(payload: bytes) -> bytes:
    return LEN.pack(len(payload)) + payload


def _query(q: dict) -> bytes:
    return _frame(QUERY_PREFIX + json.dumps(q).encode())


def _stats(cl: TcpCluster, i: int = 0) -> dict:
    ans = cl.client.conns[i].ask({"op": "stats"}, timeout=30.0)
    assert isinstance(ans, dict), ans
    return ans


def _wait(pred, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def _closed_by_peer(s: socket.socket, timeout: float = 60.0) -> bool:
    """True once the node closed ``s`` (EOF or reset), reading whatever it still had sent."""
    s.settimeout(timeout)
    try:
        while s.recv(1 << 16):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("limits")
    w = Workload(41, 3, replicas=replica_public_keys(d / "keys", 4))
    cfg = pbft.Config(n=4, checkpoint_interval=4, batch_size=32)
    cl = TcpCluster(4, data_dir=d / "db", genesis=w.genesis, keys_dir=d / "keys", cfg=cfg, limits=LIMITS)
    try:
        assert all(x.ok for x in cl.submit_many(w.round_txs(1, 30), timeout_s=120))
        yield cl, w
    finally:
        cl.close()


def test_unread_query_flood_is_bounded_and_commits_continue(cluster) -> None:
    cl, w = cluster
    flood = socket.create_connection(cl.peers[0])  # the primary
    flood.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    queries = b"".join(_query({"op": "block", "height": 1}) for _ in range(20_000))
    sent = []

    def push() -> None:
        flood.settimeout(120.0)
        try:
            flood.sendall(queries)
            sent.append(len(queries))
        except OSError as e:  # the node stopped reading, then dropped us: expected
            sent.append(repr(e))

    t = threading.Thread(target=push, daemon=True)
    t.start()
    try:
        for r in range(2, 5):  # commits complete while the flood is on
            rs = cl.submit_many(w.round_txs(r, 30), timeout_s=120)
            assert all(x.ok and x.verify() for x in rs)
        assert _wait(lambda: _stats(cl).get("clients_dropped_slow", 0) >= 1), _stats(cl)
        st = _stats(cl)
        assert st["queries_served"] < 20_000 and st.get("throttled_unread", 0) >= 1, st
        assert _closed_by_peer(flood)
    finally:
        flood.close()
        t.join(timeout=130)
    assert cl.query("privacy")["records"] == 4


def test_oversized_half_sent_and_replica_frames_from_a_client_close_it(cluster) -> None:
    cl, w = cluster
    before = _stats(cl, 1)
    with socket.create_connection(cl.peers[1]) as s:  # announces 1 MiB > client_frame_bytes
        s.sendall(LEN.pack(1024 * 1024) + b"x" * 100)
        assert _closed_by_peer(s)
    with socket.create_connection(cl.peers[1]) as s:  # half-sent: 100 of 32 KiB, then silence
        s.sendall(LEN.pack(32 * 1024) + b"y" * 100)
        assert _closed_by_peer(s)
    with socket.create_connection(cl.peers[1]) as s:  # a forged replica handshake
        s.sendall(_frame(b"HI" + struct.pack(">H", 2) + bytes(64)))
        assert _closed_by_peer(s)
    prepare = M.encode(M.Prepare(0, 1, bytes(32)), 2, w.admin)  # a replica frame, on a client link
    with socket.create_connection(cl.peers[1]) as s:
        s.sendall(_frame(prepare) + _query({"op": "head"}))
        s.settimeout(30.0)
        f = s.makefile("rb")
        while True:  # the challenge, then the answer: the connection stays usable
            (n,) = LEN.unpack(f.read(4))
            raw = f.read(n)
            if raw[:2] == ANSWER_PREFIX:
                assert json.loads(raw[2:])[0] >= 1
                break
    after = _stats(cl, 1)
    for key in ("frames_too_large", "frames_timed_out", "bad_handshake", "client_frames_refused"):
        assert after.get(key, 0) >= before.get(key, 0) + 1, (key, before, after)


class _Link:
    def __init__(self, closed: bool) -> None:
        self.closed = closed


def test_query_worker_answers_from_committed_blocks_and_drops_closed_links(cluster) -> None:
    cl, w = cluster
    db = Path(cl.conf["data_dir"]) / "replica_0.sqlite"
    got: list = []
    done = threading.Event()

    def deliver(link, ans: bytes) -> None:
        got.append((link, ans))
        if len(got) == 4:
            done.set()

    qw = QueryWorker(db, w.genesis, deliver=deliver, view=lambda: 7, stats=dict, snapshots=dict, queue_size=16)
    try:
        gone, live = _Link(True), _Link(False)
        assert qw.submit(QueryJob(gone, json.dumps({"op": "head"}).encode()))
        for q in ({"op": "block", "height": 1}, {"op": "query", "path": "privacy"}, {"op": "head"},
                  {"op": "nonsense"}):
            assert qw.submit(QueryJob(live, json.dumps(q).encode()))
        assert done.wait(60.0)
    finally:
        qw.stop()
    assert qw.dropped == 1 and qw.served == 4 and all(link is live for link, _ in got)
    block_txt, privacy, head, nonsense = (json.loads(a) for _, a in got)
    with LedgerStore(db, verify="none") as st:
        assert Block.decode(block_txt.encode()).encode() == st.get_block(1).encode()
        assert head[0] == privacy[0] <= st.height and head[2] == 7
    assert privacy[1]["records"] >= 1 and nonsense is None
