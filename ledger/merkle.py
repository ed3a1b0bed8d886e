"""RFC 6962 / RFC 9162 Merkle hash trees (Certificate Transparency), paper 3.4 and claim C7.

The paper says Merkle roots are compared across nodes to stop replay and tampering.  Every block
header carries the root of the tree over its transactions (leaf data = ``tx.tx_hash()``), and a
client receipt carries an inclusion proof, so any party holding only a block header can check
that a transaction is in the block.

Definitions (RFC 9162 section 2.1):

* ``MTH({}) = SHA-256()`` (the empty-tree hash ``e3b0c442...``);
* ``MTH({d0}) = SHA-256(0x00 || d0)`` (leaf hash);
* ``MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))`` with ``k`` the largest power of two
  strictly smaller than ``n``.

``merkle_root``, ``inclusion_proof`` and ``consistency_proof`` take the list of leaf *data*
(bytes); the verifiers take the leaf data too (``verify_inclusion``) or leaf hash
(``verify_inclusion_hash``).  Verification follows the iterative algorithms of RFC 9162 2.1.3.2
and 2.1.4.2 and never raises on malformed input (returns ``False``).  Proof generation raises
``ValueError`` on out-of-range indices.
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

__all__ = [
    "EMPTY_ROOT",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "merkle_root",
    "node_hash",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
    "verify_inclusion_hash",
]

HASH_LEN = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + bytes(data)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """Tree head from leaf hashes, bottom-up.

    Pairing left to right and promoting an unpaired last node unchanged yields exactly the
    largest-power-of-two split of RFC 6962 (checked against the recursive definition in tests).
    """
    level = list(hashes)
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf data (each leaf is hashed with the 0x00 prefix)."""
    return root_from_leaf_hashes([leaf_hash(d) for d in leaves])


def _mth(hashes: Sequence[bytes]) -> bytes:
    return root_from_leaf_hashes(hashes)


def _path(m: int, hashes: Sequence[bytes]) -> list[bytes]:
    n = len(hashes)
    if n <= 1:
        return []
    k = _split(n)
    if m < k:
        return _path(m, hashes[:k]) + [_mth(hashes[k:])]
    return _path(m - k, hashes[k:]) + [_mth(hashes[:k])]


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Audit path PATH(index, D[n]) for leaf ``index`` of the tree over all ``leaves``."""
    n = len(leaves)
    if not isinstance(index, int) or not 0 <= index < n:
        raise ValueError(f"leaf index {index} out of range for a tree of {n} leaves")
    return _path(index, [leaf_hash(d) for d in leaves])


def _subproof(m: int, hashes: Sequence[bytes], complete: bool) -> list[bytes]:
    n = len(hashes)
    if m == n:
        return [] if complete else [_mth(hashes)]
    k = _split(n)
    if m <= k:
        return _subproof(m, hashes[:k], complete) + [_mth(hashes[k:])]
    return _subproof(m - k, hashes[k:], False) + [_mth(hashes[:k])]


def consistency_proof(leaves: Sequence[bytes], m: int) -> list[bytes]:
    """PROOF(m, D[n]): proves the tree of the first ``m`` leaves is a prefix of the full tree."""
    n = len(leaves)
    if not isinstance(m, int) or not 0 <= m <= n:
        raise ValueError(f"old size {m} out of range for a tree of {n} leaves")
    if m == 0 or m == n:
        return []
    return _subproof(m, [leaf_hash(d) for d in leaves], True)


def _is_hash(h: Any) -> bool:
    return isinstance(h, (bytes, bytearray)) and len(h) == HASH_LEN


def _proof_ok(proof: Any) -> bool:
    return isinstance(proof, (list, tuple)) and all(_is_hash(p) for p in proof)


def verify_inclusion_hash(leaf_h: bytes, index: int, n: int, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2: verify an inclusion proof given the leaf *hash*."""
    try:
        if not (_is_hash(leaf_h) and _is_hash(root) and _proof_ok(proof)):
            return False
        if not (isinstance(index, int) and isinstance(n, int)) or isinstance(index, bool):
            return False
        if not 0 <= index < n:
            return False
        fn, sn = index, n - 1
        r = bytes(leaf_h)
        for p in proof:
            p = bytes(p)
            if sn == 0:
                return False
            if fn & 1 or fn == sn:
                r = node_hash(p, r)
                if not fn & 1:
                    while fn & 1 == 0 and fn != 0:
                        fn >>= 1
                        sn >>= 1
            else:
                r = node_hash(r, p)
            fn >>= 1
            sn >>= 1
        return sn == 0 and r == bytes(root)
    except Exception:  # pragma: no cover - defensive
        return False


def verify_inclusion(leaf: bytes, index: int, n: int, proof: Sequence[bytes], root: bytes) -> bool:
    """Verify that leaf *data* ``leaf`` is at ``index`` in the tree of size ``n`` with head ``root``."""
    if not isinstance(leaf, (bytes, bytearray)):
        return False
    return verify_inclusion_hash(leaf_hash(leaf), index, n, proof, root)


def verify_consistency(m: int, n: int, root_m: bytes, root_n: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 2.1.4.2: verify that the tree of size ``m`` (head ``root_m``) is a prefix of the
    tree of size ``n`` (head ``root_n``)."""
    try:
        if not (_is_hash(root_m) and _is_hash(root_n) and _proof_ok(proof)):
            return False
        if not (isinstance(m, int) and isinstance(n, int)) or isinstance(m, bool) or isinstance(n, bool):
            return False
        if not 0 <= m <= n:
            return False
        root_m, root_n = bytes(root_m), bytes(root_n)
        proof = [bytes(p) for p in proof]
        if m == n:
            return len(proof) == 0 and root_m == root_n
        if m == 0:
            # The empty tree is a prefix of every tree; the proof is empty.
            return len(proof) == 0 and root_m == EMPTY_ROOT
        if not proof:
            return False
        if m & (m - 1) == 0:  # m is an exact power of two: prepend first_hash
            proof = [root_m] + proof
        fn, sn = m - 1, n - 1
        while fn & 1:
            fn >>= 1
            sn >>= 1
        fr = sr = proof[0]
        for c in proof[1:]:
            if sn == 0:
                return False
            if fn & 1 or fn == sn:
                fr = node_hash(c, fr)
                sr = node_hash(c, sr)
                if not fn & 1:
                    while fn & 1 == 0 and fn != 0:
                        fn >>= 1
                        sn >>= 1
            else:
                sr = node_hash(sr, c)
            fn >>= 1
            sn >>= 1
        return fr == root_m and sr == root_n and sn == 0
    except Exception:  # pragma: no cover - defensive
        return False
