"""Fixed-point quantisation of float updates into Z_{2^b} (Bonawitz et al. 2017, section 3).

Encoding (two's complement, so the sum needs no offset correction):

* clip every coordinate to ``[-R, R]`` (``R = clip``);
* scale by ``s = Q / R`` with the integer level ``Q = min(floor((2^(b-1) - 1) / K), 2^52)``,
  ``K = max_summands`` (the most hospitals whose vectors are ever summed);
* round to an integer in ``[-Q, Q]`` (``deterministic``: nearest, ties to even; ``stochastic``:
  ``floor(v) + Bernoulli(frac(v))`` drawn from a caller-seeded ``numpy.random.Generator``,
  unbiased), and take the residue modulo 2^b.

Wrap-free bound: a sum of at most K such integers lies in ``[-K*Q, K*Q]`` and
``K*Q <= 2^(b-1) - 1``, so the signed reading of the modular sum is the true integer sum; no
wrap can occur. ``dequantize_sum`` divides it by ``s``. Error per coordinate of the sum of
``m <= K`` vectors against the sum of the clipped inputs: ``<= m * step / 2`` (deterministic) or
``< m * step`` with zero mean (stochastic), ``step = 1/s = R/Q``. The cap ``Q <= 2^52`` keeps
``x * s`` exactly representable in float64 (b = 64 gains nothing over b = 56 for K = 1).

Example: b = 32, K = 10, R = 1: Q = 214748364, step = 4.66e-9 (float32 resolution near 1 is
1.19e-7). The secure-aggregation protocol itself only ever sees the ring elements.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from bfdl_tff.secagg.errors import QuantizationError
from bfdl_tff.secagg.ring import MAX_BITS, MIN_BITS, Ring

Rounding = Literal["deterministic", "stochastic"]
_MAX_LEVEL = 1 << 52


def quantization_level(bits: int, max_summands: int) -> int:
    """``Q = min(floor((2^(b-1) - 1) / K), 2^52)``: the largest |integer| one input may take."""
    return min(((1 << (bits - 1)) - 1) // max_summands, _MAX_LEVEL)


def bits_for(*, max_summands: int, clip: float, step: float) -> int:
    """Smallest ring width b whose quantisation step ``R/Q`` is at most ``step`` for K summands."""
    if max_summands < 1 or clip <= 0 or step <= 0:
        raise QuantizationError("bits_for needs max_summands >= 1, clip > 0 and step > 0")
    for bits in range(MIN_BITS, MAX_BITS + 1):
        level = quantization_level(bits, max_summands)
        if level >= 1 and clip / level <= step:
            return bits
    raise QuantizationError(
        f"no ring width up to {MAX_BITS} bits gives step {step:g} for clip {clip:g} and {max_summands} summands"
    )


@dataclass(frozen=True, kw_only=True)
class Quantizer:
    """Quantise float vectors to Z_{2^bits} so that the sum of ``max_summands`` never wraps."""

    bits: int
    clip: float
    max_summands: int
    rounding: Rounding = "deterministic"
    ring: Ring = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ring", Ring(self.bits))
        if not isinstance(self.max_summands, int) or self.max_summands < 1:
            raise QuantizationError(f"max_summands must be a positive integer, got {self.max_summands!r}")
        if not (isinstance(self.clip, (int, float)) and np.isfinite(self.clip) and self.clip > 0):
            raise QuantizationError(f"clip range R must be a finite positive number, got {self.clip!r}")
        if self.rounding not in ("deterministic", "stochastic"):
            raise QuantizationError(f"rounding must be 'deterministic' or 'stochastic', got {self.rounding!r}")
        if self.level < 1:
            raise QuantizationError(
                f"a {self.bits}-bit ring cannot hold the sum of {self.max_summands} values without wrapping"
            )

    @property
    def level(self) -> int:
        return quantization_level(self.bits, self.max_summands)

    @property
    def scale(self) -> float:
        return self.level / float(self.clip)

    @property
    def step(self) -> float:
        return float(self.clip) / self.level

    def clipped_count(self, x: np.ndarray) -> int:
        """How many coordinates of ``x`` lie outside ``[-R, R]`` (they are clipped)."""
        return int(np.count_nonzero(np.abs(np.asarray(x, dtype=np.float64)) > self.clip))

    def to_integers(self, x: np.ndarray, *, rng: np.random.Generator | None = None) -> np.ndarray:
        """Clip, scale and round ``x`` (1-D, finite) to int64 values in ``[-Q, Q]``."""
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim != 1:
            raise QuantizationError(f"quantise a flat vector; got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise QuantizationError("the update contains NaN or infinite values")
        v = np.clip(arr, -self.clip, self.clip) * self.scale
        if self.rounding == "stochastic":
            if rng is None:
                raise QuantizationError("stochastic rounding needs a seeded numpy.random.Generator (rng=)")
            low = np.floor(v)
            v = low + (rng.random(v.shape[0]) < (v - low))
        else:
            v = np.rint(v)
        return np.clip(v, -self.level, self.level).astype(np.int64)

    def quantize(self, x: np.ndarray, *, rng: np.random.Generator | None = None) -> np.ndarray:
        """``q(x)``: the ring vector (residues mod 2^b) of :meth:`to_integers`."""
        return self.ring.from_signed(self.to_integers(x, rng=rng))

    def dequantize_sum(self, v: np.ndarray) -> np.ndarray:
        """The float64 sum encoded by a ring vector that is the sum of <= K quantised inputs."""
        return self.ring.to_signed(v).astype(np.float64) / self.scale

    def describe(self) -> dict[str, object]:
        """Parameters and derived bounds, for logs, the transcript and ``docs/secagg.md``."""
        return {
            "bits": self.bits,
            "clip": float(self.clip),
            "max_summands": self.max_summands,
            "rounding": self.rounding,
            "level": self.level,
            "scale": self.scale,
            "step": self.step,
        }
