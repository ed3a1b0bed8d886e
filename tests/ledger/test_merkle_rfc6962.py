"""ledger.merkle against the RFC 6962 / Certificate Transparency reference vectors, plus
properties: every inclusion / consistency proof verifies and tampered ones fail."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle

# Certificate Transparency reference leaves and tree heads (certificate-transparency-go merkle
# tests; RFC 6962 test data).
CT_LEAVES = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                        "606162636465666768696a6b6c6d6e6f"]]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]
CT_CONSISTENCY = [
    (2, 8, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]


def _recursive_mth(leaves: list[bytes]) -> bytes:
    """Literal RFC 6962 definition (largest power of two split), independent of the module."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + _recursive_mth(leaves[:k]) + _recursive_mth(leaves[k:])).digest()


def test_reference_roots() -> None:
    assert merkle.EMPTY_ROOT.hex() == CT_ROOTS[0]
    for n in range(len(CT_LEAVES) + 1):
        assert merkle.merkle_root(CT_LEAVES[:n]).hex() == CT_ROOTS[n]


@pytest.mark.parametrize("index,size,proof", CT_INCLUSION)
def test_reference_inclusion(index: int, size: int, proof: list[str]) -> None:
    got = merkle.inclusion_proof(CT_LEAVES[:size], index)
    assert [p.hex() for p in got] == proof
    assert merkle.verify_inclusion(CT_LEAVES[index], index, size, got, bytes.fromhex(CT_ROOTS[size]))


@pytest.mark.parametrize("m,n,proof", CT_CONSISTENCY)
def test_reference_consistency(m: int, n: int, proof: list[str]) -> None:
    got = merkle.consistency_proof(CT_LEAVES[:n], m)
    assert [p.hex() for p in got] == proof
    assert merkle.verify_consistency(m, n, bytes.fromhex(CT_ROOTS[m]), bytes.fromhex(CT_ROOTS[n]), got)


def test_exhaustive_small_trees_and_tampering() -> None:
    leaves = [bytes([i, i * 7 % 256]) for i in range(33)]
    roots = [merkle.merkle_root(leaves[:n]) for n in range(len(leaves) + 1)]
    for n in range(len(leaves) + 1):
        assert roots[n] == _recursive_mth(leaves[:n])
        for i in range(n):
            proof = merkle.inclusion_proof(leaves[:n], i)
            assert merkle.verify_inclusion(leaves[i], i, n, proof, roots[n])
            assert not merkle.verify_inclusion(leaves[i] + b"x", i, n, proof, roots[n])
            if n > 1:
                assert not merkle.verify_inclusion(leaves[i], (i + 1) % n, n, proof, roots[n])
                assert not merkle.verify_inclusion(leaves[i], i, n, proof[:-1], roots[n])
                assert not merkle.verify_inclusion(leaves[i], i, n, proof + [bytes(32)], roots[n])
                flipped = [bytes([proof[0][0] ^ 1]) + proof[0][1:]] + proof[1:]
                assert not merkle.verify_inclusion(leaves[i], i, n, flipped, roots[n])
        for m in range(n + 1):
            proof = merkle.consistency_proof(leaves[:n], m)
            assert merkle.verify_consistency(m, n, roots[m], roots[n], proof)
            if 0 < m < n:
                assert not merkle.verify_consistency(m, n, roots[m], roots[n], proof[:-1])
                assert not merkle.verify_consistency(m, n, roots[m], roots[n], proof + [bytes(32)])
                assert not merkle.verify_consistency(m, n, roots[m - 1] if m > 1 else bytes(32), roots[n], proof)
                flipped = [bytes([proof[-1][0] ^ 1]) + proof[-1][1:]] + []
                assert not merkle.verify_consistency(m, n, roots[m], roots[n], proof[:-1] + flipped)


def test_malformed_inputs_return_false_and_generation_raises() -> None:
    root = bytes.fromhex(CT_ROOTS[8])
    proof = merkle.inclusion_proof(CT_LEAVES, 5)
    assert not merkle.verify_inclusion(CT_LEAVES[5], 8, 8, proof, root)
    assert not merkle.verify_inclusion(CT_LEAVES[5], -1, 8, proof, root)
    assert not merkle.verify_inclusion(CT_LEAVES[5], 5, 8, "nope", root)  # type: ignore[arg-type]
    assert not merkle.verify_inclusion(CT_LEAVES[5], 5, 8, [b"short"] + proof[1:], root)
    assert not merkle.verify_inclusion(CT_LEAVES[5], 5, 8, proof, root[:31])
    assert not merkle.verify_consistency(8, 6, root, root, [])
    assert merkle.verify_consistency(0, 8, merkle.EMPTY_ROOT, root, [])
    assert not merkle.verify_consistency(0, 8, merkle.EMPTY_ROOT, root, [bytes(32)])
    assert merkle.verify_consistency(4, 4, root, root, []) and not merkle.verify_consistency(4, 4, root, bytes(32), [])
    with pytest.raises(ValueError):
        merkle.inclusion_proof(CT_LEAVES, 8)
    with pytest.raises(ValueError):
        merkle.consistency_proof(CT_LEAVES, 9)


@settings(max_examples=60, deadline=None)
@given(leaves=st.lists(st.binary(max_size=8), min_size=1, max_size=70), data=st.data())
def test_property_proofs_verify_and_tampered_fail(leaves: list[bytes], data) -> None:
    n = len(leaves)
    root = merkle.merkle_root(leaves)
    assert root == _recursive_mth(leaves)
    i = data.draw(st.integers(0, n - 1))
    proof = merkle.inclusion_proof(leaves, i)
    assert merkle.verify_inclusion(leaves[i], i, n, proof, root)
    if proof:
        j = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        bad = list(proof)
        bad[j] = bytes([bad[j][0] ^ (1 << (bit % 8))]) + bad[j][1:]
        assert not merkle.verify_inclusion(leaves[i], i, n, bad, root)
    m = data.draw(st.integers(0, n))
    cproof = merkle.consistency_proof(leaves, m)
    root_m = merkle.merkle_root(leaves[:m])
    assert merkle.verify_consistency(m, n, root_m, root, cproof)
    if cproof:
        j = data.draw(st.integers(0, len(cproof) - 1))
        bad = list(cproof)
        bad[j] = bytes([bad[j][0] ^ 0x80]) + bad[j][1:]
        assert not merkle.verify_consistency(m, n, root_m, root, bad)
    # A different old tree is not a prefix.
    if 0 < m < n:
        other = list(leaves[:m])
        other[0] = other[0] + b"!"
        assert not merkle.verify_consistency(m, n, merkle.merkle_root(other), root, cproof)
