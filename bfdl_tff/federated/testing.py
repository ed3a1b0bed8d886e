"""In-memory toy federations for tests and benchmarks (not the paper's data, never reported as
results): each finding ``j`` of 14 adds a faint bright square at its own position of a 4x4 grid,
so a small CNN can learn every finding; hospitals differ in size (``n_k``) and prevalence."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def toy_image_set(n: int, *, size: int, rng: np.random.Generator, prevalence: float = 0.25, start_id: int = 0):
    from bfdl_tff.data.loader import ImageSet

    y = (rng.random((n, 14)) < prevalence).astype(np.float32)
    x = rng.normal(0.35, 0.08, size=(n, size, size, 1)).astype(np.float32)
    cell = size // 4
    half = max(1, cell // 2)
    for j in range(14):
        r, c = divmod(j, 4)
        r0, c0 = r * cell + (cell - half) // 2, c * cell + (cell - half) // 2
        x[y[:, j] == 1, r0 : r0 + half, c0 : c0 + half, 0] += 0.4
    x = np.clip(x, 0.0, 1.0)
    ids = np.arange(start_id, start_id + n, dtype=np.int64)
    return ImageSet(images=[f"{i:08d}_000.png" for i in ids], patient_ids=ids, x=x, y=y, mask=None)


def toy_federation(
    sizes: Sequence[int] = (24, 40, 56),
    *,
    size: int = 16,
    n_val: int = 8,
    n_test: int = 64,
    seed: int = 0,
):
    """A :class:`bfdl_tff.federated.inputs.FederationData` with ``len(sizes)`` hospitals."""
    from bfdl_tff.federated.inputs import FederationData

    rng = np.random.default_rng(seed)
    names = [f"hospital_{chr(ord('a') + i)}" for i in range(len(sizes))]
    train, val = {}, {}
    nid = 0
    for k, (name, n) in enumerate(zip(names, sizes)):
        train[name] = toy_image_set(n, size=size, rng=rng, prevalence=0.2 + 0.05 * k, start_id=nid)
        nid += n
        val[name] = toy_image_set(n_val, size=size, rng=rng, prevalence=0.2 + 0.05 * k, start_id=nid)
        nid += n_val
    test = toy_image_set(n_test, size=size, rng=rng, start_id=nid)
    return FederationData(names=names, train=train, val=val, test=test, root=None, synthetic=True)


__all__ = ["toy_federation", "toy_image_set"]
