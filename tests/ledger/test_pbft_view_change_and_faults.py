"""PBFT under faults on the seeded simulated network (issue 6 tests 2-11, 13).

Every test checks safety (honest replicas never commit different blocks at the same height,
chains are hash-linked without gaps, only registered signers' transactions take effect, nothing
takes effect twice) and liveness where the fault model allows it.
"""

from __future__ import annotations

import pytest

from ledger import messages as M
from ledger import pbft
from ledger.sim import (Faults, SimCluster, Workload, check_certificates, check_only_registered,
                        effective_tx_hashes)


def _cluster(n=4, seed=0, *, faults=None, byzantine=None, K=5, hospitals=4, **kw):
    w = Workload(seed, hospitals)
    cfg = pbft.Config(n=n, checkpoint_interval=K, view_timeout_ms=kw.pop("timeout", 400), **kw)
    return w, SimCluster(n, genesis=w.genesis, seed=seed, faults=faults, cfg=cfg, byzantine=byzantine)


def _allowed(w):
    return {w.admin.key_id()} | {h.key_id() for h in w.hospitals}


def _safe(c, w, replicas=None):
    top = c.check_safety(replicas)
    check_only_registered(c, _allowed(w))
    check_certificates(c, replicas)  # every stored block carries a valid 2f+1 commit certificate
    for i in (c.honest() if replicas is None else replicas):
        eff = effective_tx_hashes(c.chains[i])
        assert len(eff) == len(set(eff)), f"replica {i}: a transaction took effect twice"
    return top


def _rounds(c, w, start, count, *, max_ms=30_000, size=0, targets=None):
    for r in range(start, start + count):
        hs = c.submit(w.round_txs(r, size), targets)
        assert c.run_until_committed(hs, max_ms=max_ms), f"round {r} not committed: heights {c.heights()}"


def test_f_crashed_backups_still_progress():
    w, c = _cluster(7, seed=2)
    c.crash(5)
    c.crash(6)
    _rounds(c, w, 1, 5)
    _safe(c, w, [0, 1, 2, 3, 4])


def test_f_plus_one_crashed_halts_without_divergence_then_resumes():
    w, c = _cluster(4, seed=3)
    _rounds(c, w, 1, 2)
    before = c.heights()
    c.crash(2)
    c.crash(3)
    hs = c.submit(w.round_txs(3))
    assert not c.run_until_committed(hs, max_ms=5_000)
    assert c.heights()[:2] == before[:2]  # nothing can commit without 2f+1 = 3 replicas
    _safe(c, w, [0, 1])
    c.restart(2)
    c.restart(3)
    assert c.run_until_committed(hs, max_ms=60_000), c.heights()
    _rounds(c, w, 4, 3)
    _safe(c, w)


def test_primary_crash_mid_batch_view_change_no_loss_no_duplicate():
    w, c = _cluster(4, seed=4)
    _rounds(c, w, 1, 2)
    txs = w.round_txs(3)
    # The primary's PRE-PREPARE reaches replica 1 only (2 and 3 are cut off), then it crashes.
    c.net.partition([[0, 1], [2, 3]])
    hs = c.submit(txs)
    c.net.run(max_ms=1)
    assert c.nodes[1].replica.log.slots, "replica 1 did not pre-prepare the batch"
    c.crash(0)
    c.net.heal()
    assert c.run_until_committed(hs, max_ms=30_000), c.heights()
    _rounds(c, w, 4, 2)  # needs a new primary
    assert all(c.nodes[i].replica.view >= 1 for i in (1, 2, 3))
    top = _safe(c, w, [1, 2, 3])
    eff = effective_tx_hashes(c.chains[1])
    for h in hs:
        assert eff.count(h) == 1
    assert top >= 4


def test_consecutive_faulty_primaries_growing_timeouts():
    w, c = _cluster(7, seed=5, timeout=200)
    _rounds(c, w, 1, 1)
    c.crash(0)
    c.crash(1)  # primaries of views 0 and 1 are down: two view changes in a row
    t0 = c.net.now
    hs = c.submit(w.round_txs(2))
    assert c.run_until_committed(hs, max_ms=60_000), c.heights()
    views = {c.nodes[i].replica.view for i in range(2, 7)}
    assert min(views) >= 2
    # The second view change waited longer than the first (timeouts double): > 200 + 400 ms.
    assert c.net.now - t0 >= 600
    stats = c.nodes[3].replica.stats
    assert stats.get("view_change_sent", 0) >= 2
    _rounds(c, w, 3, 2)
    _safe(c, w, list(range(2, 7)))


def test_equivocating_primary_at_most_one_commits_and_is_recorded():
    w, c = _cluster(4, seed=6, byzantine={0: {"equivocate"}})
    hs = c.submit(w.round_txs(1))
    assert c.run_until_committed(hs, max_ms=30_000), c.heights()
    _rounds(c, w, 2, 2)
    _safe(c, w, [1, 2, 3])
    recorded = [c.nodes[i].replica.vc.equivocations for i in (1, 2, 3)]
    assert any(recorded), "no honest replica recorded the equivocation"
    assert all(e[2] == 0 for rec in recorded for e in rec)


@pytest.mark.parametrize("kind", ["wrong_digest", "junk", "forge", "spoof", "replay"])
def test_f_byzantine_backups_are_ignored(kind):
    w, c = _cluster(7, seed=7, byzantine={5: {kind}, 6: {kind}})
    _rounds(c, w, 1, 4)
    top = _safe(c, w)
    assert top >= 4
    total = {}
    for i in c.honest():
        for k, v in c.nodes[i].replica.stats.items():
            total[k] = total.get(k, 0) + v
    if kind in ("forge", "spoof"):
        assert total.get("bad_signature", 0) > 0
    if kind == "junk":
        assert total.get("malformed", 0) + total.get("bad_signature", 0) > 0
    if kind == "replay":
        assert total.get("duplicate", 0) + total.get("old_checkpoint", 0) > 0


def test_forged_spoofed_and_unregistered_transactions_rejected():
    w, c = _cluster(4, seed=8)
    good = w.round_txs(1)
    out = w.outsider_tx(1)
    forged = bytearray(good[1].encode())
    i = forged.index(b'"sig":"') + 8
    forged[i] = ord("0") if forged[i] != ord("0") else ord("1")
    # A transaction claiming a hospital's key but signed by the outsider (spoofed sender).
    from ledger.tx import Transaction

    spoof = Transaction(kind=out.kind, sender=w.hospitals[0].key_id(), payload=out.payload, nonce="spoof1",
                        signature=out.signature)
    hs = c.submit(good + [out])
    c.submit([bytes(forged), spoof.encode(), b"{not json"])
    assert c.run_until_committed(hs, max_ms=30_000)
    c.net.run(max_ms=2_000)
    _safe(c, w)
    for i in range(4):
        st = c.nodes[i].replica.stats
        assert st.get("bad_tx", 0) >= 3
        assert c.nodes[i].app.locate(M.sha256(bytes(forged))) is None
        assert c.nodes[i].app.locate(spoof.tx_hash()) is None
    loc = c.located(out.tx_hash())
    blk = c.chains[0].get(loc[0])
    assert blk.results[loc[1]].ok is False and blk.results[loc[1]].code in ("unregistered", "unauthorized")


def test_replays_old_views_and_old_commits_execute_nothing_twice():
    w, c = _cluster(4, seed=9)
    sniffed = []
    orig = c.net.send

    def tap(frm, to, raw):
        sniffed.append(raw)
        orig(frm, to, raw)

    c.net.send = tap
    txs = w.round_txs(1)
    hs = c.submit(txs)
    assert c.run_until_committed(hs, max_ms=10_000)
    c.crash(0)  # force a view change so view-0 messages become old-view messages
    _rounds(c, w, 2, 1)
    h_mid = c.heights()
    # Replay: the same client requests, and every replica frame sniffed so far, to everyone.
    c.submit(txs)
    for raw in list(sniffed):
        for t in (1, 2, 3):
            c.net._link(0, t, raw)
    c.net.run(max_ms=3_000)
    _rounds(c, w, 3, 1)
    _safe(c, w, [1, 2, 3])
    for i in (1, 2, 3):
        eff = effective_tx_hashes(c.chains[i])
        for h in hs:
            assert eff.count(h) == 1
    assert c.heights()[1] >= h_mid[1]


def test_drops_delays_duplication_reordering_safe_and_live():
    f = Faults(drop=0.2, duplicate=0.1, delay_min_ms=0.0, delay_max_ms=50.0)
    w, c = _cluster(4, seed=10, faults=f, timeout=800)
    _rounds(c, w, 1, 6, max_ms=120_000)
    _safe(c, w)


def test_partitions_2_2_halts_3_1_progresses_minority_catches_up():
    w, c = _cluster(4, seed=11)
    _rounds(c, w, 1, 1)
    c.net.partition([[0, 1], [2, 3]])
    hs = c.submit(w.round_txs(2))
    assert not c.run_until_committed(hs, max_ms=5_000)
    _safe(c, w)
    c.net.partition([[0, 1, 2], [3]])
    assert c.run_until_committed(hs, max_ms=60_000), c.heights()
    _rounds(c, w, 3, 4)
    lag = c.heights()[3]
    assert lag < c.heights()[0]
    c.net.heal()
    _rounds(c, w, 7, 4)
    c.net.run(until=lambda: len(set(c.heights())) == 1, max_ms=30_000)
    assert len(set(c.heights())) == 1, c.heights()
    _safe(c, w)


def test_lagging_replica_rejoins_by_state_transfer():
    w, c = _cluster(4, seed=12, K=4)
    c.crash(3)
    _rounds(c, w, 1, 12)
    assert c.heights()[3] == 0
    c.restart(3)
    _rounds(c, w, 13, 6)
    c.net.run(until=lambda: len(set(c.heights())) == 1, max_ms=30_000)
    assert len(set(c.heights())) == 1, c.heights()
    assert c.nodes[3].replica.stats.get("state_transfer", 0) >= 1
    assert c.nodes[3].app.contracts.state_root() == c.nodes[0].app.contracts.state_root()
    _safe(c, w)


def test_committed_batch_survives_whole_cluster_crash_and_view_change():
    """Only replica 0 collects the COMMITs of a batch (and executes it); every replica then
    crashes and restarts. The others must not reassign that sequence number in the next view:
    their prepared certificates were persisted before their COMMITs left, so the new primary
    re-proposes the same batch. (Before certificates were persisted, replicas 1-3 formed a
    quorum for a null batch at that height and diverged from replica 0.)"""
    w, c = _cluster(4, seed=11, K=50)
    _rounds(c, w, 1, 1)
    start = c.heights()[0]
    orig_link = c.net._link

    def link(frm, to, raw):
        try:
            body = M.decode(raw).body
        except M.MessageDecodeError:
            body = None
        if isinstance(body, M.Commit) and to in (1, 2, 3):
            return  # replicas 1-3 never learn that the batch committed
        orig_link(frm, to, raw)

    c.net._link = link
    hs = c.submit(w.round_txs(2, 5))
    c.net.run(until=lambda: c.heights()[0] > start, max_ms=2_000)
    assert c.heights()[0] == start + 1 and c.heights()[1:] == [start] * 3
    assert all(c.nodes[i].replica.log.prepared.get(start + 1) for i in (1, 2, 3))
    c.net._link = orig_link
    for i in range(4):
        c.crash(i)
    for i in range(4):
        c.restart(i)
    for i in (1, 2, 3):  # the certificate came back from disk
        assert c.nodes[i].replica.log.prepared.get(start + 1) is not None
    hs2 = c.submit(w.round_txs(2, 5))  # the client retransmits
    assert c.run_until_committed(hs2, max_ms=60_000), c.heights()
    _rounds(c, w, 3, 2)
    top = _safe(c, w)
    assert top >= start + 2
    blocks = {c.chains[i].get(start + 1).hash() for i in range(4)}
    assert len(blocks) == 1, "replicas committed different blocks at the same height"


def test_damaged_prepared_certificate_on_disk_refuses_to_start():
    w, c = _cluster(4, seed=12)
    _rounds(c, w, 1, 2)
    chain = c.chains[2]
    key = next(k for k in chain.meta if k.startswith("prep/"))
    rec = bytearray(chain.meta[key])
    rec[-10] ^= 0x01  # inside the last PREPARE's signature
    chain.meta[key] = bytes(rec)
    c.crash(2)
    from ledger.storage import StorageCorruptError

    with pytest.raises(StorageCorruptError, match="prepared certificate"):
        c.restart(2)


def test_restarted_primary_does_not_equivocate_on_a_slot_it_voted_for():
    """The primary proposes a batch that only it sees, crashes and restarts: it must not send a
    different PRE-PREPARE for the same (view, seq) (its vote is on disk); it hands the view over
    and the batch commits in the next view without an equivocation being recorded."""
    w, c = _cluster(4, seed=13)
    _rounds(c, w, 1, 1)
    c.net.partition([[0], [1, 2, 3]])
    hs = c.submit(w.round_txs(2, 5), targets=[0])
    c.net.run(max_ms=1)
    seq = c.heights()[0] + 1
    assert c.nodes[0].replica.log.votes.get(seq) is not None
    c.restart(0)
    c.net.heal()
    hs = c.submit(w.round_txs(2, 5))
    assert c.run_until_committed(hs, max_ms=60_000), c.heights()
    assert c.nodes[0].replica.stats.get("voted_slot_after_restart", 0) >= 1
    assert all(not c.nodes[i].replica.vc.equivocations for i in range(4))
    assert all(c.nodes[i].replica.stats.get("conflicting_vote_refused", 0) == 0 for i in range(4))
    _safe(c, w)
