"""ledger.contracts: registry, rounds, privacy budget, access control, reputation, determinism."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import crypto
from ledger.contracts import ContractState, Genesis
from ledger.tx import Transaction, sign_tx

ADMIN = crypto.SigningKey.from_seed(bytes([1]) * 32)
ADMIN2 = crypto.SigningKey.from_seed(bytes([2]) * 32)
AGG = crypto.SigningKey.from_seed(bytes([3]) * 32)
HOSP = [crypto.SigningKey.from_seed(bytes([10 + i]) * 32) for i in range(3)]
OUTSIDER = crypto.SigningKey.from_seed(bytes([99]) * 32)
C = "cd" * 32


class World:
    def __init__(self, genesis: Genesis | None = None) -> None:
        self.g = genesis or Genesis(admins=(ADMIN.key_id(),), epsilon_cap=1.0)
        self.st = ContractState(self.g)
        self.h = 0

    def do(self, signer, kind: str, payload: dict, **kw):
        tx = sign_tx(signer, kind, payload, chain_id=self.g.chain_id, **kw)
        return self.run(tx)

    def run(self, tx: Transaction):
        self.h += 1
        return self.st.apply(tx, height=self.h, timestamp_ms=1000 * self.h)

    def setup(self) -> "World":
        assert self.do(ADMIN, "registry.register", {"role": "aggregator", "name": "agg", "pubkey": AGG.key_id()},
                       nonce="setup-agg").ok
        for i, k in enumerate(HOSP):
            assert self.do(ADMIN, "registry.register", {"role": "hospital", "name": f"hospital_{i}", "pubkey": k.key_id()},
                           nonce=f"setup-{i}").ok
        return self


def commit(w: World, k, r: int, n: int = 10, **kw):
    return w.do(k, "round.commit_update", {"round": r, "commitment": C, "num_examples": n}, **kw)


def test_registry_and_authorisation() -> None:
    w = World().setup()
    assert w.st.is_registered(HOSP[0].key_id(), "hospital")
    r = w.do(HOSP[0], "registry.register", {"role": "hospital", "name": "x", "pubkey": OUTSIDER.key_id()})
    assert (r.ok, r.code) == (False, "unauthorized")
    r = w.do(OUTSIDER, "registry.register", {"role": "admin", "name": "x", "pubkey": OUTSIDER.key_id()})
    assert (r.ok, r.code) == (False, "unregistered")
    r = w.do(ADMIN, "registry.register", {"role": "hospital", "name": "again", "pubkey": HOSP[0].key_id()})
    assert r.code == "already_registered"
    r = w.do(ADMIN, "registry.register", {"role": "king", "name": "x", "pubkey": OUTSIDER.key_id()})
    assert r.code == "bad_payload"
    r = w.do(ADMIN, "registry.register", {"role": "hospital", "name": "x", "pubkey": OUTSIDER.key_id(), "x": 1})
    assert r.code == "bad_payload"
    assert w.do(ADMIN, "registry.revoke", {"pubkey": HOSP[2].key_id()}).code == "revoked"
    assert w.do(ADMIN, "registry.revoke", {"pubkey": HOSP[2].key_id()}).code == "already_revoked"
    r = w.do(ADMIN, "registry.register", {"role": "hospital", "name": "back", "pubkey": HOSP[2].key_id()})
    assert r.code == "key_revoked"
    assert w.do(ADMIN, "registry.revoke", {"pubkey": ADMIN.key_id()}).code == "quorum_violation"
    assert w.st.query(f"institutions/{HOSP[2].key_id()}")["active"] is False


def test_admin_quorum() -> None:
    g = Genesis(admins=(ADMIN.key_id(), ADMIN2.key_id()), admin_quorum=2, epsilon_cap=2.0)
    w = World(g)
    p = {"role": "hospital", "name": "h", "pubkey": HOSP[0].key_id()}
    r1 = w.do(ADMIN, "registry.register", p)
    assert (r1.ok, r1.code) == (True, "vote_recorded") and not w.st.is_registered(HOSP[0].key_id())
    assert w.do(ADMIN, "registry.register", p).code == "duplicate_vote"
    assert w.do(ADMIN2, "registry.register", p).code == "registered"
    assert w.st.is_registered(HOSP[0].key_id(), "hospital") and w.st.query("pending") == {}


def test_round_lifecycle_and_rejections() -> None:
    w = World().setup()
    assert w.do(HOSP[0], "round.open", {"round": 1}).code == "unauthorized"
    assert w.do(AGG, "round.open", {"round": 1}).code == "opened"
    assert w.do(AGG, "round.open", {"round": 2}).code == "round_still_open"
    assert commit(w, HOSP[0], 1, 100).code == "accepted"
    assert commit(w, HOSP[0], 1).code == "duplicate"
    assert commit(w, HOSP[1], 2).code == "wrong_round"
    assert commit(w, OUTSIDER, 1).code == "unregistered"
    assert commit(w, AGG, 1).code == "unauthorized"
    # exact replay of an accepted transaction
    tx = sign_tx(HOSP[1], "round.commit_update", {"round": 1, "commitment": C, "num_examples": 50})
    assert w.run(tx).code == "accepted"
    assert w.run(tx).code == "replay"
    # the same nonce reused with a new payload is a replay too
    assert commit(w, HOSP[2], 1, nonce=tx.nonce).code == "accepted"  # different sender: fine
    assert w.do(HOSP[1], "access.request_summary", {"round": 1}, nonce=tx.nonce).code == "replay"
    # revoked hospital cannot commit
    w.do(ADMIN, "registry.revoke", {"pubkey": HOSP[2].key_id()})
    r = w.do(AGG, "round.global_model", {"round": 1, "model_hash": "ee" * 32, "checkpoint_address": "ff" * 32,
                                         "checkpoint_sha256": "ff" * 32})
    assert r.code == "recorded"
    assert w.do(AGG, "round.global_model", {"round": 1, "model_hash": "ee" * 32}).code == "duplicate"
    assert w.do(AGG, "metrics.record", {"round": 1, "metrics": {"auc": 0.9, "loss": 0.3}}).code == "recorded"
    assert w.do(AGG, "metrics.record", {"round": 1, "metrics": {"auc": 0.9}}).code == "duplicate"
    assert w.do(AGG, "round.close", {"round": 1}).code == "closed"
    assert commit(w, HOSP[1], 1).code == "wrong_round"  # closed round
    assert w.do(AGG, "round.open", {"round": 1}).code == "wrong_round"  # rounds only go forward
    assert w.do(AGG, "round.open", {"round": 2}).code == "opened"
    assert commit(w, HOSP[2], 2).code == "revoked"
    rnd = w.st.query("rounds/1")
    assert set(rnd["commitments"]) == {HOSP[0].key_id(), HOSP[1].key_id(), HOSP[2].key_id()}
    assert rnd["commitments"][HOSP[0].key_id()]["num_examples"] == 100
    assert w.st.query("rounds") == [1, 2]
    # traceability
    contrib = w.st.query(f"contributions/{HOSP[1].key_id()}")
    assert [(c["round"], c["tx"]) for c in contrib] == [(1, tx.tx_hash().hex())]
    # reputation: hospital 0 had one rejected duplicate, hospital 1 one rejected wrong-round
    rep0 = w.st.query(f"reputation/{HOSP[0].key_id()}")
    assert rep0["accepted"] == 1 and rep0["participated"] == 1 and rep0["rejected"] == 1
    assert rep0["examples"] == 100 and 0 < rep0["score"] < 1


def test_missed_rounds_lower_reputation() -> None:
    w = World().setup()
    for r in (1, 2, 3):
        w.do(AGG, "round.open", {"round": r})
        commit(w, HOSP[0], r)
        if r == 1:
            commit(w, HOSP[1], r)
        w.do(AGG, "round.close", {"round": r})
    reps = [w.st.query(f"reputation/{k.key_id()}") for k in HOSP]
    assert reps[0]["participated"] == 3 and reps[0]["missed"] == 0
    assert reps[1]["participated"] == 1 and reps[1]["missed"] == 2
    assert reps[2]["participated"] == 0 and reps[2]["missed"] == 3
    assert reps[0]["score"] > reps[1]["score"] > reps[2]["score"]


def test_privacy_budget() -> None:
    w = World().setup()
    rec = lambda r, e: w.do(AGG, "privacy.record", {"round": r, "epsilon": e, "delta": 1e-5,
                                                   "accountant": "rdp", "noise_multiplier": 1.1})
    w.do(AGG, "round.open", {"round": 1})
    assert rec(1, 0.4).code == "recorded"
    assert rec(1, 0.5).code == "duplicate"
    w.do(AGG, "round.close", {"round": 1})
    w.do(AGG, "round.open", {"round": 2})
    assert rec(2, 0.3).code == "epsilon_decreasing"
    assert rec(2, 1.0000001).code == "budget_exceeded"
    assert rec(2, 1.0).code == "recorded"
    assert w.st.query("privacy")["epsilon"] == 1.0 and w.st.query("privacy")["records"] == 2
    assert w.do(AGG, "privacy.record", {"round": 2, "epsilon": 1.0, "delta": 2.0, "accountant": "rdp",
                                        "noise_multiplier": 1.0}).code == "bad_payload"
    assert w.do(HOSP[0], "privacy.record", {"round": 2, "epsilon": 1.0, "delta": 0.0, "accountant": "rdp",
                                            "noise_multiplier": 1.0}).code == "unauthorized"


def test_access_control() -> None:
    w = World().setup()
    assert w.do(HOSP[0], "access.request_summary", {"round": 1}).code == "wrong_round"
    w.do(AGG, "round.open", {"round": 1})
    assert w.do(HOSP[0], "access.request_summary", {"round": 1}).code == "granted"
    assert w.do(AGG, "access.request_summary", {"round": 1}).code == "unauthorized"
    assert w.do(OUTSIDER, "access.request_summary", {"round": 1}).code == "unregistered"
    assert w.st.query(f"access/1/{HOSP[0].key_id()}") is True
    assert w.st.query(f"access/1/{AGG.key_id()}") is False
    assert w.st.can_read_summary(HOSP[1].key_id(), 1) and not w.st.can_read_summary(OUTSIDER.key_id(), 1)


def test_signature_chain_and_unknown_kind() -> None:
    w = World().setup()
    good = sign_tx(HOSP[0], "access.request_summary", {"round": 1})
    forged = Transaction(good.kind, HOSP[1].key_id(), good.payload, good.nonce, good.signature)  # spoofed sender
    assert w.run(forged).code == "bad_signature"
    assert not w.st.nonce_used(HOSP[1].key_id(), good.nonce)  # a bad signature consumes nothing
    other = sign_tx(HOSP[0], "round.open", {"round": 1}, chain_id="another-chain")
    assert w.run(other).code == "wrong_chain"
    assert w.do(HOSP[0], "contract.selfdestruct", {}).code == "unknown_kind"
    before = w.st.state_root()
    w.run(sign_tx(OUTSIDER, "round.open", {"round": 1}))
    assert w.st.state_root() != before  # rejections are committed in the results accumulator


def test_snapshot_restore_and_determinism() -> None:
    w = World().setup()
    w.do(AGG, "round.open", {"round": 1})
    commit(w, HOSP[0], 1)
    snap = w.st.snapshot()
    twin = ContractState.from_snapshot(w.g, snap)
    assert twin.state_root() == w.st.state_root()
    tx = sign_tx(HOSP[1], "round.commit_update", {"round": 1, "commitment": C, "num_examples": 3})
    r1 = w.st.apply(tx, height=50, timestamp_ms=1)
    r2 = twin.apply(tx, height=50, timestamp_ms=1)
    assert r1 == r2 and twin.state_root() == w.st.state_root()
    assert twin.apply(tx, height=51, timestamp_ms=1).code == "replay"  # restored nonce set
    tampered = snap.replace(b'"num_examples":10', b'"num_examples":11')
    assert tampered != snap
    assert ContractState.from_snapshot(w.g, tampered).state_root() != ContractState.from_snapshot(w.g, snap).state_root()
    bad_seen = snap.replace(b'"seen":[[', b'"seen":[["x",1],[')
    with pytest.raises(ValueError):
        ContractState.from_snapshot(w.g, bad_seen)
    with pytest.raises(ValueError):
        ContractState.from_snapshot(Genesis(admins=(ADMIN2.key_id(),)), snap)
    with pytest.raises(ValueError):
        w.st.restore(b"not json")


def test_genesis_validation() -> None:
    with pytest.raises(ValueError):
        Genesis(admins=())
    with pytest.raises(ValueError):
        Genesis(admins=(ADMIN.key_id(),), admin_quorum=2)
    with pytest.raises(ValueError):
        Genesis(admins=(ADMIN.key_id(),), epsilon_cap=float("inf"))
    g = Genesis(admins=(ADMIN.key_id(),), institutions=(("hospital", "h", HOSP[0].key_id()),))
    assert Genesis.from_dict(g.to_dict()) == g
    assert ContractState(g).is_registered(HOSP[0].key_id(), "hospital")


KINDS_PAYLOADS = [
    ("round.open", lambda r: {"round": r}),
    ("round.close", lambda r: {"round": r}),
    ("round.commit_update", lambda r: {"round": r, "commitment": C, "num_examples": r}),
    ("privacy.record", lambda r: {"round": r, "epsilon": r / 10, "delta": 1e-5, "accountant": "rdp",
                                  "noise_multiplier": 1.0}),
    ("metrics.record", lambda r: {"round": r, "metrics": {"auc": 0.5}}),
    ("access.request_summary", lambda r: {"round": r}),
    ("registry.revoke", lambda r: {"pubkey": HOSP[r % 3].key_id()}),
    ("round.global_model", lambda r: {"round": r, "model_hash": C}),
]
SIGNERS = [ADMIN, AGG, *HOSP, OUTSIDER]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.tuples(st.integers(0, len(SIGNERS) - 1), st.integers(0, len(KINDS_PAYLOADS) - 1),
                              st.integers(1, 4), st.booleans()), max_size=40))
def test_property_replicas_agree_and_only_registered_succeed(ops) -> None:
    g = Genesis(admins=(ADMIN.key_id(),), epsilon_cap=0.25)
    a, b = World(g).setup(), World(g).setup()
    txs = []
    for si, ki, r, replay in ops:
        if replay and txs:
            txs.append(txs[-1])
            continue
        kind, pf = KINDS_PAYLOADS[ki]
        txs.append(sign_tx(SIGNERS[si], kind, pf(r)))
    ra = [a.run(t) for t in txs]
    rb = [b.run(t) for t in txs]
    assert ra == rb and a.st.state_root() == b.st.state_root()
    seen = set()
    for t, res in zip(txs, ra):
        if res.ok:
            assert t.sender != OUTSIDER.key_id()
            assert t.tx_hash() not in seen  # nothing executes twice
        seen.add(t.tx_hash())
    assert a.st.query("privacy")["epsilon"] <= 0.25


def test_check_signature_false_trusts_caller_and_bad_objects_are_results() -> None:
    w = World().setup()
    good = sign_tx(AGG, "round.open", {"round": 1})
    forged = Transaction(good.kind, good.sender, good.payload, good.nonce, bytes(64))
    # The replica that already verified requests may skip the check; verify_chain never does.
    assert w.st.apply(forged, height=1, timestamp_ms=0, check_signature=False).code == "opened"
    assert w.st.apply("not a tx", height=1, timestamp_ms=0).code == "bad_tx"  # type: ignore[arg-type]
    assert w.st.query("nosuch/path") is None and w.st.query("rounds/99") is None
    summary = w.st.query("summary")
    assert summary["open_round"] == 1 and summary["counters"]["executed"] == 6


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.tuples(st.integers(0, len(SIGNERS) - 1), st.integers(0, len(KINDS_PAYLOADS) - 1),
                              st.integers(1, 4), st.integers(1, 4)), max_size=40))
def test_property_incremental_state_root_equals_full_recomputation(ops) -> None:
    """The cached per-round hashes never go stale: after every "block" of 1-4 transactions the
    incremental root equals the strict from-scratch root, and a checkpoint taken then still
    serialises to exactly that moment's snapshot after the state has moved on."""
    g = Genesis(admins=(ADMIN.key_id(),), epsilon_cap=0.25)
    w = World(g).setup()
    w.do(AGG, "round.open", {"round": 1})  # a round the random operations can then touch
    cps = [(w.st.checkpoint(), w.st.snapshot(), w.st.state_root())]
    i = 0
    for si, ki, r, block_len in ops:
        kind, pf = KINDS_PAYLOADS[ki]
        w.run(sign_tx(SIGNERS[si], kind, pf(r)))
        i += 1
        if i % block_len == 0:
            assert w.st.state_root() == w.st.full_state_root()
            cps.append((w.st.checkpoint(), w.st.snapshot(), w.st.state_root()))
    assert w.st.state_root() == w.st.full_state_root()
    for cp, snap, root in cps:
        assert cp.to_bytes() == snap
        assert ContractState.from_snapshot(g, cp.to_bytes()).state_root() == root


def test_state_root_commits_to_old_rounds() -> None:
    """A mutation of a closed round (a summary grant) changes the root."""
    w = World().setup()
    w.do(AGG, "round.open", {"round": 1})
    commit(w, HOSP[0], 1)
    w.do(AGG, "round.close", {"round": 1})
    w.do(AGG, "round.open", {"round": 2})
    before = w.st.state_root()
    assert w.do(HOSP[1], "access.request_summary", {"round": 1}).ok
    assert w.st.state_root() != before and w.st.state_root() == w.st.full_state_root()


def test_privacy_budget_per_hospital() -> None:
    """Issue 16.2: each hospital's epsilon/delta/noise per round; per-hospital epsilon may not
    decrease against the latest earlier record nor pass the cap; malformed entries are refused."""
    w = World().setup()

    def rec(r: int, hospitals: object):
        return w.do(AGG, "privacy.record", {"round": r, "epsilon": 0.9, "delta": 1e-5, "accountant": "rdp",
                                            "noise_multiplier": 1.1, "hospitals": hospitals})

    def h(a: float, b: float) -> dict:
        return {"a": {"epsilon": a, "delta": 1e-5, "noise_multiplier": 1.2},
                "b": {"epsilon": b, "delta": 1e-5, "noise_multiplier": 0.9}}

    w.do(AGG, "round.open", {"round": 1})
    assert rec(1, {}).code == "bad_payload"
    assert rec(1, {"a": {"epsilon": 0.1, "delta": 1e-5}}).code == "bad_payload"
    assert rec(1, {"a": {"epsilon": -0.1, "delta": 1e-5, "noise_multiplier": 1.0}}).code == "bad_payload"
    assert rec(1, {"a": {"epsilon": 0.1, "delta": 1.5, "noise_multiplier": 1.0}}).code == "bad_payload"
    assert rec(1, h(0.5, 0.6)).code == "recorded"
    assert w.st.query("rounds/1")["privacy"]["hospitals"]["b"]["epsilon"] == 0.6
    w.do(AGG, "round.close", {"round": 1})
    w.do(AGG, "round.open", {"round": 2})
    assert rec(2, h(0.7, 0.55)).code == "epsilon_decreasing"  # hospital b below its round-1 value
    assert rec(2, h(1.01, 0.8)).code == "budget_exceeded"
    assert rec(2, h(0.9, 0.8)).code == "recorded"
