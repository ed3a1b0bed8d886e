"""Secure sums of the hospitals' validation-score histograms (issue 16.4; paper 3.1 "secure
aggregation was also performed during the aggregation process").

The federated thresholds (:mod:`bfdl_tff.federated.federated_eval`) need only the **sum** of the
hospitals' per-finding score histograms (integer counts ``int64 [L, 2, bins]``). A plain
``tff.federated_sum`` would hand the server each hospital's histogram, so for the ``bfdl`` arm the
sum goes through the run's secure aggregation (``privacy.secure_aggregation``):

* ``masked`` - :class:`MaskedHistogramSum`: the Bonawitz et al. (CCS 2017) protocol of
  :mod:`bfdl_tff.secagg` (:func:`~bfdl_tff.secagg.aggregate.masked_sum`), the same keys as the
  training rounds (the runner's keyring) but its own protocol sessions (run id
  ``<run>/validation-<random hex>``, fresh per process, sessions 1, 2, ... per evaluation), so no
  message of a training round or of an earlier process (resume) can be replayed into it. The integer path is exact: ring ``Z_{2^32}`` with quantisation scale 1 (clip
  range ``R = Q = floor((2^31 - 1) / K)``, so a count ``c <= Q`` is encoded as the integer ``c``
  itself and the sum of K counts cannot wrap; a hospital with a count above ``Q`` refuses before
  masking). Hospital side: flatten, encode, mask; server side: the server's state machine receives
  only masked vectors, sums them with a TFF computation (:class:`~bfdl_tff.federated.masked.TffModularSum`)
  and unmasks the **sum** only. A dropout leaves the survivors' sum; an aborted session raises.
  The session's transcript is not committed on the ledger (only the training rounds' are); its
  aggregate digest and survivors are kept in ``summary.json`` (``val_histogram_secure_sum``).
* ``tff_secure_sum`` - :func:`tff_secure_sum`: ``tff.federated_secure_sum_bitwidth`` (bitwidth 32)
  over the hospitals' histograms (``int64`` at ``tff.CLIENTS``); TFF's ``test`` execution context
  runs it as a plain sum (no cryptography; ``/work/shared/notes/tff-0.87-facts.md``), like the
  training aggregator of that mode.
* arms without a privacy claim keep the plain ``tff.federated_sum``.
"""

from __future__ import annotations

import functools
import secrets
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from bfdl_tff.secagg.aggregate import MaskedRound, MaskedSettings, SumFn, masked_sum
from bfdl_tff.secagg.keyring import Keyring
from bfdl_tff.secagg.params import Participant
from bfdl_tff.secagg.keys import KxKey, Signer
from bfdl_tff.secagg.quantize import quantization_level

HIST_BITS = 32  # ring width of the histogram sum: totals up to 2^31 - 1 (TffModularSum allows <= 32)


class SessionKeyring:
    """A keyring's identities under another protocol run id (``<run>/<session>``): same keys and
    roster, distinct round parameters (every signature binds the run id)."""

    def __init__(self, base: Keyring, session: str) -> None:
        self.base, self.session = base, session

    @property
    def run_id(self) -> str:
        return f"{self.base.run_id}/{self.session}"

    def roster(self, hospitals: Sequence[str]) -> dict[int, Participant]:
        return self.base.roster(hospitals)

    def signer(self, hospital: str) -> Signer:
        return self.base.signer(hospital)

    def kx_key(self, hospital: str) -> KxKey:
        return self.base.kx_key(hospital)

    def noise_rng(self, hospital: str, round_num: int) -> np.random.Generator:
        return self.base.noise_rng(hospital, round_num)

    def describe(self) -> str:
        return f"{self.base.describe()} (session {self.session})"


def exact_integer_settings(hospitals: int, *, bits: int = HIST_BITS, threshold: int = 0, neighbours: int = 0,
                           consistency_check: bool = True) -> MaskedSettings:
    """Protocol settings whose quantiser is the identity on integers ``|c| <= Q``: clip range
    ``R = Q = floor((2^(b-1) - 1) / K)``, hence scale ``Q / R = 1``."""
    level = quantization_level(bits, hospitals)
    return MaskedSettings(bits=bits, clip=float(level), threshold=threshold, neighbours=neighbours,
                          consistency_check=consistency_check)


class MaskedHistogramSum:
    """The ``summer`` of :class:`~bfdl_tff.federated.federated_eval.FederatedValidationEvaluator`
    under ``privacy.secure_aggregation: masked`` (see module docstring). Set :attr:`keyring` (the
    runner does, from the run's secure-aggregation keyring) before the first call."""

    def __init__(self, *, keyring: Keyring | None = None, threshold: int = 0, neighbours: int = 0,
                 consistency_check: bool = True, sum_fn: SumFn | None = None,
                 on_server_input: Callable[[Sequence[np.ndarray]], None] | None = None) -> None:
        self.keyring = keyring
        self.threshold, self.neighbours, self.consistency_check = threshold, neighbours, consistency_check
        self.sum_fn = sum_fn
        self.on_server_input = on_server_input  # observer of what enters the server's sum (tests)
        self.sessions = 0
        self.session_id = f"validation-{secrets.token_hex(4)}"  # fresh per process: a resumed run never
        # repeats a (run id, session) pair, so no message of an earlier session can be replayed
        self.last: dict[str, Any] = {}  # the newest session's survivors, dropped, aggregate digest
        self.last_round: MaskedRound | None = None  # the newest session's outcome (server inbox: tests)

    def _server_sum(self, vectors: Sequence[np.ndarray]) -> np.ndarray:
        if self.on_server_input is not None:
            self.on_server_input(vectors)
        if self.sum_fn is None:
            from bfdl_tff.federated.masked import TffModularSum

            self.sum_fn = TffModularSum(HIST_BITS)
        return self.sum_fn(vectors)

    def __call__(self, histograms: Mapping[str, np.ndarray]) -> np.ndarray:
        if self.keyring is None:
            raise RuntimeError("the masked histogram sum needs the run's secure-aggregation keyring")
        names = sorted(histograms)
        if len(names) < 2:  # a "sum" of one hospital's histogram would be that histogram
            raise ValueError(f"a secure histogram sum needs at least two hospitals with validation data, got {names}")
        shape = np.shape(histograms[names[0]])
        settings = exact_integer_settings(len(names), threshold=self.threshold, neighbours=self.neighbours,
                                          consistency_check=self.consistency_check)
        # --- hospital side: flatten; refuse counts the ring cannot sum exactly; masking in masked_sum ---
        inputs: dict[str, np.ndarray] = {}
        for h in names:
            counts = np.asarray(histograms[h], dtype=np.int64)
            if counts.shape != shape or counts.min(initial=0) < 0 or counts.max(initial=0) > settings.clip:
                raise ValueError(f"{h}: histogram of shape {counts.shape} with counts outside "
                                 f"[0, {int(settings.clip)}]")
            inputs[h] = counts.ravel().astype(np.float64)
        self.sessions += 1
        out = masked_sum(inputs, keyring=SessionKeyring(self.keyring, self.session_id), round_num=self.sessions,
                         settings=settings, sum_fn=self._server_sum)
        if out.total is None:
            raise RuntimeError(f"validation histogram sum {self.sessions}: secure aggregation aborted: {out.aborted}")
        self.last_round = out
        self.last = {"protocol": "masked", "session": self.sessions, "survivors": list(out.survivors),
                     "dropped": list(out.dropped), "aggregate_sha256": out.transcript.get("aggregate_sha256")}
        return np.rint(out.total).astype(np.int64).reshape(shape)


@functools.lru_cache(maxsize=8)
def _tff_secure_sum_computation(shape: tuple[int, ...], bitwidth: int) -> Any:
    import tensorflow_federated as tff

    @tff.federated_computation(tff.FederatedType(tff.TensorType(np.int64, shape), tff.CLIENTS))
    def secure_summed(values):
        return tff.federated_secure_sum_bitwidth(values, bitwidth)

    return secure_summed


def tff_secure_sum(parts: Sequence[np.ndarray] | Mapping[str, np.ndarray]) -> np.ndarray:
    """``tff.federated_secure_sum_bitwidth`` (bitwidth 32) of the hospitals' histograms; needs
    TFF's ``test`` execution context (the run's context under ``tff_secure_sum``)."""
    arrays = [np.asarray(h, dtype=np.int64) for h in (parts.values() if isinstance(parts, Mapping) else parts)]
    bound = sum(int(a.max(initial=0)) for a in arrays)  # the largest possible entry of the sum
    if bound >= 1 << (HIST_BITS - 1) or min(int(a.min(initial=0)) for a in arrays) < 0:
        raise ValueError(f"histogram counts must be >= 0 and sum below 2^{HIST_BITS - 1}")
    return np.asarray(_tff_secure_sum_computation(tuple(arrays[0].shape), HIST_BITS)(arrays), dtype=np.int64)


def histogram_summer(aggregation: str, *, threshold: int = 0, neighbours: int = 0,
                     consistency_check: bool = True) -> Callable[[Mapping[str, np.ndarray]], np.ndarray]:
    """The server's histogram sum for a TFF run whose aggregation (``tff_engine.aggregation_of``) is
    ``masked`` (:class:`MaskedHistogramSum`, protocol settings ``privacy.secagg_threshold`` /
    ``secagg_neighbours`` / ``secagg_consistency_check``), ``tff_secure_sum`` or ``none`` (plain
    ``tff.federated_sum``: arms without a privacy claim)."""
    from bfdl_tff.federated.federated_eval import tff_sum

    if aggregation == "masked":
        return MaskedHistogramSum(threshold=threshold, neighbours=neighbours, consistency_check=consistency_check)
    if aggregation == "tff_secure_sum":
        return tff_secure_sum
    if aggregation == "none":
        return tff_sum
    raise ValueError(f"unknown secure aggregation {aggregation!r}")


__all__ = ["HIST_BITS", "histogram_summer", "MaskedHistogramSum", "SessionKeyring", "exact_integer_settings", "tff_secure_sum"]
