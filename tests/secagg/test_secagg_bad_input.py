"""Bad input: each a typed error with a logged reason; the round aborts and no aggregate is returned."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

from bfdl_tff.secagg.client import ClientState, SecAggClient
from bfdl_tff.secagg.errors import (
    BadKeyError, BadSignatureError, DecryptionError, DoubleRevealError, DuplicateMessageError,
    LateMessageError, MalformedMessageError, MalformedVectorError, ProtocolStateError, QuantizationError, ReplayError,
    TooFewSurvivorsError, UnknownParticipantError,
)
from bfdl_tff.secagg.messages import (
    EncryptedShare, KeyAdvertisement, MaskedInput, ShareKeys, UnmaskRequest, UnmaskResponse,
    decode, encode,
)
from bfdl_tff.secagg.quantize import Quantizer
from bfdl_tff.secagg.server import SecAggServer, ServerState
from bfdl_tff.secagg.simulate import roster_of, run_round
from secagg_helpers import make_params, quantised_inputs


@pytest.fixture
def k3(hospitals10):
    params = make_params(3, threshold=2, n=64)
    _, _, qs = quantised_inputs(3, 64, seed=11)
    return params, hospitals10[:3], qs


def _signer_of(hospitals, i):
    return next(h.signer for h in hospitals if h.id == i)


def _resign(msg, hospitals, params):
    signer = _signer_of(hospitals, msg.sender)
    return dataclasses.replace(msg, signature=signer.sign(msg.signed_payload(params.digest)))


def _expect_abort(params, hospitals, qs, error, match, caplog, **kw):
    caplog.set_level(logging.WARNING, logger="bfdl_tff.secagg")
    with pytest.raises(error, match=match):
        run_round(params, hospitals, qs, **kw)
    assert any("round aborted" in r.getMessage() and error.__name__ in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- masked vectors


def test_masked_vector_of_the_wrong_length_aborts(k3, caplog):
    params, hosp, qs = k3

    def short(stage, msg):
        if stage == "masked" and msg.sender == 2:
            return dataclasses.replace(msg, vector=msg.vector[:-1])
        return msg

    _expect_abort(params, hosp, qs, MalformedVectorError, "length 63 differs", caplog, intercept=short)


def test_masked_vector_outside_the_modulus_aborts(hospitals10, caplog):
    params = make_params(3, threshold=2, n=64, bits=20)
    _, _, qs = quantised_inputs(3, 64, bits=20, seed=12)

    def big(stage, msg):
        if stage == "masked" and msg.sender == 1:
            v = msg.vector.copy()
            v[5] = 1 << 20
            return dataclasses.replace(msg, vector=v)
        return msg

    _expect_abort(params, hospitals10[:3], qs, MalformedVectorError, "outside the modulus 2", caplog, intercept=big)


def test_a_tampered_masked_vector_fails_its_signature(k3, caplog):
    params, hosp, qs = k3

    def flip(stage, msg):
        if stage == "masked" and msg.sender == 3:
            return dataclasses.replace(msg, vector=msg.vector ^ np.uint32(1))
        return msg

    _expect_abort(params, hosp, qs, BadSignatureError, "masked input of 3", caplog, intercept=flip)


def test_client_refuses_to_mask_a_vector_of_the_wrong_shape_or_a_wrapping_quantiser(k3):
    params, hosp, qs = k3
    bad = dict(qs)
    bad[1] = qs[1][:10]
    with pytest.raises(MalformedVectorError, match="quantised input"):
        run_round(params, hosp, bad)
    roster = roster_of(hosp)
    server = SecAggServer(params=params, roster=roster)
    clients = {h.id: SecAggClient(params=params, me=h.id, signer=h.signer, kx_key=h.kx, roster=roster) for h in hosp}
    for c in clients.values():
        server.receive_advertisement(c.advertise())
    adverts = server.close_advertisements()
    for c in clients.values():
        server.receive_shares(c.share_keys(adverts))
    deliveries = server.close_shares()
    with pytest.raises(QuantizationError, match="could wrap"):
        clients[1].masked_update(deliveries[1], np.zeros(64), quantizer=Quantizer(bits=32, clip=1.0, max_summands=2))
    assert clients[1].state is ClientState.ABORTED
    ok = clients[2].masked_update(deliveries[2], np.zeros(64), quantizer=Quantizer(bits=32, clip=1.0, max_summands=3))
    assert clients[2].state is ClientState.MASKED and ok.vector.shape == (64,)


# ---------------------------------------------------------------- shares


def _forge_share(msg):
    if isinstance(msg, ShareKeys) and msg.sender == 2:
        first = msg.shares[0]
        bad = dataclasses.replace(first, signature=bytes(64))
        return dataclasses.replace(msg, shares=(bad, *msg.shares[1:]))
    return msg


def test_share_with_a_bad_signature_is_rejected_by_the_server(k3, caplog):
    params, hosp, qs = k3
    _expect_abort(params, hosp, qs, BadSignatureError, r"share 2->1", caplog,
                  intercept=lambda stage, m: _forge_share(m) if stage == "share" else m)


def test_share_with_a_bad_signature_is_rejected_by_its_recipient(k3, caplog):
    # A server that forwards a forged share: the hospital verifies the sender's signature itself.
    params, hosp, qs = k3

    def forge(stage, msg):
        if stage == "delivery" and msg.recipient == 1:
            s = msg.shares[0]
            forged = dataclasses.replace(s, ciphertext=bytes(len(s.ciphertext)))
            return dataclasses.replace(msg, shares=(forged, *msg.shares[1:]))
        return msg

    _expect_abort(params, hosp, qs, BadSignatureError, "share from 2", caplog, intercept=forge)


def test_share_signed_by_its_sender_but_not_decryptable_is_rejected(k3, caplog):
    # Hospital 2 signs garbage ciphertext: signature fine, AEAD authentication fails at hospital 1.
    params, hosp, qs = k3

    def garbage(stage, msg):
        if stage == "share" and msg.sender == 2:
            s = msg.shares[0]
            s = _resign(dataclasses.replace(s, ciphertext=bytes(len(s.ciphertext))), hosp, params)
            return dataclasses.replace(msg, shares=(s, *msg.shares[1:]))
        return msg

    _expect_abort(params, hosp, qs, DecryptionError, "fails authentication", caplog, intercept=garbage)


def test_replayed_shares_from_another_round_are_rejected(k3, caplog):
    params, hosp, qs = k3
    old: dict[int, ShareKeys] = {}

    def record(stage, msg):
        if stage == "share":
            old[msg.sender] = msg
        return msg

    run_round(params, hosp, qs, intercept=record)
    nxt = dataclasses.replace(params, round=params.round + 1)
    # (a) the whole share message replayed into the next round: caught by the server.
    _expect_abort(nxt, hosp, qs, ReplayError, "round 1, not run 'test-run' round 2", caplog,
                  intercept=lambda stage, m: old[2] if stage == "share" and m.sender == 2 else m)
    # (b) the replayed share relabelled as the current round: its signature no longer verifies.
    def relabel(stage, msg):
        if stage == "delivery" and msg.recipient == 1:
            stale = next(s for s in old[2].shares if s.recipient == 1)
            return dataclasses.replace(msg, shares=tuple(
                dataclasses.replace(stale, round=nxt.round) if s.sender == 2 else s for s in msg.shares))
        return msg

    _expect_abort(nxt, hosp, qs, BadSignatureError, "share from 2", caplog, intercept=relabel)
    # (c) replayed unchanged into a delivery: the recipient sees the other round.
    def stale_in_delivery(stage, msg):
        if stage == "delivery" and msg.recipient == 3:
            stale = next(s for s in old[2].shares if s.recipient == 3)
            return dataclasses.replace(msg, shares=tuple(stale if s.sender == 2 else s for s in msg.shares))
        return msg

    _expect_abort(nxt, hosp, qs, ReplayError, "replayed", caplog, intercept=stale_in_delivery)


# ---------------------------------------------------------------- duplicates, state, survivors


def test_a_hospital_that_sends_twice_aborts_the_round_and_nothing_is_returned(k3, caplog):
    caplog.set_level(logging.WARNING, logger="bfdl_tff.secagg")
    params, hosp, _ = k3
    roster = roster_of(hosp)
    server = SecAggServer(params=params, roster=roster)
    client = SecAggClient(params=params, me=1, signer=hosp[0].signer, kx_key=hosp[0].kx, roster=roster)
    adv = client.advertise()
    server.receive_advertisement(adv)
    with pytest.raises(DuplicateMessageError, match="hospital 1 already sent"):
        server.receive_advertisement(adv)
    assert server.state is ServerState.ABORTED and "DuplicateMessageError" in server.transcript.aborted
    with pytest.raises(ProtocolStateError, match="round aborted"):
        server.finish()
    with pytest.raises(ProtocolStateError, match="round aborted"):
        server.close_advertisements()
    assert "round aborted" in caplog.text


def test_duplicate_masked_input_aborts(k3):
    params, hosp, qs = k3
    seen: list[MaskedInput] = []

    def dup(stage, msg):
        if stage == "masked":
            seen.append(msg)
            if msg.sender == 2:
                return seen[0]  # hospital 1's masked input sent again
        return msg

    with pytest.raises(DuplicateMessageError, match="hospital 1 already sent"):
        run_round(params, hosp, qs, intercept=dup)


def test_fewer_than_t_survivors_abort(k3, hospitals10):
    params, hosp, qs = k3
    with pytest.raises(TooFewSurvivorsError, match="1 hospitals sent masked inputs, fewer than t = 2"):
        run_round(params, hosp, qs, drop_after_shares=[1, 2])
    with pytest.raises(TooFewSurvivorsError, match="1 hospitals sent shares"):
        run_round(params, hosp, qs, drop_after_advertise=[2, 3])
    strict = make_params(3, threshold=3, n=64)
    with pytest.raises(TooFewSurvivorsError, match="answered the unmask request"):
        run_round(strict, hosp, qs, drop_after_confirm=[3])


def test_secagg_plus_aborts_when_a_neighbourhood_runs_out_of_holders(hospitals10):
    params = make_params(10, threshold=3, n=32, neighbours=2)  # 3 holders each, t = 3
    _, _, qs = quantised_inputs(10, 32, seed=13)
    peer = min(params.neighbours_of(5))
    with pytest.raises(TooFewSurvivorsError, match="shares of"):
        run_round(params, hospitals10, qs, drop_after_confirm=[peer])


def test_out_of_order_calls_are_protocol_state_errors(k3):
    params, hosp, _ = k3
    roster = roster_of(hosp)
    server = SecAggServer(params=params, roster=roster)
    with pytest.raises(ProtocolStateError, match="finish not allowed in state collect-advertisements"):
        server.finish()
    client = SecAggClient(params=params, me=1, signer=hosp[0].signer, kx_key=hosp[0].kx, roster=roster)
    with pytest.raises(ProtocolStateError, match="unmask not allowed in state init"):
        client.unmask(UnmaskRequest(params.run_id, params.round, (1, 2), ()))
    assert client.state is ClientState.ABORTED


def test_a_late_masked_input_is_ignored_and_the_round_completes(k3):
    # Hospital 3 is counted as dropped; its masked input arrives after the step closed.
    params, hosp, qs = k3
    roster = roster_of(hosp)
    server = SecAggServer(params=params, roster=roster)
    clients = {h.id: SecAggClient(params=params, me=h.id, signer=h.signer, kx_key=h.kx, roster=roster) for h in hosp}
    for c in clients.values():
        server.receive_advertisement(c.advertise())
    adverts = server.close_advertisements()
    for c in clients.values():
        server.receive_shares(c.share_keys(adverts))
    deliveries = server.close_shares()
    masked = {i: c.masked_input(deliveries[i], qs[i]) for i, c in clients.items()}
    server.receive_masked_input(masked[1])
    server.receive_masked_input(masked[2])
    survivors = server.close_masked_inputs()
    with pytest.raises(LateMessageError, match="after its step closed"):
        server.receive_masked_input(masked[3])
    assert server.state is ServerState.CONFIRM and server.abort_reason is None
    for i in (1, 2):
        server.receive_confirmation(clients[i].confirm_survivors(survivors))
    request = server.close_confirmations()
    for i in (1, 2):
        server.receive_unmask_response(clients[i].unmask(request))
    result = server.finish()
    assert result.survivors == (1, 2) and result.dropped == (3,)
    with pytest.raises(LateMessageError):  # after DONE too: ignored, the result stands
        server.receive_masked_input(masked[3])


def test_a_message_before_its_step_aborts(k3):
    params, hosp, _ = k3
    server = SecAggServer(params=params, roster=roster_of(hosp))
    with pytest.raises(ProtocolStateError, match="receive_unmask_response not allowed"):
        server.receive_unmask_response(UnmaskResponse(params.run_id, params.round, 1, (), ()))
    assert server.state is ServerState.ABORTED


# ---------------------------------------------------------------- unmasking


def test_request_to_reveal_both_shares_of_one_hospital_is_refused_by_the_hospital(k3, caplog):
    params, hosp, qs = k3

    def both(stage, msg):
        if stage == "unmask-request":
            return dataclasses.replace(msg, dropped=(2,))  # 2 is also listed as survivor
        return msg

    _expect_abort(params, hosp, qs, DoubleRevealError, r"listed as survivor and as dropped", caplog, intercept=both)


def test_claiming_a_survivor_dropped_to_one_hospital_is_caught_by_the_consistency_check(k3, caplog):
    # The server tells hospital 1 that 2 dropped (to collect 2's pairwise share from 1 while
    # collecting 2's self-mask share from 3): the survivor list differs from the signed one.
    params, hosp, qs = k3

    def split_view(stage, msg):
        if stage == "unmask-request" and not getattr(split_view, "done", False):
            split_view.done = True
            return dataclasses.replace(msg, survivors=(1, 3), dropped=(2,))
        return msg

    _expect_abort(params, hosp, qs, MalformedMessageError, "differs from the one this hospital confirmed",
                  caplog, intercept=split_view)


def test_response_revealing_both_shares_is_refused_by_the_server(hospitals10, caplog):
    params = make_params(3, threshold=2, n=64)
    _, _, qs = quantised_inputs(3, 64, seed=14)
    hosp = hospitals10[:3]

    def both(stage, msg):
        if stage == "unmask" and isinstance(msg, UnmaskResponse):
            owner, share = msg.self_mask_shares[0]
            return _resign(dataclasses.replace(msg, pairwise_shares=((owner, share),)), hosp, params)
        return msg

    _expect_abort(params, hosp, qs, DoubleRevealError, "reveals both shares", caplog, intercept=both)


def test_unmask_response_with_a_bad_signature_aborts(k3, caplog):
    params, hosp, qs = k3
    forge = lambda stage, m: dataclasses.replace(m, signature=bytes(64)) if stage == "unmask" else m  # noqa: E731
    _expect_abort(params, hosp, qs, BadSignatureError, "unmask response of 1", caplog, intercept=forge)


# ---------------------------------------------------------------- keys and codec


def test_advertisement_with_an_unregistered_kx_key_or_reused_keys_is_rejected(k3, caplog):
    params, hosp, qs = k3

    def swap(stage, msg):
        if stage == "advertise" and msg.sender == 2:
            return _resign(dataclasses.replace(msg, kx_public=hosp[0].kx.public_bytes()), hosp, params)
        return msg

    _expect_abort(params, hosp, qs, BadKeyError, "not its registered one", caplog, intercept=swap)
    first: list[KeyAdvertisement] = []

    def reuse(stage, msg):
        if stage == "advertise":
            first.append(msg)
            if msg.sender == 2:
                return _resign(dataclasses.replace(msg, s_public=first[0].s_public), hosp, params)
        return msg

    _expect_abort(params, hosp, qs, BadKeyError, "reuses an ephemeral key", caplog, intercept=reuse)


def test_message_from_an_unknown_hospital_is_rejected(k3):
    params, hosp, qs = k3

    def stranger(stage, msg):
        if stage == "advertise" and msg.sender == 3:
            return dataclasses.replace(msg, sender=7)
        return msg

    with pytest.raises(UnknownParticipantError, match="hospital 7 is not a participant"):
        run_round(params, hosp, qs, intercept=stranger)


def test_codec_round_trip_and_malformed_bytes():
    share = EncryptedShare("r", 1, 1, 2, b"\x00" * 148, b"\x01" * 64)
    assert decode(encode(share)) == share
    masked = MaskedInput("r", 1, 1, (2, 3), np.arange(5, dtype=np.uint32), b"s" * 64)
    back = decode(encode(masked))
    assert np.array_equal(back.vector, masked.vector) and back.peers == (2, 3) and back.vector.dtype == np.uint32
    with pytest.raises(MalformedMessageError, match="bytes follow"):
        decode(encode(masked)[:-1])
    with pytest.raises(MalformedMessageError, match="not JSON"):
        decode(b"\xff\xfe")
    with pytest.raises(MalformedMessageError, match="not a secure-aggregation message"):
        decode(b'{"kind":"nope"}')
    with pytest.raises(MalformedMessageError, match="missing"):
        decode(b'{"kind":"share","run_id":"r"}')
    with pytest.raises(MalformedMessageError, match="not an integer"):
        decode(encode(share).replace(b'"round":1', b'"round":"1"'))
