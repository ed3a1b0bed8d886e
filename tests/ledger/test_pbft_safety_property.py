"""Property-based PBFT tests over random n and fault schedules (issue 6 test 16).

Each example draws n in {4, 5, 7}, a seed, link faults (drop / duplicate / delay), up to f
Byzantine replicas with random behaviours, and a schedule of crashes, restarts and partitions
applied while rounds of transactions are submitted. Safety is checked after every step; after
the schedule every fault except the Byzantine replicas is healed and liveness is required: every
submitted transaction commits within a virtual-time bound.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import pbft
from ledger.sim import (Faults, SimCluster, Workload, check_certificates, check_only_registered,
                        effective_tx_hashes)

BEHAVIOURS = ["equivocate", "wrong_digest", "junk", "forge", "spoof", "replay", "silent"]


@st.composite
def scenarios(draw):
    n = draw(st.sampled_from([4, 5, 7]))
    f = (n - 1) // 3
    seed = draw(st.integers(0, 2**16))
    faults = Faults(drop=draw(st.sampled_from([0.0, 0.05, 0.2])), duplicate=draw(st.sampled_from([0.0, 0.1])),
                    delay_max_ms=draw(st.sampled_from([0.0, 5.0, 50.0])))
    nbyz = draw(st.integers(0, f))
    byz_ids = draw(st.lists(st.integers(0, n - 1), min_size=nbyz, max_size=nbyz, unique=True))
    byz = {i: {draw(st.sampled_from(BEHAVIOURS))} for i in byz_ids}
    steps = draw(st.lists(st.tuples(
        st.sampled_from(["crash", "restart", "partition", "heal", "none"]),
        st.integers(0, n - 1), st.integers(1, 2**16)), min_size=1, max_size=4))
    return n, seed, faults, byz, steps


def run_scenario(n, seed, faults, byz, steps):
    w = Workload(seed, 3)
    cfg = pbft.Config(n=n, checkpoint_interval=3, view_timeout_ms=300)
    c = SimCluster(n, genesis=w.genesis, seed=seed, faults=faults, cfg=cfg, byzantine=byz)
    c.record_commits = False
    honest = c.honest()
    f = cfg.f
    allowed = {w.admin.key_id()} | {h.key_id() for h in w.hospitals}
    crashed: set[int] = set()
    submitted = []
    r = 0
    import random

    rng = random.Random(seed)
    for action, who, salt in steps:
        if action == "crash" and len(crashed) + len(byz) < n:
            c.crash(who)
            crashed.add(who)
        elif action == "restart" and who in crashed:
            c.restart(who)
            crashed.discard(who)
        elif action == "partition":
            ids = list(range(n))
            random.Random(salt).shuffle(ids)
            k = 1 + salt % (n - 1)
            c.net.partition([ids[:k], ids[k:]])
        elif action == "heal":
            c.net.heal()
        r += 1
        submitted += c.submit(w.round_txs(r, 6) + [w.outsider_tx(r)])
        c.net.run(max_ms=rng.choice([50, 500, 3000]))
        c.check_safety(honest)
    # Heal everything but the Byzantine replicas: liveness must follow.
    c.net.heal()
    for i in sorted(crashed):
        c.restart(i)
    c.net.faults = Faults(drop=min(faults.drop, 0.05), delay_max_ms=faults.delay_max_ms)
    r += 1
    submitted += c.submit(w.round_txs(r, 6))
    ok = c.run_until_committed(submitted, max_ms=300_000)
    c.check_safety(honest)
    check_only_registered(c, allowed)
    check_certificates(c, honest)
    for i in honest:
        eff = effective_tx_hashes(c.chains[i])
        assert len(eff) == len(set(eff))
    assert ok, f"not live: heights {c.heights()} views {[c.nodes[i].replica.view for i in range(n)]}"


@settings(max_examples=50, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios())
def test_random_schedules_default(sc):
    run_scenario(*sc)


@pytest.mark.slow
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios())
def test_random_schedules_1000(sc):
    run_scenario(*sc)
