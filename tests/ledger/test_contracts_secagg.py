"""Secure-aggregation contracts (issue 18.1; paper 3.1/3.5 "secure aggregation was also performed"):
``secagg.register_kx`` (a hospital's X25519 key, signed by its identity key, once) and
``secagg.transcript`` (the round's protocol record; the contract refuses a record that reveals
both shares of one hospital or that belongs to another round or chain). Transcripts are produced
by the real protocol (``bfdl_tff.secagg.simulate``), then edited for the refusal cases."""

from __future__ import annotations

import copy
import hashlib
import json

import numpy as np
import pytest

from bfdl_tff.secagg import KxKey, Participant, RoundParams, SecAggClient, SecAggServer, TooFewSurvivorsError
from bfdl_tff.secagg.simulate import Hospital, run_round
from ledger import crypto, txkinds
from ledger.tx import sign_tx

from test_contracts_paper_3_4 import ADMIN, AGG, HOSP, OUTSIDER, World, commit


class _LedgerSigner:
    """A ledger signing key used as the hospital's protocol identity (the same Ed25519 key)."""

    def __init__(self, key: crypto.SigningKey) -> None:
        self._key = key

    def public_key(self) -> bytes:
        return bytes.fromhex(self._key.key_id())

    def sign(self, msg: bytes) -> bytes:
        return self._key.sign(msg)


KX = [KxKey.generate() for _ in HOSP]


def _hospitals() -> list[Hospital]:
    return [Hospital(id=i + 1, name=f"hospital-{i}", signer=_LedgerSigner(k), kx=KX[i]) for i, k in enumerate(HOSP)]


def _register_kx(w: World) -> None:
    for k, kx in zip(HOSP, KX):
        res = w.do(k, "secagg.register_kx", {"kx_pubkey": kx.public_bytes().hex()})
        assert (res.ok, res.code) == (True, "registered"), res


def _transcript(w: World, r: int = 1, **drops) -> dict:
    params = RoundParams(run_id=w.g.chain_id, round=r, participants=(1, 2, 3), threshold=2, bits=32, vector_length=16)
    rng = np.random.default_rng(r)
    inputs = {i: rng.integers(0, 2**32, 16, dtype=np.uint64).astype(np.uint32) for i in (1, 2, 3)}
    return run_round(params, _hospitals(), inputs, **drops).result.transcript


def _redigest(rec: dict) -> dict:
    text = json.dumps(rec["params"], sort_keys=True, separators=(",", ":"))
    rec["params_digest"] = hashlib.sha256(text.encode()).hexdigest()
    return rec


@pytest.fixture
def world() -> World:
    w = World().setup()
    _register_kx(w)
    assert w.do(AGG, "round.open", {"round": 1}).ok
    return w


def test_register_kx_once_per_hospital_and_key() -> None:
    w = World().setup()
    root = w.st.state_root()
    bad = w.do(HOSP[0], "secagg.register_kx", {"kx_pubkey": "XY" * 32})
    assert (bad.ok, bad.code) == (False, "bad_payload")
    _register_kx(w)
    assert w.st.state_root() != root
    assert w.st.query(f"kx/{HOSP[1].key_id()}")["kx_pubkey"] == KX[1].public_bytes().hex()
    again = w.do(HOSP[0], "secagg.register_kx", {"kx_pubkey": KxKey.generate().public_bytes().hex()})
    assert (again.ok, again.code) == (False, "duplicate")
    # a key registered by another hospital cannot be claimed (it would alias two protocol ids)
    assert w.do(ADMIN, "registry.register", {"role": "hospital", "name": "h4", "pubkey": OUTSIDER.key_id()}).ok
    steal = w.do(OUTSIDER, "secagg.register_kx", {"kx_pubkey": KX[0].public_bytes().hex()})
    assert (steal.ok, steal.code) == (False, "duplicate")
    assert w.st.state_root() == w.st.full_state_root()


def test_register_kx_refuses_unregistered_revoked_and_non_hospital_senders() -> None:
    w = World().setup()
    kx = KxKey.generate().public_bytes().hex()
    assert w.do(OUTSIDER, "secagg.register_kx", {"kx_pubkey": kx}).code == "unregistered"
    assert w.do(AGG, "secagg.register_kx", {"kx_pubkey": kx}).code == "unauthorized"
    assert w.do(ADMIN, "registry.revoke", {"pubkey": HOSP[2].key_id()}).ok
    assert w.do(HOSP[2], "secagg.register_kx", {"kx_pubkey": kx}).code == "revoked"
    assert w.st.query("kx") == {}


def test_chain_without_secagg_keeps_its_state_root() -> None:
    """The secagg state is created on first use: an old chain's roots do not change."""
    w1, w2 = World().setup(), World().setup()
    w2.do(OUTSIDER, "secagg.register_kx", {"kx_pubkey": "ab" * 32})  # refused, consumes a nonce
    assert "secagg_kx" not in w1.st._s and "secagg_kx" not in w2.st._s


def test_transcript_of_a_completed_round_is_recorded(world: World) -> None:
    rec = _transcript(world)
    tx = sign_tx(AGG, "secagg.transcript", {"round": 1, "transcript": rec}, chain_id=world.g.chain_id)
    assert len(tx.encode()) < 16_000  # K = 3: a few KB, far below the 64 KiB transaction limit
    res = world.run(tx)
    assert (res.ok, res.code) == (True, "recorded"), res
    s = world.st.query("rounds/1/secagg")
    assert s["masked"] == [1, 2, 3] and s["dropped"] == [] and s["aborted"] is None
    assert s["hospitals"] == {str(i + 1): k.key_id() for i, k in enumerate(HOSP)}
    assert s["aggregate_sha256"] == rec["aggregate_sha256"] and s["tx"] == tx.tx_hash().hex()
    dup = world.do(AGG, "secagg.transcript", {"round": 1, "transcript": rec})
    assert (dup.ok, dup.code) == (False, "duplicate")
    assert world.st.state_root() == world.st.full_state_root()


def test_transcript_with_a_dropout_is_recorded(world: World) -> None:
    rec = _transcript(world, drop_after_shares=[3])
    assert rec["dropped"] == [3] and any(v["pairwise"] == [3] for v in rec["revealed"].values())
    res = world.do(AGG, "secagg.transcript", {"round": 1, "transcript": rec})
    assert res.ok, res
    assert world.st.query("rounds/1/secagg")["dropped"] == [3]


def test_transcript_revealing_both_shares_of_a_hospital_is_refused(world: World) -> None:
    """The never-both rule, enforced by the contract: a forged record claiming a holder revealed
    the pairwise secret of a survivor whose self-mask was also revealed."""
    rec = _transcript(world, drop_after_shares=[3])
    forged = copy.deepcopy(rec)
    forged["revealed"]["1"]["pairwise"] = sorted(forged["revealed"]["1"]["pairwise"] + [2])
    res = world.do(AGG, "secagg.transcript", {"round": 1, "transcript": forged})
    assert (res.ok, res.code) == (False, "double_reveal") and "[2]" in res.message
    # the same hospital's shares split over two holders is still both revealed
    forged = copy.deepcopy(rec)
    forged["revealed"]["2"]["self_mask"] = sorted(forged["revealed"]["2"]["self_mask"] + [3])
    res = world.do(AGG, "secagg.transcript", {"round": 1, "transcript": forged})
    assert (res.ok, res.code) == (False, "double_reveal")
    assert world.st.query("rounds/1/secagg") is None
    assert world.do(AGG, "secagg.transcript", {"round": 1, "transcript": rec}).ok  # the true one still can


@pytest.mark.parametrize("edit,code", [
    (lambda r: r["params"].update(round=2), "wrong_round"),
    (lambda r: r["params"].update(run_id="another-run"), "wrong_run"),
    (lambda r: r.update(dropped=[2]), "bad_transcript"),
    (lambda r: r.update(masked=[1, 2, 3, 4]), "bad_transcript"),
    (lambda r: r.update(aggregate_sha256=None), "bad_transcript"),
    (lambda r: r.update(extra=1), "bad_payload"),
    (lambda r: r["revealed"].update({"1": {"self_mask": [1]}}), "bad_payload"),
    # survivors 2 and 3 then have 1 < t revealed self-mask shares: their masks were not removable
    (lambda r: [r["revealed"][h].update(self_mask=[1]) for h in ("1", "2")], "bad_transcript"),
    (lambda r: r["advertisements"][0].update(kx_public="ab" * 32), "unregistered_kx"),
])
def test_inconsistent_or_foreign_transcripts_are_refused(world: World, edit, code: str) -> None:
    rec = _transcript(world)
    edit(rec)
    if "params" in rec and code != "bad_transcript":
        _redigest(rec)
    res = world.do(AGG, "secagg.transcript", {"round": 1, "transcript": rec})
    assert (res.ok, res.code) == (False, code), res


def test_tampered_params_without_new_digest_are_refused(world: World) -> None:
    rec = _transcript(world)
    rec["params"]["threshold"] = 3
    res = world.do(AGG, "secagg.transcript", {"round": 1, "transcript": rec})
    assert (res.ok, res.code) == (False, "bad_transcript") and "params_digest" in res.message


def test_transcript_must_match_the_open_round_and_sender_role(world: World) -> None:
    rec = _transcript(world)
    assert world.do(HOSP[0], "secagg.transcript", {"round": 1, "transcript": rec}).code == "unauthorized"
    assert world.do(AGG, "secagg.transcript", {"round": 2, "transcript": rec}).code == "wrong_round"
    assert commit(world, HOSP[0], 1).ok
    assert world.do(AGG, "round.close", {"round": 1}).ok
    late = world.do(AGG, "secagg.transcript", {"round": 1, "transcript": rec})
    assert (late.ok, late.code) == (False, "wrong_round")


def test_revoked_hospital_kx_key_no_longer_counts(world: World) -> None:
    rec = _transcript(world)
    assert world.do(ADMIN, "registry.revoke", {"pubkey": HOSP[1].key_id()}).ok
    res = world.do(AGG, "secagg.transcript", {"round": 1, "transcript": rec})
    assert (res.ok, res.code) == (False, "unregistered_kx")


def test_aborted_round_transcript_is_recorded_with_its_reason(world: World) -> None:
    """A round aborted by the server (here: too few survivors) is recorded with the reason."""
    hosp = _hospitals()
    params = RoundParams(run_id=world.g.chain_id, round=1, participants=(1, 2, 3), threshold=2, bits=32,
                         vector_length=8)
    roster = {h.id: Participant(id=h.id, name=h.name, sign_public=h.signer.public_key(),
                                kx_public=h.kx.public_bytes()) for h in hosp}
    server = SecAggServer(params=params, roster=roster)
    adv = SecAggClient(params=params, me=1, signer=hosp[0].signer, kx_key=hosp[0].kx, roster=roster).advertise()
    server.receive_advertisement(adv)
    with pytest.raises(TooFewSurvivorsError):
        server.close_advertisements()
    rec = server.transcript.to_record()
    assert rec["aborted"].startswith("TooFewSurvivorsError")
    res = world.do(AGG, "secagg.transcript", {"round": 1, "transcript": rec})
    assert (res.ok, res.code) == (True, "recorded"), res
    assert "aborted" in res.message
    assert world.st.query("rounds/1/secagg")["aborted"] == rec["aborted"]


def test_kinds_table_lists_the_secagg_rows() -> None:
    assert txkinds.TX_KINDS["secagg.register_kx"].roles == ("hospital",)
    assert txkinds.TX_KINDS["secagg.transcript"].required == frozenset({"round", "transcript"})
    assert set(txkinds.TX_KINDS["secagg.transcript"].roles) == {"aggregator", "admin"}
