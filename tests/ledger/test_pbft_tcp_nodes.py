"""Replicas as real processes over TCP (issue 6 "Transports" and test 14: hard kill with kill -9).

Starts 4 ``python -m ledger node`` processes on free loopback ports, commits transactions, kills one
replica with SIGKILL (progress continues, it recovers from its database and catches up), kills the
whole cluster with SIGKILL (no committed entry is lost after restart), and checks that a torn
database tail is detected (the node refuses to start with a clear message). Child processes are
always killed in a ``finally``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from ledger import pbft
from ledger.sim import Workload
from ledger.storage import LedgerStore, StorageCorruptError
from ledger.replica_keys import key_path, replica_public_keys
from ledger.tcp import TcpCluster


def _wait_heads(cl, height, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        heads = cl.heads()
        if all(h[0] >= height for h in heads) and len(set(heads)) == 1:
            return heads
        time.sleep(0.1)
    return cl.heads()


def test_tcp_cluster_commits_survives_kill9_and_detects_torn_tail(tmp_path):
    w = Workload(21, 3, replicas=replica_public_keys(tmp_path / "keys", 4))
    cfg = pbft.Config(n=4, checkpoint_interval=4, batch_size=32)
    cl = TcpCluster(4, data_dir=tmp_path, genesis=w.genesis, keys_dir=tmp_path / "keys", cfg=cfg)
    receipts = []
    # The config is public: no seed, no private key; each node reads its own key file.
    text = (tmp_path / "cluster.json").read_text()
    assert "seed" not in json.loads(text) and json.loads(text)["replicas"] == list(w.genesis.replicas)
    assert not any(key_path(tmp_path / "keys", i).read_text().strip() in text for i in range(4))
    try:
        for r in range(1, 4):
            rs = cl.submit_many(w.round_txs(r, 10), timeout_s=60)
            assert all(x.ok and x.verify() for x in rs)
            receipts += rs
        # One replica hard-killed: the other three keep committing.
        cl.kill(3)
        for r in range(4, 10):
            receipts += cl.submit_many(w.round_txs(r, 10), timeout_s=60)
        cl.start(3)
        cl.wait_ready(ids=[3])
        receipts += cl.submit_many(w.round_txs(10, 10), timeout_s=60)
        top = max(x.height for x in receipts)
        heads = _wait_heads(cl, top)
        assert len(set(heads)) == 1, heads  # replica 3 caught up (state transfer / retransmission)
        assert cl.query("privacy")["records"] == 10
        # The whole cluster hard-killed at once, then restarted: nothing committed is lost.
        for i in range(4):
            cl.kill(i)
        for i in range(4):
            cl.start(i)
        cl.wait_ready()
        heads2 = _wait_heads(cl, top)
        assert all(h[0] >= top for h in heads2)
        rs = cl.submit_many(w.round_txs(11, 5), timeout_s=60)
        assert all(x.ok for x in rs) and rs[0].height > top
    finally:
        cl.close()
    for x in receipts:
        assert x.ok
    for i in range(4):
        with LedgerStore(tmp_path / f"replica_{i}.sqlite", genesis=w.genesis) as st:
            for x in receipts:
                b = st.get_block(x.height)
                assert b is not None and b.hash().hex() == x.block_hash
                assert b.txs[x.index].tx_hash().hex() == x.tx_hash
    # A torn tail (the last bytes of a replica file cut off) is detected: the node refuses to start.
    p = tmp_path / "replica_2.sqlite"
    size = p.stat().st_size
    with open(p, "r+b") as fh:
        fh.truncate(size - 1000)
    with pytest.raises(StorageCorruptError):
        LedgerStore(p, genesis=w.genesis)
    proc = subprocess.run([sys.executable, "-m", "ledger", "node", "--id", "2", "--config",
                           str(tmp_path / "cluster.json")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "replica_2.sqlite" in proc.stderr and "corrupt" in proc.stderr
