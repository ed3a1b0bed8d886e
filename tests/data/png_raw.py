"""A minimal PNG writer for the data tests: any bit depth / colour type, including the ones PIL
cannot write (16-bit RGB / RGBA / gray+alpha, 2- and 4-bit gray)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _row_bytes(row: np.ndarray, bit_depth: int) -> bytes:
    if bit_depth == 16:
        return row.astype(">u2").tobytes()
    if bit_depth == 8:
        return row.astype(np.uint8).tobytes()
    per = 8 // bit_depth
    vals = row.astype(np.uint8).ravel()
    vals = np.concatenate([vals, np.zeros((-len(vals)) % per, np.uint8)]).reshape(-1, per)
    shifts = np.arange(per - 1, -1, -1, dtype=np.uint8) * bit_depth
    return (vals << shifts).sum(axis=1).astype(np.uint8).tobytes()


def write_png(path: Path, pixels: np.ndarray, *, bit_depth: int, color_type: int,
              palette: np.ndarray | None = None) -> Path:
    """``pixels``: [H, W] (gray / palette index) or [H, W, C] samples in the bit depth's range."""
    px = pixels if pixels.ndim == 3 else pixels[..., None]
    h, w, c = px.shape
    assert c == CHANNELS[color_type]
    raw = b"".join(b"\x00" + _row_bytes(px[r].reshape(-1), bit_depth) for r in range(h))
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0))
    if color_type == 3:
        assert palette is not None
        out += _chunk(b"PLTE", palette.astype(np.uint8).tobytes())
    out += _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out)
    return path
