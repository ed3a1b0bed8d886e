"""ledger.threadnet: the PBFT replicas in threads of one process (issue 6, in-process benchmark).

Same protocol code as the simulated network, real clock and concurrency: the tests check that
replicas agree (heads, state roots, stored chains verify), that receipts carry valid inclusion
proofs, that junk on a link does not stop a replica, that a reopened data directory continues
the chain, and that closing leaves no thread behind.
"""

from __future__ import annotations

import pytest

from ledger import messages as M
from ledger.bench import run_bench
from ledger.cluster import LocalCluster, replica_public_keys
from ledger.sim import Workload
from ledger.threadnet import replica_threads_alive
from ledger.verify import verify_chain


@pytest.mark.parametrize("n", [1, 4])
def test_threads_commit_agree_and_verify(tmp_path, n):
    w = Workload(21, 4, replicas=replica_public_keys(tmp_path / "keys", n))
    with LocalCluster(n, data_dir=tmp_path / "db", genesis=w.genesis, keys_dir=tmp_path / "keys", seed=3,
                      transport="threads", batch_size=16) as lc:
        receipts = []
        for r in range(1, 4):
            receipts += lc.submit_many(w.round_txs(r, 20))
        assert len({r.tx_hash for r in receipts}) == len(receipts) == 60
        assert all(r.verify() for r in receipts)
        assert sum(r.ok for r in receipts) == 60  # a well-formed round workload is all accepted
        heads = lc.heads()
        assert len(set(heads)) == 1 and heads[0][0] >= 4  # 60 txs in batches of at most 16
        assert lc.query("summary")["last_round"] == 3
        cl = lc._impl
        assert len({node.app.contracts.state_root() for node in cl.nodes}) == 1
        # Every replica checked every client signature itself.
        assert all(node.app.verify_count == 60 for node in cl.nodes)
    assert replica_threads_alive() == 0
    for p in lc.db_paths():
        rep = verify_chain(p, genesis=w.genesis)
        assert rep.ok, rep.first_error


def test_junk_frames_do_not_stop_a_replica_and_reopen_continues(tmp_path):
    w = Workload(22, 4)
    with LocalCluster(4, data_dir=tmp_path / "db", genesis=w.genesis, keys_dir=tmp_path / "keys", seed=4,
                      transport="threads") as lc:
        lc.submit_many(w.round_txs(1, 10))
        cl = lc._impl
        for junk in (b"", b"PB", b"\x00" * 300, M.encode(M.Request((b"{}",)), M.CLIENT_SENDER, None)):
            cl.net.inbox[2].put(junk)
        lc.submit_many(w.round_txs(2, 10))
        assert not cl.errors
        assert cl.nodes[2].replica.stats.get("malformed", 0) >= 1
        h1 = lc.heads()[0][0]
    with LocalCluster(4, data_dir=tmp_path / "db", genesis=w.genesis, keys_dir=tmp_path / "keys", seed=4,
                      transport="threads") as lc:
        assert lc.heads()[0][0] == h1
        rs = lc.submit_many(w.round_txs(3, 10))
        assert min(r.height for r in rs) == h1 + 1
        assert len(set(lc.heads())) == 1
    assert replica_threads_alive() == 0


@pytest.mark.parametrize("transport", ["inproc", "sim"])
def test_bench_smoke_reports_agreement_and_latency(transport):
    r = run_bench(replicas=4, transactions=96, transport=transport, client_batch=8, window=2, batch_size=16)
    assert r["heads_agree"] is True
    assert r["tx_per_s"] > 0 and 0 < r["latency_ms_p50"] <= r["latency_ms_p99"]
    assert r["blocks"] >= 96 // 16
    # every replica verified every client signature once
    assert r["client_sig_verifications"] == 4 * 96
    assert replica_threads_alive() == 0
