"""PBFT wire format: round trips, signatures, strict decoding, fuzzing (issue 6 "Bad input")."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import messages as M
from ledger.sim import make_keys

KEYS = make_keys(4, 0)
RING = M.KeyRing([k.public_key() for k in KEYS])
H = bytes(range(32))


def _samples():
    pp = M.PrePrepare(3, 7, M.batch_digest(H, 5, 3), H, M.Batch(5, 3, (b"tx1", b"tx2")))
    pp_raw = M.encode(pp, 3, KEYS[3])
    prep = tuple(M.encode(M.Prepare(3, 7, pp.digest), i, KEYS[i]) for i in (0, 1))
    cps = tuple(M.encode(M.Checkpoint(5, H, H), i, KEYS[i]) for i in (0, 1, 2))
    vc = M.ViewChange(4, 5, cps, (M.PreparedProof(pp_raw, prep),))
    return [
        pp, M.Prepare(1, 2, H), M.Commit(1, 2, H, H), M.Checkpoint(10, H, H), vc,
        M.NewView(4, (M.encode(vc, 1, KEYS[1]),), (pp_raw,)), M.StateRequest(10, 3),
        M.StateResponse(10, cps, b"snapshot"), M.Reply(1, 2, H, H, H),
    ]


@pytest.mark.parametrize("body", _samples(), ids=lambda b: type(b).__name__)
def test_round_trip_and_signature(body):
    raw = M.encode(body, 2, KEYS[2])
    env = M.decode(raw)
    assert env.body == body and env.sender == 2
    assert RING.verify_envelope(env)
    # A different claimed sender (spoofing) or one flipped bit fails verification.
    spoofed = M.decode(raw[:4] + (1).to_bytes(2, "big") + raw[6:])
    assert not RING.verify_envelope(spoofed)
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 1
    try:
        env2 = M.decode(bytes(flipped))
    except M.MessageDecodeError:
        return
    assert not RING.verify_envelope(env2)


def test_request_is_unsigned_and_only_request():
    raw = M.encode(M.Request((b"a", b"b")), M.CLIENT_SENDER, None)
    assert M.decode(raw).body.txs == (b"a", b"b")
    with pytest.raises(ValueError):
        M.encode(M.Prepare(1, 1, H), 0, None)


def test_truncations_and_trailing_bytes_rejected():
    for body in _samples():
        raw = M.encode(body, 0, KEYS[0])
        for cut in range(0, len(raw) - 64, max(1, len(raw) // 40)):
            with pytest.raises(M.MessageDecodeError):
                M.decode(raw[:cut])
        with pytest.raises(M.MessageDecodeError):
            M.decode(raw[:-64] + b"\x00" + raw[-64:])


def test_oversized_and_absurd_lengths_rejected():
    with pytest.raises(M.MessageDecodeError):
        M.decode(b"PB\x01\x03" + bytes(80), max_size=50)
    # A list header claiming 2**32-1 items must not allocate or loop.
    raw = b"PB\x01\x01\xff\xff" + b"\xff\xff\xff\xff" + bytes(64)
    with pytest.raises(M.MessageDecodeError):
        M.decode(raw)
    with pytest.raises(M.MessageDecodeError):
        M.decode("not bytes")  # type: ignore[arg-type]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzz_random_bytes_never_crash(data):
    for candidate in (data, b"PB\x01" + data, b"PB\x01" + bytes([data[0] % 12 if data else 2]) + data[1:]):
        try:
            env = M.decode(candidate)
        except M.MessageDecodeError:
            continue
        assert RING.verify_envelope(env) in (True, False)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 8), st.integers(0, 2000), st.integers(0, 255))
def test_fuzz_mutated_valid_frames(which, pos, val):
    body = _samples()[which]
    raw = bytearray(M.encode(body, 1, KEYS[1]))
    raw[pos % len(raw)] = val
    try:
        env = M.decode(bytes(raw))
    except M.MessageDecodeError:
        return
    if bytes(raw) != M.encode(body, 1, KEYS[1]):
        assert not RING.verify_envelope(env) or env.body == body


def test_replica_survives_junk_frames():
    from ledger import pbft
    from ledger.sim import SimCluster, Workload

    w = Workload(0, 2)
    c = SimCluster(4, genesis=w.genesis, seed=0, cfg=pbft.Config(n=4))
    r = c.nodes[1].replica
    for junk in (b"", b"PB", b"PB\x01\x02" + bytes(200), bytes(100), b"PB\x01\x06\x00\x00" + b"\xff" * 90):
        assert r.receive(junk, 0) == []
    assert r.stats.get("malformed", 0) >= 4
