"""PBFT normal case, checkpoints/GC, LocalCluster and durable storage (issue 6 tests 1, 12, 15)."""

from __future__ import annotations

import pytest

from ledger import pbft
from ledger.client import Receipt
from ledger.cluster import LocalCluster, replica_public_keys
from ledger.sim import SimCluster, Workload, check_only_registered, effective_tx_hashes
from ledger.storage import StorageCorruptError
from ledger.tx import Transaction


def _normal(n, rounds, size, seed):
    w = Workload(seed, 8)
    c = SimCluster(n, genesis=w.genesis, seed=seed, cfg=pbft.Config(n=n, checkpoint_interval=10))
    c.record_commits = False
    for r in range(1, rounds + 1):
        hs = c.submit(w.round_txs(r, size))
        assert c.run_until_committed(hs, max_ms=10_000), (r, c.heights())
    c.net.run(until=lambda: len(set(c.heights())) == 1, max_ms=5_000)
    top = c.check_safety()
    assert len({h for h in c.heads()}) == 1, "replicas ended with different heads"
    roots = {c.nodes[i].app.contracts.state_root() for i in range(n)}
    assert len(roots) == 1
    allowed = {w.admin.key_id()} | {h.key_id() for h in w.hospitals}
    assert check_only_registered(c, allowed) == rounds * size * n
    eff = effective_tx_hashes(c.chains[0])
    assert len(eff) == len(set(eff)) == rounds * size
    assert c.nodes[0].app.contracts.query("privacy")["records"] == rounds
    return c, top


@pytest.mark.parametrize("n,rounds", [(4, 12), (7, 6)])
def test_normal_case_identical_roots(n, rounds):
    _normal(n, rounds, 60, seed=n)


@pytest.mark.slow
@pytest.mark.parametrize("n", [4, 7])
def test_normal_case_full_100_rounds_x_60(n):
    _normal(n, 100, 60, seed=n)


def test_checkpoints_and_gc_keep_memory_bounded():
    w = Workload(1, 3)
    K = 4
    c = SimCluster(4, genesis=w.genesis, seed=1, cfg=pbft.Config(n=4, checkpoint_interval=K, batch_size=4))
    c.record_commits = False
    sizes = []
    for r in range(1, 61):
        hs = c.submit(w.round_txs(r))
        assert c.run_until_committed(hs, max_ms=10_000)
        if r % 10 == 0:
            sizes.append(max(c.nodes[i].replica.memory_footprint() for i in range(4)))
    rep = c.nodes[0].replica
    assert rep.stats.get("stable_checkpoint", 0) >= c.heights()[0] // K - 1
    assert rep.ckpt.h >= c.heights()[0] - 2 * K
    # The log below the low watermark is discarded:
    assert min(rep.log.slots, default=rep.ckpt.h + 1) > rep.ckpt.h
    # Bounded: the footprint does not grow with the chain (which grows ~60x here).
    assert max(sizes) <= 6 * K * 4, sizes
    assert sizes[-1] <= 2 * max(sizes[:2]) + 8 * K, sizes
    assert len(c.nodes[0].app.snapshots) <= 3


def _lc(tmp_path, w, **kw):
    return LocalCluster(4, data_dir=tmp_path / "ledger", genesis=w.genesis, keys_dir=tmp_path / "keys", seed=3, **kw)


def test_local_cluster_receipts_query_heads_and_reopen(tmp_path):
    w = Workload(3, 3, replicas=replica_public_keys(tmp_path / "keys", 4))
    with _lc(tmp_path, w) as lc:
        rs = lc.submit_many(w.round_txs(1, 10))
        assert len(rs) == 10 and all(isinstance(r, Receipt) for r in rs)
        assert all(r.ok and r.verify() for r in rs)
        assert len({r.height for r in rs}) == 1
        bad = lc.submit(w.outsider_tx(2))
        assert not bad.ok and bad.verify()
        # A tampered receipt does not verify.
        assert not Receipt(**{**rs[0].to_dict(), "index": rs[0].index + 1,
                              "inclusion_proof": tuple(rs[0].inclusion_proof)}).verify()
        assert lc.query("privacy")["records"] == 1
        heads = lc.heads()
        assert len(set(heads)) == 1 and heads[0][0] == bad.height
    from ledger.verify import verify_chain

    for p in sorted((tmp_path / "ledger").glob("replica_*.sqlite")):
        rep = verify_chain(p, genesis=w.genesis)
        assert rep.ok, rep
    with _lc(tmp_path, w) as lc:
        assert lc.heads() == heads
        r2 = lc.submit_many(w.round_txs(2, 5))
        assert all(r.ok for r in r2) and r2[0].height == heads[0][0] + 1


@pytest.mark.parametrize("batch_size", [64, 3])
def test_single_replica_cluster_commits_successive_batches(tmp_path, batch_size):
    """n=1 (f=0): the primary prepares, commits and executes its own batch while proposing it.
    Regression: the sequence number used to be advanced only after that synchronous execution,
    leaving a gap, so only the first batch ever committed ("heights [1]")."""
    w = Workload(3, 3, replicas=replica_public_keys(tmp_path / "keys1", 1))
    with LocalCluster(1, data_dir=tmp_path / "ledger1", genesis=w.genesis, keys_dir=tmp_path / "keys1", seed=3,
                      batch_size=batch_size, checkpoint_interval=2) as lc:
        heights = []
        for r in range(1, 4):
            rs = lc.submit_many(w.round_txs(r, 7))
            assert len(rs) == 8 and all(x.ok and x.verify() for x in rs), [(x.code, x.message) for x in rs]
            heights.extend(x.height for x in rs)
        assert heights == sorted(heights)
        top = heights[-1]
        expected_blocks = 3 * -(-8 // batch_size)
        assert top == expected_blocks, heights
        assert lc.heads()[0][0] == top
        assert lc.query("privacy")["records"] == 3
        rep = lc.sim.nodes[0].replica
        assert rep.log.last_exec == top and rep.log.next_seq == top + 1 and not rep.req.pending
        # Checkpoints (every 2) become stable on the replica's own vote; the log is collected.
        assert rep.ckpt.h == top - top % 2 and all(rep.ckpt.h < s <= top and sl.committed
                                                   for s, sl in rep.log.slots.items())
    from ledger.verify import verify_chain

    rep = verify_chain(tmp_path / "ledger1" / "replica_0.sqlite", genesis=w.genesis)
    assert rep.ok, rep


def test_replica_verifies_each_client_signature_once():
    """check_tx caches its verdict by transaction hash: resubmissions (before or after execution)
    are not re-verified, yet every replica verifies every signature itself once."""
    from ledger import messages as M

    w = Workload(8, 2)
    c = SimCluster(4, genesis=w.genesis, seed=8, cfg=pbft.Config(n=4))
    c.record_commits = False
    txs = w.round_txs(1, 6)
    hs = c.submit(txs)
    assert c.run_until_committed(hs, max_ms=10_000)
    c.net.run(until=lambda: len(set(c.heights())) == 1, max_ms=5_000)
    assert [c.nodes[i].app.verify_count for i in range(4)] == [len(txs)] * 4
    app = c.nodes[1].app
    raw = txs[0].encode()
    assert app.check_tx(raw) == M.sha256(raw) and app.verify_count == len(txs)
    c.submit(txs[:3])  # a client retransmits committed transactions
    c.net.run(max_ms=2_000)
    assert [c.nodes[i].app.verify_count for i in range(4)] == [len(txs)] * 4
    assert c.heights() == [c.heights()[0]] * 4  # nothing executed twice
    # A different signature on the same body is a different transaction: verified (and refused).
    forged = Transaction(txs[0].kind, txs[0].sender, txs[0].payload, txs[0].nonce, bytes(64), txs[0].chain_id)
    assert app.check_tx(forged.encode()) is None and app.verify_count == len(txs) + 1
    assert app.check_tx(forged.encode()) is None  # refusals are not cached as authenticated
    assert app.check_tx(raw[:-1]) is None


def test_flipped_byte_on_disk_is_detected(tmp_path):
    w = Workload(4, 2)
    with _lc(tmp_path, w) as lc:
        for r in range(1, 4):
            lc.submit_many(w.round_txs(r, 8))
    p = tmp_path / "ledger" / "replica_1.sqlite"
    data = bytearray(p.read_bytes())
    i = data.find(b'"commitment":"')
    assert i > 0
    data[i + 20] = ord("0") if data[i + 20] != ord("0") else ord("1")
    p.write_bytes(bytes(data))
    with pytest.raises(StorageCorruptError) as e:
        _lc(tmp_path, w)
    assert "replica_1.sqlite" in str(e.value)


def _pre_prepare(c, w, seq, view=0, txs=None):
    from ledger import merkle
    from ledger import messages as M

    txs = txs if txs is not None else [t.encode() for t in w.round_txs(seq, 4)]
    root = merkle.merkle_root([M.sha256(t) for t in txs])
    batch = M.Batch(1000 + seq, view, tuple(txs))
    pp = M.PrePrepare(view, seq, M.batch_digest(root, batch.timestamp_ms, view), root, batch)
    return M.encode(pp, view % c.n, c.keys[view % c.n]), pp


def test_vote_persisted_before_prepare_is_sent():
    w = Workload(5, 2)
    c = SimCluster(4, genesis=w.genesis, seed=5, cfg=pbft.Config(n=4))
    raw, pp = _pre_prepare(c, w, 1)
    acts = c.nodes[1].replica.receive(raw, 0)
    kinds = [type(a).__name__ for a in acts]
    assert "Persist" in kinds and "Send" in kinds
    assert kinds.index("Persist") < kinds.index("Send")
    p = next(a for a in acts if isinstance(a, pbft.Persist))
    assert p.value.endswith(pp.digest)


def test_restarted_replica_refuses_conflicting_vote():
    w = Workload(6, 2)
    c = SimCluster(4, genesis=w.genesis, seed=6, cfg=pbft.Config(n=4))
    raw_a, pp_a = _pre_prepare(c, w, 1)
    node = c.nodes[2]
    acts = node.replica.receive(raw_a, 0)
    node._perform(acts)  # persist the vote in the replica's (durable) chain meta
    c.restart(2)  # in-memory state lost; votes reloaded from the chain's metadata
    rep = c.nodes[2].replica
    assert rep.log.votes.get(1, (None, None))[1] == pp_a.digest
    raw_b, pp_b = _pre_prepare(c, w, 1, txs=[t.encode() for t in w.round_txs(9, 3)])
    assert pp_b.digest != pp_a.digest
    acts = rep.receive(raw_b, 0)
    assert not any(isinstance(a, pbft.Send) for a in acts)
    assert rep.stats.get("conflicting_vote_refused", 0) == 1
