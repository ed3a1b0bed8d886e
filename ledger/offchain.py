"""Content-addressed off-chain store for large payloads (paper 3.6: on-chain/off-chain
"IPFS-style" storage, claim C11).

Model checkpoints do not go on the chain: ``put(data)`` writes them under their SHA-256 address
(lowercase hex) and only the address and hash are recorded on-chain (``round.global_model``
``checkpoint_address`` / ``checkpoint_sha256``).  ``get(address)`` re-hashes what it reads and
raises :class:`OffchainIntegrityError` on a mismatch, so a tampered or bit-rotted object is never
returned.  ``cid_v1(data)`` gives the IPFS CIDv1 string of the same bytes as a *raw* block
(multibase base32 ``b``, version 1, codec ``raw`` 0x55, multihash sha2-256 0x12 0x20): the ID an
IPFS node would give the bytes added as a single raw block (no UnixFS chunking).  ``get`` also
accepts such a CID.  Writes are atomic (temp file, fsync, rename).
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from pathlib import Path

from .crypto import is_hex
from .errors import OffchainIntegrityError

__all__ = ["OffchainIntegrityError", "OffchainStore", "address_of", "cid_v1", "cid_to_address"]

_CID_PREFIX = bytes([0x01, 0x55, 0x12, 0x20])


def address_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cid_v1(data: bytes) -> str:
    """CIDv1 (raw codec, sha2-256) of ``data`` in base32 multibase, e.g. ``bafkrei...``."""
    return "b" + base64.b32encode(_CID_PREFIX + hashlib.sha256(data).digest()).decode().lower().rstrip("=")


def cid_to_address(cid: str) -> str:
    if not isinstance(cid, str) or not cid.startswith("b"):
        raise OffchainIntegrityError(f"not a base32 CIDv1: {cid!r}")
    body = cid[1:].upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except Exception:
        raise OffchainIntegrityError(f"not a base32 CIDv1: {cid!r}") from None
    if len(raw) != 36 or raw[:4] != _CID_PREFIX:
        raise OffchainIntegrityError(f"only raw sha2-256 CIDv1 are supported: {cid!r}")
    return raw[4:].hex()


class OffchainStore:
    """Objects under ``<dir>/<aa>/<address>``."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def _normalise(self, address: str) -> str:
        if isinstance(address, str) and address.startswith("b") and not is_hex(address, 32):
            return cid_to_address(address)
        if not is_hex(address, 32):
            raise OffchainIntegrityError(f"malformed address {str(address)[:80]!r}")
        return address

    def path_of(self, address: str) -> Path:
        a = self._normalise(address)
        return self.dir / a[:2] / a

    def put(self, data: bytes) -> str:
        data = bytes(data)
        addr = address_of(data)
        dest = self.path_of(addr)
        if dest.exists():
            return addr
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return addr

    def has(self, address: str) -> bool:
        try:
            return self.path_of(address).exists()
        except OffchainIntegrityError:
            return False

    def get(self, address: str) -> bytes:
        """The object's bytes, verified against the address; ``KeyError`` if absent."""
        p = self.path_of(address)
        a = p.name
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise KeyError(a) from None
        if address_of(data) != a:
            raise OffchainIntegrityError(f"{p}: content does not hash to its address (tampered or corrupt)")
        return data

    def total_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.dir.glob("??/*") if f.is_file())

    def addresses(self) -> list[str]:
        return sorted(f.name for f in self.dir.glob("??/*") if f.is_file() and is_hex(f.name, 32))
