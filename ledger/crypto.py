"""Signatures, hashing and canonical encoding for the B-FDL ledger (paper 2.1, 3.4).

The paper states that "contributor signatures" and "model-update hash commitments" are logged
on-chain.  This module provides the primitives used for both:

* Ed25519 (RFC 8032) through the ``cryptography`` package.  Public keys are 32 raw bytes and
  identified on the ledger by their lowercase hex (``key_id``).  ``verify`` never raises: any
  malformed key, signature or message type simply yields ``False`` (inputs come from the network).
* ``Signer``: a structural protocol (``public_key() -> bytes``, ``sign(msg) -> bytes``) so that a
  key held in Vault/OpenBao transit can sign ledger transactions without exposing the private key.
* ``canonical_json``: the one deterministic byte encoding used for every hashed or signed object
  (sorted keys, no whitespace, UTF-8, no NaN/Infinity, only ``str`` keys, only JSON types).  Two
  replicas that hold equal objects always produce identical bytes, hence identical hashes.
* ``sha256``.

No TensorFlow import here: the ledger package is independent of the learning stack.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import CanonicalEncodingError

__all__ = [
    "PUBLIC_KEY_BYTES",
    "SIGNATURE_BYTES",
    "CanonicalEncodingError",
    "Signer",
    "SigningKey",
    "canonical_json",
    "key_id",
    "pubkey_from_id",
    "sha256",
    "verify",
]

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
SEED_BYTES = 32


@runtime_checkable
class Signer(Protocol):
    """Anything that can sign ledger messages with an Ed25519 key (local key or Vault transit)."""

    def public_key(self) -> bytes:  # 32 raw bytes
        ...

    def sign(self, msg: bytes) -> bytes:  # 64-byte Ed25519 signature
        ...


class SigningKey:
    """A local Ed25519 private key (implements :class:`Signer`)."""

    __slots__ = ("_sk", "_pub")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._sk = private_key
        self._pub = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> "SigningKey":
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> "SigningKey":
        """Deterministic key from a 32-byte seed (RFC 8032 private key)."""
        if not isinstance(seed, (bytes, bytearray)) or len(seed) != SEED_BYTES:
            raise ValueError(f"an Ed25519 seed is exactly {SEED_BYTES} bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(bytes(seed)))

    @classmethod
    def random_seed(cls) -> bytes:
        return os.urandom(SEED_BYTES)

    def seed(self) -> bytes:
        """The 32-byte private seed (for local keystores only)."""
        return self._sk.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    def public_key(self) -> bytes:
        return self._pub

    def key_id(self) -> str:
        return self._pub.hex()

    def sign(self, msg: bytes) -> bytes:
        return self._sk.sign(bytes(msg))

    def __repr__(self) -> str:  # never print the private key
        return f"SigningKey(pub={self._pub.hex()[:16]}...)"


def verify(pub: Any, sig: Any, msg: Any) -> bool:
    """True iff ``sig`` is a valid Ed25519 signature of ``msg`` under the raw public key ``pub``.

    Never raises: wrong types, wrong lengths, points not on the curve and bad signatures all give
    ``False``.
    """
    try:
        if not isinstance(pub, (bytes, bytearray)) or len(pub) != PUBLIC_KEY_BYTES:
            return False
        if not isinstance(sig, (bytes, bytearray)) or len(sig) != SIGNATURE_BYTES:
            return False
        if not isinstance(msg, (bytes, bytearray, memoryview)):
            return False
        Ed25519PublicKey.from_public_bytes(bytes(pub)).verify(bytes(sig), bytes(msg))
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False
    except Exception:  # pragma: no cover - defensive: a verifier must not crash a replica
        return False


def key_id(pub: bytes) -> str:
    """The ledger identifier of a public key: lowercase hex of the 32 raw bytes."""
    if not isinstance(pub, (bytes, bytearray)) or len(pub) != PUBLIC_KEY_BYTES:
        raise ValueError(f"an Ed25519 public key is exactly {PUBLIC_KEY_BYTES} bytes")
    return bytes(pub).hex()


def pubkey_from_id(kid: str) -> bytes:
    """Inverse of :func:`key_id` (strict: 64 lowercase hex characters)."""
    if not is_hex(kid, PUBLIC_KEY_BYTES):
        raise ValueError("a key id is 64 lowercase hex characters")
    return bytes.fromhex(kid)


_HEX = frozenset("0123456789abcdef")


def is_hex(s: Any, nbytes: int) -> bool:
    """True iff ``s`` is a ``str`` of exactly ``2*nbytes`` lowercase hex characters."""
    return isinstance(s, str) and len(s) == 2 * nbytes and _HEX.issuperset(s)


def sha256(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


_LEAF_TYPES = frozenset({str, int, bool, type(None)})


def _check(obj: Any, depth: int) -> None:
    if depth > 64:
        raise CanonicalEncodingError("nesting deeper than 64 levels")
    if obj is None or isinstance(obj, (bool, str, int)):
        return
    # Fast paths (same verdicts): exact-type leaves (str, int, bool, None) are accepted without a
    # recursive call; anything else (floats, containers, subclasses) takes the general path below.
    # Only below depth 64, so that a leaf nested too deep is still refused exactly as before.
    t = type(obj) if depth < 64 else None
    if t is dict:
        leaf = _LEAF_TYPES
        for k, v in obj.items():
            if type(k) is not str and not isinstance(k, str):
                raise CanonicalEncodingError(f"non-string key {k!r}")
            if type(v) not in leaf:
                _check(v, depth + 1)
        return
    if t is list or t is tuple:
        leaf = _LEAF_TYPES
        for v in obj:
            if type(v) not in leaf:
                _check(v, depth + 1)
        return
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise CanonicalEncodingError(f"non-finite float {obj!r} has no canonical encoding")
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise CanonicalEncodingError(f"non-string key {k!r}")
            _check(v, depth + 1)
        return
    if isinstance(obj, (list, tuple)):
        for v in obj:
            _check(v, depth + 1)
        return
    raise CanonicalEncodingError(f"type {type(obj).__name__} is not canonically encodable")


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, ``,``/``:`` separators, UTF-8, finite numbers.

    Tuples encode as lists.  Floats use Python's shortest round-trip ``repr`` (identical on every
    IEEE-754 platform).  Raises :class:`CanonicalEncodingError` for NaN/Infinity, non-``str`` keys
    and non-JSON types (bytes must be hex-encoded by the caller).
    """
    _check(obj, 0)
    return _canonical_dumps(obj)


def _canonical_dumps(obj: Any) -> bytes:
    """``canonical_json`` without the type walk, for objects a strict validator already checked
    (JSON types only, ``str`` keys, finite floats, bounded nesting: ``tx.Transaction.from_dict``).
    Same bytes as :func:`canonical_json` for every such object."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise CanonicalEncodingError(f"string is not valid Unicode: {exc}") from None
