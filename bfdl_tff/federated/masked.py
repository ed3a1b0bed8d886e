"""Masked secure aggregation in the TFF round (issue 18.2; paper 3.1 "secure aggregation was also
performed during the aggregation process", 3.5 DP).

Under ``privacy.secure_aggregation: masked`` the TFF aggregator (``SecureSumFactory``, which in
TFF's test context is a plain sum: no cryptography) is replaced by the protocol of
:mod:`bfdl_tff.secagg` (Bonawitz et al., CCS 2017; SecAgg+ of Bell et al., CCS 2020):

* **hospital side** (:meth:`MaskedAggregation.aggregate`, per hospital, before anything reaches
  the server): the hospital's update - the output of its own TFF client-work computation, already
  clipped and DP-noised by DP-SGD for sample-level DP - is flattened and multiplied by its public
  FedAvg weight ``w_k = n_k / n`` (``n``: the round's participants; the ledger records ``n_k``);
  for client-level DP-FedAvg it is instead clipped to ``l2_clip`` and given its share of the
  distributed Gaussian noise (below). The result is quantised to ``Z_{2^b}`` (per-coordinate range
  ``[-R, R]``, ``R = privacy.secagg_clip``; level ``Q = floor((2^(b-1) - 1) / K)``, so the K
  summands cannot wrap; b <= 32) and masked by the hospital's protocol state machine.
* **server side**: the aggregator's state machine receives only signed protocol messages; it sums
  the survivors' masked integer vectors with :class:`TffModularSum` - a ``tff.federated_computation``
  whose input is the masked vectors placed at ``tff.CLIENTS`` (int64 residues) and whose output is
  their ``tff.federated_sum`` reduced ``mod 2^b`` at ``tff.SERVER`` - then removes the survivors'
  self-masks (and a dropped hospital's pairwise masks) through the protocol's unmasking, and
  dequantises. The mean update is ``sum / sum_{survivors} w_k`` (weighted FedAvg) or
  ``sum / K`` (DP-FedAvg's fixed denominator); the round's TFF finalizer (server optimizer)
  applies it as before.
* **Abort**: any protocol error (malformed or out-of-range vector, bad signature, duplicate
  message, fewer than t survivors, ...) aborts the round: ``mean_update is None``, the reason is
  logged and recorded in the transcript (committed on the ledger), and the caller leaves the
  global model as it was.

Client-level DP-FedAvg under masking (``privacy.mode: client``; ``docs/secagg.md``): noise the
server added after unmasking would not hide the sum from the server, so each hospital adds
``N(0, (z C)^2 / t)`` per coordinate to its clipped update before quantising
(:func:`bfdl_tff.secagg.noise.add_distributed_noise`; the generator is the keyring's
``noise_rng(hospital, round)``, derived from the hospital's kx private key with the ledger - a
secret the server does not hold, else it could regenerate and subtract the noise - and
deterministic per round so a resumed run repeats itself; without the ledger, from the run's
``dp_noise`` seed like TFF's central noise in this simulation). Every completed round has ``>= t`` survivors,
so the sum carries variance ``>= (z C)^2`` - at least what the accountant assumes - and ``K / t``
times more when all survive. Adaptive clipping is refused (its clipped-count query lives inside
TFF's aggregator).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from bfdl_tff.secagg.aggregate import MaskedRound, MaskedSettings, SumFn, masked_sum
from bfdl_tff.secagg.keyring import Keyring
from bfdl_tff.secagg.noise import add_distributed_noise
from bfdl_tff.secagg.simulate import Intercept

log = logging.getLogger(__name__)


def modular_sum_computation(vector_length: int, bits: int) -> Any:
    """``{int64[n]}@CLIENTS -> int64[n]@SERVER``: the masked vectors' ``federated_sum`` mod 2^b."""
    import tensorflow as tf
    import tensorflow_federated as tff

    if not 8 <= bits <= 32:
        raise ValueError(f"the TFF modular sum needs 8 <= bits <= 32 (int64 sums of K < 2^31 residues), got {bits}")
    int_t = tff.TensorType(np.int64, [vector_length])

    @tff.tensorflow.computation(int_t)
    def reduce_mod(x):
        return tf.math.floormod(x, tf.constant(1 << bits, tf.int64))

    @tff.federated_computation(tff.FederatedType(int_t, tff.CLIENTS))
    def server_modular_sum(masked):
        return tff.federated_map(reduce_mod, tff.federated_sum(masked))

    return server_modular_sum


class TffModularSum:
    """The server's ``sum_fn`` for :class:`bfdl_tff.secagg.SecAggServer`: masked ring vectors ->
    the TFF computation (one per vector length, built once) -> their sum mod 2^b."""

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self._computations: dict[int, Any] = {}

    def __call__(self, vectors: Sequence[np.ndarray]) -> np.ndarray:
        n = int(vectors[0].shape[0])
        if n not in self._computations:
            self._computations[n] = modular_sum_computation(n, self.bits)
        return np.asarray(self._computations[n]([np.asarray(v, dtype=np.int64) for v in vectors]), dtype=np.int64)


@dataclass(frozen=True, kw_only=True)
class ClientLevelNoise:
    """DP-FedAvg under masking: clip to ``l2_clip``, add ``N(0, (z C)^2 / contributors)``."""

    l2_clip: float
    noise_multiplier: float
    contributors: int  # t: every completed round has at least t survivors


@dataclass
class RoundFaults:
    """Faults injected into one round (tests and the fault-injection benchmark)."""

    drop_after_shares: tuple[str, ...] = ()
    drop_after_masked: tuple[str, ...] = ()
    intercept: Intercept | None = None


@dataclass
class MaskedOutcome:
    """What the server obtains from one masked round (``mean_update is None`` iff aborted)."""

    mean_update: list[np.ndarray] | None
    transcript: dict[str, Any]
    aborted: str | None
    metrics: dict[str, float]
    raw: MaskedRound


def flatten(update: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in update])


def unflatten(vector: np.ndarray, like: Sequence[np.ndarray]) -> list[np.ndarray]:
    out, pos = [], 0
    for a in like:
        size = int(np.size(a))
        out.append(vector[pos:pos + size].reshape(np.shape(a)).astype(np.float32))
        pos += size
    return out


@dataclass
class MaskedAggregation:
    """A run's masked aggregation: protocol settings, identities, the server's TFF sum."""

    settings: MaskedSettings
    keyring: Keyring
    weighted: bool = True
    client_noise: ClientLevelNoise | None = None
    sum_fn: SumFn | None = None  # default: TffModularSum(settings.bits)
    faults: dict[int, RoundFaults] = field(default_factory=dict)
    on_server_input: Callable[[Sequence[np.ndarray]], None] | None = None  # observer (tests)

    def __post_init__(self) -> None:
        if self.sum_fn is None:
            self.sum_fn = TffModularSum(self.settings.bits)

    def _server_sum(self, vectors: Sequence[np.ndarray]) -> np.ndarray:
        if self.on_server_input is not None:
            self.on_server_input(vectors)
        assert self.sum_fn is not None
        return self.sum_fn(vectors)

    def hospital_input(self, update: Sequence[np.ndarray], weight: float, *, hospital: str,
                       round_num: int) -> np.ndarray:
        """Hospital side: the flat vector this hospital quantises and masks."""
        x = flatten(update)
        if self.client_noise is None:
            return weight * x
        cn = self.client_noise
        norm = float(np.linalg.norm(x))
        x = x * min(1.0, cn.l2_clip / max(norm, 1e-12))
        return add_distributed_noise(x, central_stddev=cn.noise_multiplier * cn.l2_clip, contributors=cn.contributors,
                                     rng=self.keyring.noise_rng(hospital, round_num))

    def aggregate(self, round_num: int, updates: Mapping[str, Sequence[np.ndarray]],
                  weights: Mapping[str, float]) -> MaskedOutcome:
        """One round: hospital-side inputs -> protocol -> the mean update (or an abort)."""
        names = sorted(updates)
        like = updates[names[0]]
        total_w = float(sum(weights[h] for h in names))
        w = {h: (weights[h] / total_w if total_w > 0 else 0.0) for h in names}
        inputs = {h: self.hospital_input(updates[h], w[h], hospital=h, round_num=round_num) for h in names}
        f = self.faults.get(round_num, RoundFaults())
        out = masked_sum(inputs, keyring=self.keyring, round_num=round_num, settings=self.settings,
                         sum_fn=self._server_sum, drop_after_shares=f.drop_after_shares,
                         drop_after_masked=f.drop_after_masked, intercept=f.intercept)
        metrics = {
            "secagg_aborted": float(out.aborted is not None),
            "secagg_survivors": float(len(out.survivors)),
            "secagg_dropped": float(len(out.dropped)),
            "secagg_clipped": float(sum(out.clipped.values())),
            "secagg_bytes_sent_max": float(max(out.bytes_sent.values(), default=0)),
            "secagg_client_ms_max": 1000.0 * max(out.client_seconds.values(), default=0.0),
            "secagg_server_ms": 1000.0 * out.server_seconds,
        }
        if out.aborted is not None or out.total is None:
            return MaskedOutcome(mean_update=None, transcript=out.transcript, aborted=out.aborted, metrics=metrics,
                                 raw=out)
        denom = sum(w[h] for h in out.survivors) if self.client_noise is None else float(len(names))
        mean = out.total / denom if denom > 0 else np.zeros_like(out.total)
        if out.clipped and sum(out.clipped.values()):
            log.warning("round %d: %d coordinates outside the secure-aggregation range [-%g, %g] were clipped "
                        "(privacy.secagg_clip)", round_num, int(sum(out.clipped.values())),
                        self.settings.clip, self.settings.clip)
        if self.client_noise is None:  # exact reference: the simulation knows every update (diagnostic only)
            exact = sum(w[h] * flatten(updates[h]) for h in out.survivors) / denom if denom > 0 else mean
            ref = float(np.linalg.norm(exact)) or 1.0
            metrics["secagg_rel_error"] = float(np.linalg.norm(mean - exact)) / ref
        return MaskedOutcome(mean_update=unflatten(mean, like), transcript=out.transcript, aborted=None,
                             metrics=metrics, raw=out)


def client_noise_for(*, l2_clip: float, noise_multiplier: float, threshold: int) -> ClientLevelNoise:
    """The distributed-noise calibration of client-level DP-FedAvg under masking (``m = t``)."""
    if not (l2_clip > 0 and math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ValueError("client-level noise needs l2_clip > 0 and a finite noise multiplier >= 0")
    return ClientLevelNoise(l2_clip=l2_clip, noise_multiplier=noise_multiplier, contributors=threshold)


__all__ = ["ClientLevelNoise", "MaskedAggregation", "MaskedOutcome", "RoundFaults", "TffModularSum",
           "client_noise_for", "flatten", "modular_sum_computation", "unflatten"]
