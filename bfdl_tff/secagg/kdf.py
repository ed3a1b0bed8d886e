"""Key derivation, share encryption and signature payloads (Bonawitz et al. 2017, section 4).

* :func:`binding` - an unambiguous (length-prefixed, typed) byte encoding of a tuple of fields;
  every HKDF ``info``, AEAD associated data and signed payload is a binding that starts with a
  domain label, so no value of one kind can be mistaken for another.
* :func:`pair_mask_seed` - ``HKDF-SHA256(ECDH(s_u, s_v), info = (run, round, min(u,v),
  max(u,v)))``: the 32-byte ChaCha20 seed of the pairwise mask of hospitals u and v.
* :func:`share_key` - ``HKDF-SHA256(ECDH(c_u, c_v) || ECDH(kx_u, kx_v), info = (params, run,
  round, pair))``: the ChaCha20-Poly1305 key that encrypts Shamir shares between u and v. The
  ephemeral part gives forward secrecy (the server stores the ciphertexts); the long-term part
  binds the channel to the kx keys registered for u and v.
"""

from __future__ import annotations

import hashlib
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bfdl_tff.secagg.errors import DecryptionError

DOMAIN = b"bfdl-tff/secagg/v1"
KEY_BYTES = 32


def binding(label: str, *fields: object) -> bytes:
    """Typed, length-prefixed encoding of ``(DOMAIN, label, *fields)``.

    Supported field types: ``bytes``, ``str``, ``int`` (signed, any size), and tuples/lists of
    those (encoded recursively)."""
    out = bytearray()
    for value in (DOMAIN, label, *fields):
        out += _encode_field(value)
    return bytes(out)


def _encode_field(value: object) -> bytes:
    if isinstance(value, bool):
        raise TypeError("binding does not encode bool (use int)")
    if isinstance(value, (bytes, bytearray)):
        tag, body = b"b", bytes(value)
    elif isinstance(value, str):
        tag, body = b"s", value.encode("utf-8")
    elif isinstance(value, int):
        tag, body = b"i", value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True)
    elif isinstance(value, (tuple, list)):
        tag, body = b"l", b"".join(_encode_field(v) for v in value)
    else:
        raise TypeError(f"binding cannot encode {type(value).__name__}")
    return tag + struct.pack(">Q", len(body)) + body


def _hkdf(ikm: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=DOMAIN, info=info).derive(ikm)


def pair_mask_seed(shared_secret: bytes, *, run_id: str, round_num: int, u: int, v: int) -> bytes:
    """Seed of the pairwise mask of ``u`` and ``v`` (symmetric in u, v)."""
    lo, hi = sorted((u, v))
    return _hkdf(shared_secret, binding("pair-mask", run_id, round_num, lo, hi))


def share_key(
    ephemeral_secret: bytes, static_secret: bytes, *, params_digest: bytes, run_id: str, round_num: int, u: int, v: int
) -> bytes:
    """AEAD key for the shares exchanged between ``u`` and ``v`` in this round."""
    lo, hi = sorted((u, v))
    info = binding("share-key", params_digest, run_id, round_num, lo, hi)
    return _hkdf(ephemeral_secret + static_secret, info)


def _nonce(sender: int, recipient: int) -> bytes:
    # One message per direction per (round-bound) key, so (sender, recipient) is a unique nonce.
    return struct.pack(">II", sender, recipient) + bytes(4)


def share_aad(*, params_digest: bytes, run_id: str, round_num: int, sender: int, recipient: int) -> bytes:
    return binding("share", params_digest, run_id, round_num, sender, recipient)


def encrypt_share(key: bytes, plaintext: bytes, *, sender: int, recipient: int, aad: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(_nonce(sender, recipient), plaintext, aad)


def decrypt_share(key: bytes, ciphertext: bytes, *, sender: int, recipient: int, aad: bytes) -> bytes:
    try:
        return ChaCha20Poly1305(key).decrypt(_nonce(sender, recipient), ciphertext, aad)
    except InvalidTag:
        raise DecryptionError(
            f"encrypted share from hospital {sender} to {recipient} fails authentication "
            "(tampered, wrong round/run, or wrong keys)"
        ) from None


def self_mask_commitment(seed: bytes, *, run_id: str, round_num: int, owner: int) -> bytes:
    """SHA-256 commitment to a self-mask seed; lets the server check its reconstruction."""
    return hashlib.sha256(binding("self-mask-commit", run_id, round_num, owner, seed)).digest()


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
