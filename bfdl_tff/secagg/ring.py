"""Vectors in Z_{2^b} and the ChaCha20 mask generator (Bonawitz et al., CCS 2017, section 4).

A :class:`Ring` fixes the bit width ``b`` (8 <= b <= 64). Elements are stored as ``uint32`` when
``b <= 32`` and ``uint64`` otherwise, so numpy's wrapping unsigned arithmetic computes modulo
2^32 / 2^64 and a final ``& (2^b - 1)`` reduces to ``2^b`` (exact: 2^b divides 2^32 or 2^64).
On the wire (:mod:`bfdl_tff.secagg.messages`) an element takes 4 bytes (b <= 32) or 8 bytes,
little-endian.

Masks are expanded from a 32-byte seed by the ChaCha20 stream cipher of ``cryptography``
(key = seed, 128-bit all-zero initial counter/nonce: every seed is used for exactly one stream,
since seeds are derived per run, round and pair, or drawn fresh per round), keystream read as
little-endian words and reduced mod 2^b; uniform on Z_{2^b} because 2^b divides the word range.
TensorFlow's RNG is never used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from bfdl_tff.secagg.errors import MalformedVectorError

SEED_BYTES = 32
_NONCE = bytes(16)
MIN_BITS = 8
MAX_BITS = 64


@dataclass(frozen=True)
class Ring:
    """The ring Z_{2^bits} of masked vectors."""

    bits: int

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not MIN_BITS <= self.bits <= MAX_BITS:
            raise ValueError(f"ring bit width must be an integer in [{MIN_BITS}, {MAX_BITS}], got {self.bits!r}")

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint32) if self.bits <= 32 else np.dtype(np.uint64)

    @property
    def word_bytes(self) -> int:
        return self.dtype.itemsize

    @property
    def modulus(self) -> int:
        return 1 << self.bits

    @property
    def mask(self) -> int:
        return (1 << self.bits) - 1

    def _full_width(self) -> bool:
        return self.bits == 8 * self.word_bytes

    def reduce(self, v: np.ndarray) -> np.ndarray:
        """Reduce (in place) an array of this ring's dtype modulo 2^b and return it."""
        if not self._full_width():
            v &= self.dtype.type(self.mask)
        return v

    def zeros(self, n: int) -> np.ndarray:
        return np.zeros(n, dtype=self.dtype)

    def add_(self, acc: np.ndarray, v: np.ndarray) -> None:
        """``acc += v`` modulo 2^b (wrapping; call :meth:`reduce` once at the end)."""
        np.add(acc, v, out=acc)

    def sub_(self, acc: np.ndarray, v: np.ndarray) -> None:
        """``acc -= v`` modulo 2^b (wrapping; call :meth:`reduce` once at the end)."""
        np.subtract(acc, v, out=acc)

    def prg(self, seed: bytes, n: int) -> np.ndarray:
        """``n`` uniform elements of Z_{2^b} from the ChaCha20 keystream keyed by ``seed``."""
        if not isinstance(seed, (bytes, bytearray)) or len(seed) != SEED_BYTES:
            raise ValueError(f"a mask seed is exactly {SEED_BYTES} bytes")
        nbytes = n * self.word_bytes
        enc = Cipher(algorithms.ChaCha20(bytes(seed), _NONCE), mode=None).encryptor()
        stream = enc.update(bytes(nbytes))
        # frombuffer of immutable bytes is read-only; astype(copy=True) gives a writable array.
        out = np.frombuffer(stream, dtype=self.dtype.newbyteorder("<")).astype(self.dtype)
        return self.reduce(out)

    def check(self, v: object, n: int, *, what: str) -> np.ndarray:
        """Validate a received vector: 1-D, this ring's dtype, length ``n``, elements < 2^b."""
        if not isinstance(v, np.ndarray) or v.ndim != 1:
            raise MalformedVectorError(f"{what}: expected a 1-D numpy array, got {type(v).__name__}")
        if v.dtype != self.dtype:
            raise MalformedVectorError(f"{what}: dtype {v.dtype} is not {self.dtype} (ring Z_2^{self.bits})")
        if v.shape[0] != n:
            raise MalformedVectorError(f"{what}: length {v.shape[0]} differs from the round's vector length {n}")
        if not self._full_width() and v.size and int(v.max()) > self.mask:
            raise MalformedVectorError(
                f"{what}: element {int(v.max())} is outside the modulus 2^{self.bits}"
            )
        return v

    def to_signed(self, v: np.ndarray) -> np.ndarray:
        """Interpret elements as two's-complement b-bit integers (int64)."""
        w = v.astype(np.uint64)
        shift = np.uint64(64 - self.bits)
        return (w << shift).view(np.int64) >> np.int64(64 - self.bits)

    def from_signed(self, q: np.ndarray) -> np.ndarray:
        """Map int64 values to their residues modulo 2^b."""
        w = np.asarray(q, dtype=np.int64).view(np.uint64)
        if self.bits < 64:
            w = w & np.uint64(self.mask)
        return w.astype(self.dtype)
