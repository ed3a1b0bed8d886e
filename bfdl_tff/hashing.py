"""Canonical hashes of model weights and updates, shared by the round hook, the runner's saved
models and ``bfdl audit verify`` (paper 3.1: "Blockchain records tracked ... each model update
hash").

A list of arrays is serialised as, per array: ``dtype.str`` (e.g. ``<f4``), the shape, and the
C-order little-endian bytes, each length-prefixed; the digest is SHA-256 over that stream, with
an optional salt prefixed (salted commitments hide low-entropy updates from dictionary guesses)."""

from __future__ import annotations

import hashlib
import struct
from typing import Iterable

import numpy as np


def _feed(h: "hashlib._Hash", arrays: Iterable[np.ndarray]) -> None:
    arrays = list(arrays)
    h.update(struct.pack("<Q", len(arrays)))
    for a in arrays:
        a = np.ascontiguousarray(a)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        dt = a.dtype.str.encode()
        h.update(struct.pack("<I", len(dt)) + dt)
        h.update(struct.pack("<I", a.ndim) + b"".join(struct.pack("<Q", d) for d in a.shape))
        b = a.tobytes(order="C")
        h.update(struct.pack("<Q", len(b)))
        h.update(b)


def weights_digest(arrays: Iterable[np.ndarray], *, salt: bytes = b"") -> str:
    """Hex SHA-256 of a list of arrays (model weights or an update), optionally salted."""
    h = hashlib.sha256()
    if salt:
        h.update(b"salt:" + struct.pack("<I", len(salt)) + salt)
    _feed(h, arrays)
    return h.hexdigest()


def file_digest(path: str, *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()
