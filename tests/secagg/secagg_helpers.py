"""Helpers of the secure-aggregation tests (a uniquely named module: no clash with other conftests)."""

from __future__ import annotations

import numpy as np

from bfdl_tff.secagg.params import RoundParams
from bfdl_tff.secagg.quantize import Quantizer


def make_params(k: int, *, threshold: int, n: int = 257, bits: int = 32, round_num: int = 1, **kw) -> RoundParams:
    return RoundParams(run_id="test-run", round=round_num, participants=tuple(range(1, k + 1)),
                       threshold=threshold, bits=bits, vector_length=n, **kw)


def quantised_inputs(k: int, n: int, *, bits: int = 32, seed: int = 0, clip: float = 1.0):
    """Random float updates and their quantisation for hospitals 1..k."""
    rng = np.random.default_rng(seed)
    quant = Quantizer(bits=bits, clip=clip, max_summands=k)
    floats = {i: rng.normal(0, 0.4, n) for i in range(1, k + 1)}
    return quant, floats, {i: quant.quantize(x) for i, x in floats.items()}


def plain_sum(quant: Quantizer, qs, ids):
    total = quant.ring.zeros(next(iter(qs.values())).shape[0])
    for i in ids:
        quant.ring.add_(total, qs[i])
    return quant.ring.reduce(total)


def seeded_entropy(seed: int):
    rng = np.random.default_rng(seed)
    return lambda n: rng.bytes(n)
