"""Communication accounting per round (paper 3.3 "communication overhead"; 2.1: hospitals send
model weights, never raw data).

TFF 0.87 has no sizing executor, so bytes are computed from what a round actually moves:

* **broadcast**: the global ``ModelWeights`` (trainable and non-trainable tensors) sent to every
  participating hospital, in the dtypes of the client-work computation's weights parameter
  (``client_work.next.type_signature.parameter[1]``);
* **upload**: each hospital's update (the value parameter of ``aggregator.next``) plus its
  scalar weight. Through ``SecureSumFactory`` every value travels as a 32-bit integer
  (``federated_secure_sum_bitwidth`` with bitwidth 32) instead of its float dtype; this counts the
  payload only, not the key agreement / masking overhead of a real secure-aggregation protocol
  (TFF simulates secure sum without cryptography).
* the **centralized** arm instead collects the training images: the bytes of the actual PNG files
  on disk (or, for in-memory data with no files, the raw uint8 pixel bytes, flagged as such).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

SECURE_SUM_BITS = 32


def _type_leaves(t: Any) -> list[tuple[np.dtype, tuple[int, ...]]]:
    """(dtype, shape) of every tensor in a TFF type (federated placements unwrapped)."""
    import tensorflow_federated as tff

    out: list[tuple[np.dtype, tuple[int, ...]]] = []

    def walk(x: Any) -> None:
        if isinstance(x, tff.FederatedType):
            walk(x.member)
        elif isinstance(x, tff.TensorType):
            if x.shape is None or any(d is None for d in x.shape):
                raise ValueError(f"tensor type {x} has an unknown dimension")
            out.append((np.dtype(x.dtype), tuple(int(d) for d in x.shape)))
        elif isinstance(x, tff.StructType):
            for v in x.children():
                walk(v)
        else:
            raise TypeError(f"cannot size TFF type {x}")

    walk(t)
    return out


def type_bytes(t: Any, *, bits_per_value: int | None = None) -> int:
    """Bytes of one value of TFF type ``t`` (optionally with every value at ``bits_per_value``)."""
    total = 0
    for dtype, shape in _type_leaves(t):
        n = int(np.prod(shape)) if shape else 1
        total += n * (bits_per_value // 8 if bits_per_value else dtype.itemsize)
    return total


def arrays_bytes(arrays: Iterable[np.ndarray], *, bits_per_value: int | None = None) -> int:
    total = 0
    for a in arrays:
        a = np.asarray(a)
        total += a.size * (bits_per_value // 8 if bits_per_value else a.dtype.itemsize)
    return total


@dataclass(frozen=True)
class RoundTraffic:
    """Bytes moved per participating hospital in one round."""

    broadcast_per_client: int
    upload_per_client: int

    def round_bytes(self, participants: int) -> tuple[int, int]:
        return self.broadcast_per_client * participants, self.upload_per_client * participants


def process_traffic(algorithm: Any) -> RoundTraffic:
    """Per-client bytes from the type signatures of a :class:`FederatedAlgorithm`'s components."""
    weights_t = algorithm.client_work.next.type_signature.parameter[1]
    value_t = algorithm.aggregator.next.type_signature.parameter[1]
    weight_t = algorithm.aggregator.next.type_signature.parameter[2]
    bits = SECURE_SUM_BITS if algorithm.secure_sum else None
    upload = type_bytes(value_t, bits_per_value=bits) + type_bytes(weight_t, bits_per_value=bits)
    return RoundTraffic(broadcast_per_client=type_bytes(weights_t), upload_per_client=upload)


def check_against_tensors(traffic: RoundTraffic, *, global_weights: Sequence[np.ndarray], update: Sequence[np.ndarray], secure_sum: bool) -> None:
    """Cross-check the type-signature sizes with the tensors actually moved in a round."""
    b = arrays_bytes(global_weights)
    u = arrays_bytes(update, bits_per_value=SECURE_SUM_BITS if secure_sum else None) + 4
    if b != traffic.broadcast_per_client or u != traffic.upload_per_client:
        raise AssertionError(
            f"traffic mismatch: broadcast {b} vs {traffic.broadcast_per_client}, upload {u} vs {traffic.upload_per_client}"
        )


def image_collection_bytes(root: str | os.PathLike[str] | None, images: Sequence[str], *, pixels: Sequence[np.ndarray] = ()) -> tuple[int, str]:
    """Bytes a centralized server must collect: the PNG files on disk (``png_files``), or if the
    files are not available the uint8 pixel bytes of the decoded images (``raw_pixels_uint8``)."""
    if root is not None and images:
        try:
            from bfdl_tff.data.loader import resolve_image_paths

            paths = resolve_image_paths(root, list(images), source="centralized collection")
            return sum(os.path.getsize(p) for p in paths), "png_files"
        except Exception:  # noqa: BLE001 - fall back to pixel bytes, flagged
            pass
    return int(sum(np.asarray(p).size for p in pixels)), "raw_pixels_uint8"


__all__ = [
    "RoundTraffic",
    "SECURE_SUM_BITS",
    "arrays_bytes",
    "check_against_tensors",
    "image_collection_bytes",
    "process_traffic",
    "type_bytes",
]
