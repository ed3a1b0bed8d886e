"""ledger.tx: signing domain separation, strict canonical decoding, decoder fuzzing."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import crypto
from ledger.tx import MAX_TX_BYTES, Transaction, TxDecodeError, sign_tx, signing_bytes

KEY = crypto.SigningKey.from_seed(bytes([7]) * 32)
OTHER = crypto.SigningKey.from_seed(bytes([8]) * 32)


def _tx(**kw) -> Transaction:
    payload = kw.pop("payload", {"round": 3, "commitment": "ab" * 32, "num_examples": 120})
    return sign_tx(KEY, kw.pop("kind", "round.commit_update"), payload, nonce=kw.pop("nonce", "n-1"), **kw)


def test_roundtrip_and_hash() -> None:
    t = _tx()
    b = t.encode()
    t2 = Transaction.decode(b)
    assert t2 == t and t2.tx_hash() == t.tx_hash() == crypto.sha256(b)
    assert t2.verify_signature()
    assert t.sender == KEY.key_id()
    assert hash(t2) == hash(t)


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "round.open"},
        {"payload": {"round": 4, "commitment": "ab" * 32, "num_examples": 120}},
        {"nonce": "n-2"},
        {"chain_id": "other-chain"},
        {"sender": OTHER.key_id()},
    ],
)
def test_signature_is_domain_separated(change: dict) -> None:
    t = _tx()
    d = t.to_dict()
    d.update({k: v for k, v in change.items()})
    forged = Transaction.from_dict(d)
    assert not forged.verify_signature()


def test_signature_bit_flip_fails() -> None:
    t = _tx()
    sig = bytearray(t.signature)
    sig[10] ^= 4
    bad = Transaction(t.kind, t.sender, t.payload, t.nonce, bytes(sig), t.chain_id)
    assert not bad.verify_signature()


def _enc(d: dict) -> bytes:
    return json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_strict_decode_rejections() -> None:
    good = _tx().to_dict()
    cases = []
    for k in list(good):
        d = dict(good)
        del d[k]
        cases.append(_enc(d))  # missing field
    cases.append(_enc({**good, "extra": 1}))
    cases.append(_enc({**good, "v": 2}))
    cases.append(_enc({**good, "v": True}))
    cases.append(_enc({**good, "sender": good["sender"].upper()}))
    cases.append(_enc({**good, "sender": good["sender"][:-2]}))
    cases.append(_enc({**good, "sig": good["sig"][:-2]}))
    cases.append(_enc({**good, "kind": "Round.Open"}))
    cases.append(_enc({**good, "kind": "noaction"}))
    cases.append(_enc({**good, "nonce": ""}))
    cases.append(_enc({**good, "nonce": "has space"}))
    cases.append(_enc({**good, "payload": [1, 2]}))
    cases.append(_enc({**good, "payload": {"x": 2**64}}))
    cases.append(_enc({**good, "chain_id": ""}))
    deep: dict = {}
    cur = deep
    for _ in range(40):
        cur["a"] = {}
        cur = cur["a"]
    cases.append(_enc({**good, "payload": deep}))
    canon = _tx().encode()
    cases.append(canon.replace(b'"kind"', b' "kind"'))  # whitespace: not canonical
    cases.append(canon[:-1] + b',"kind":"round.open"}')  # duplicate key
    cases.append(canon.replace(b'"num_examples":120', b'"num_examples":NaN'))
    cases.append(canon.replace(b'"num_examples":120', b'"num_examples":1e999'))
    cases.append(canon.replace(b'"num_examples":120', b'"num_examples":1.2e2'))  # non-canonical float
    cases.append(b"\xff\xfe" + canon)
    cases.append(canon.replace(b'"nonce":"n-1"', b'"nonce":"n-1","x":"\\ud800"'))
    cases.append(_enc({**good, "payload": {"s": "\\ud800"}}).replace(b"\\\\ud800", b"\\ud800"))
    cases.append(b"[" * 100000)
    cases.append(b"")
    cases.append(b"null")
    cases.append(canon[: len(canon) // 2])  # truncated
    for c in cases:
        with pytest.raises(TxDecodeError):
            Transaction.decode(c)
    with pytest.raises(TxDecodeError):
        Transaction.decode("a string")  # type: ignore[arg-type]


def test_size_limit() -> None:
    big = sign_tx(KEY, "metrics.record", {"round": 1, "metrics": {"blob": "x" * 60000}}, nonce="a")
    assert len(big.encode()) <= MAX_TX_BYTES
    assert Transaction.decode(big.encode()) == big
    with pytest.raises(TxDecodeError):
        sign_tx(KEY, "metrics.record", {"round": 1, "metrics": {"blob": "x" * MAX_TX_BYTES}}, nonce="a")
    with pytest.raises(TxDecodeError, match="exceeds"):
        Transaction.decode(b" " * (MAX_TX_BYTES + 1))


def test_sign_tx_validates() -> None:
    with pytest.raises(TxDecodeError):
        sign_tx(KEY, "bad kind", {})
    with pytest.raises(TxDecodeError):
        sign_tx(KEY, "round.open", {"x": float("nan")})
    t1, t2 = sign_tx(KEY, "round.open", {"round": 1}), sign_tx(KEY, "round.open", {"round": 1})
    assert t1.nonce != t2.nonce and t1.tx_hash() != t2.tx_hash()


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=600))
def test_fuzz_random_bytes(data: bytes) -> None:
    try:
        Transaction.decode(data)
    except TxDecodeError:
        pass


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(st.tuples(st.sampled_from(["flip", "del", "ins", "trunc"]), st.integers(0, 10**6),
                           st.integers(0, 255)), min_size=1, max_size=4)
)
def test_fuzz_mutated_valid_encodings(ops) -> None:
    t = _tx()
    b = bytearray(t.encode())
    for op, pos, val in ops:
        if not b:
            break
        p = pos % len(b)
        if op == "flip":
            b[p] ^= (val or 1)
        elif op == "del":
            del b[p]
        elif op == "ins":
            b.insert(p, val)
        else:
            del b[p:]
    try:
        d = Transaction.decode(bytes(b))
    except TxDecodeError:
        return
    # If a mutation still decodes it is a different canonical transaction; its signature must
    # not verify unless it is byte-identical to the original.
    if bytes(b) != t.encode():
        assert d.tx_hash() != t.tx_hash()
        assert not d.verify_signature()


json_leaf = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(
    allow_nan=False, allow_infinity=False) | st.text(max_size=10)


@settings(max_examples=150, deadline=None)
@given(payload=st.dictionaries(st.text(max_size=8), st.recursive(
    json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=10), max_size=6))
def test_any_json_payload_roundtrips(payload) -> None:
    t = sign_tx(KEY, "metrics.record", payload, nonce="p")
    d = Transaction.decode(t.encode())
    assert d == t and d.verify_signature()
    # The signed bytes derived from the cached canonical encoding are exactly the documented ones.
    want = signing_bytes(t.chain_id, t.kind, t.sender, payload, "p")
    assert d.signing_bytes() == t.signing_bytes() == want
    assert d.encode() == t.encode() == crypto.canonical_json(t.to_dict())


def test_signing_bytes_from_encoding_match_the_definition() -> None:
    for t in (_tx(), _tx(chain_id="other-chain.1"), _tx(payload={"é": ["\u2028", 1.5, None]}, nonce="x" * 128)):
        d = Transaction.decode(t.encode())
        for x in (t, d):
            assert x.signing_bytes() == signing_bytes(x.chain_id, x.kind, x.sender, x.payload, x.nonce)
            assert x.signing_bytes().startswith(b"bfdl-tx-v1\x00") and b'"sig"' not in x.signing_bytes()
        assert d.verify_signature()
    # A signature over other bytes (another nonce) fails even though the encodings share a prefix.
    t = _tx(nonce="n-1")
    forged = Transaction(t.kind, t.sender, t.payload, "n-2", t.signature, t.chain_id)
    assert not Transaction.decode(forged.encode()).verify_signature()


any_json = st.recursive(json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                        max_leaves=6)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=st.fixed_dictionaries({}, optional={k: any_json for k in
                                                  ["v", "chain_id", "kind", "sender", "payload", "nonce", "sig", "zz"]}),
       keep=st.sets(st.sampled_from(["v", "chain_id", "kind", "sender", "payload", "nonce", "sig"])))
def test_fuzz_structured_objects(fields, keep) -> None:
    """Objects with the right shape but arbitrary values (mixed with valid ones) never crash."""
    base = _tx().to_dict()
    obj = {**{k: base[k] for k in keep}, **fields}
    try:
        raw = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    except (ValueError, UnicodeEncodeError):
        return
    try:
        t = Transaction.decode(raw)
    except TxDecodeError:
        return
    assert t.encode() == raw


def test_block_body_with_unencodable_string_is_rejected() -> None:
    from ledger.block import Block, BlockDecodeError, BlockHeader

    d = _tx().to_dict()
    d["payload"] = {"s": "\ud800"}  # a lone surrogate survives json.loads but has no UTF-8 form
    with pytest.raises(TxDecodeError):
        Transaction.from_dict(d)
    hdr = BlockHeader(1, bytes(32), bytes(32), bytes(32), 0, 0, 0)
    with pytest.raises(TxDecodeError):
        Block.from_parts(hdr, {"txs": [d], "results": [[True, "ok", ""]]})
    assert issubclass(BlockDecodeError, TxDecodeError)
