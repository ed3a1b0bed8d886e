"""ledger.crypto: Ed25519 (RFC 8032 vectors), verify never raises, canonical JSON."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import crypto

# RFC 8032 section 7.1, TEST 1 and TEST 2.
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]


@pytest.mark.parametrize("seed,pub,msg,sig", RFC8032)
def test_rfc8032_vectors(seed: str, pub: str, msg: str, sig: str) -> None:
    k = crypto.SigningKey.from_seed(bytes.fromhex(seed))
    assert k.public_key().hex() == pub
    assert k.sign(bytes.fromhex(msg)).hex() == sig
    assert crypto.verify(bytes.fromhex(pub), bytes.fromhex(sig), bytes.fromhex(msg))
    bad = bytearray(bytes.fromhex(sig))
    bad[0] ^= 1
    assert not crypto.verify(bytes.fromhex(pub), bytes(bad), bytes.fromhex(msg))
    assert not crypto.verify(bytes.fromhex(pub), bytes.fromhex(sig), bytes.fromhex(msg) + b"\x00")
    assert crypto.key_id(k.public_key()) == pub
    assert crypto.pubkey_from_id(pub) == bytes.fromhex(pub)
    assert crypto.SigningKey.from_seed(k.seed()).public_key() == k.public_key()


def test_signer_protocol_and_generate() -> None:
    k = crypto.SigningKey.generate()
    assert isinstance(k, crypto.Signer)
    assert len(k.public_key()) == 32 and len(k.sign(b"x")) == 64
    assert "SigningKey(pub=" in repr(k) and k.seed().hex() not in repr(k)
    with pytest.raises(ValueError):
        crypto.SigningKey.from_seed(b"short")


@settings(max_examples=200, deadline=None)
@given(pub=st.one_of(st.binary(max_size=40), st.none(), st.integers(), st.text(max_size=5)),
       sig=st.one_of(st.binary(max_size=70), st.none(), st.text(max_size=5)),
       msg=st.one_of(st.binary(max_size=20), st.none(), st.integers()))
def test_verify_never_raises(pub, sig, msg) -> None:
    assert crypto.verify(pub, sig, msg) in (True, False)


def test_verify_rejects_off_curve_and_wrong_key() -> None:
    a, b = crypto.SigningKey.from_seed(bytes(32)), crypto.SigningKey.from_seed(bytes([1]) * 32)
    sig = a.sign(b"m")
    assert crypto.verify(a.public_key(), sig, b"m")
    assert not crypto.verify(b.public_key(), sig, b"m")
    assert not crypto.verify(b"\xff" * 32, sig, b"m")  # not a valid point encoding
    assert not crypto.verify(a.public_key(), bytes(64), b"m")


def test_canonical_json_is_deterministic_and_strict() -> None:
    assert crypto.canonical_json({"b": 1, "a": [1, 2.5, None, True], "c": "é"}) == (
        '{"a":[1,2.5,null,true],"b":1,"c":"é"}'.encode()
    )
    assert crypto.canonical_json({"x": (1, 2)}) == b'{"x":[1,2]}'
    for bad in ({"x": math.nan}, {"x": math.inf}, [-math.inf], {1: "a"}, {"x": b"bytes"}, {"x": {1, 2}},
                {"x": "\ud800"}):
        with pytest.raises(crypto.CanonicalEncodingError):
            crypto.canonical_json(bad)
    assert crypto.sha256(b"").hex().startswith("e3b0c442")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda ch: st.lists(ch, max_size=4) | st.dictionaries(st.text(max_size=6), ch, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(v=st.dictionaries(st.text(max_size=6), json_values, max_size=5))
def test_canonical_json_key_order_independent(v) -> None:
    reordered = dict(reversed(list(v.items())))
    assert crypto.canonical_json(v) == crypto.canonical_json(reordered)


def test_canonical_json_nesting_limit_is_exact() -> None:
    """The fast paths of the type walk keep the 64-level limit exactly (leaves included)."""
    for leaf in ("x", 1, None, True, 1.5, [], {}):
        for depth, ok in ((64, True), (65, False)):
            obj: object = leaf
            for i in range(depth):
                obj = [obj] if i % 2 else {"k": obj}
            if ok:
                crypto.canonical_json(obj)
            else:
                with pytest.raises(crypto.CanonicalEncodingError):
                    crypto.canonical_json(obj)
    for bad in ([[["a", {"k": [1, math.nan]}]]], {"a": {"b": [{2: 1}]}}, ("x", [b"y"]), {"a": [1, {"b": {3}}]}):
        with pytest.raises(crypto.CanonicalEncodingError):
            crypto.canonical_json(bad)
