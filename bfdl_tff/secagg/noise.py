"""Distributed Gaussian noise for client-level DP under masking (paper 3.5; docs/secagg.md).

With client-level DP-FedAvg, TFF adds the Gaussian noise ``N(0, (z C)^2)`` once, on the server,
to the sum of clipped updates. Under masking the server only learns the sum, and noise it adds
after unmasking would not protect the sum from the server itself. So the noise is distributed:
each hospital adds ``N(0, sigma^2 / m)`` to its clipped update before quantising and masking, and
the sum of ``m`` such contributions carries exactly ``N(0, sigma^2)``.

``m = contributors``: ``K`` calibrates for a round where every hospital survives; a dropout leaves
``(K - d) / K`` of the variance. Calibrating with ``m = t`` (the fewest survivors a round can
complete with) keeps ``sigma^2`` in every completed round, at ``K / t`` times more noise when all
survive. Sample-level DP-SGD (the project's default, ``privacy.mode: sample``) needs none of
this: its noise is added inside each hospital's training, before masking.
"""

from __future__ import annotations

import math

import numpy as np


def distributed_noise_stddev(central_stddev: float, *, contributors: int) -> float:
    """Per-hospital standard deviation ``sigma / sqrt(m)`` so that m contributions sum to ``sigma``."""
    if not (central_stddev >= 0 and math.isfinite(central_stddev)):
        raise ValueError(f"central noise stddev must be finite and >= 0, got {central_stddev!r}")
    if not isinstance(contributors, int) or contributors < 1:
        raise ValueError(f"contributors must be a positive integer, got {contributors!r}")
    return central_stddev / math.sqrt(contributors)


def add_distributed_noise(
    update: np.ndarray, *, central_stddev: float, contributors: int, rng: np.random.Generator
) -> np.ndarray:
    """``update + N(0, sigma^2 / m)`` per coordinate (float64), hospital-side before quantisation."""
    std = distributed_noise_stddev(central_stddev, contributors=contributors)
    x = np.asarray(update, dtype=np.float64)
    return x + rng.normal(0.0, std, size=x.shape)
