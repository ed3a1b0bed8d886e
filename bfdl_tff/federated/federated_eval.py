"""Federated validation: decision thresholds from summed per-hospital score histograms
(issue 16.4; paper 3.2/3.3).

The thresholds that turn the global model's probabilities into decisions
(``eval.threshold_rule``: ``youden_val``, ``f1_val``) used to be chosen at the server on the
hospitals' pooled raw validation images. Here each hospital scores its own validation images and
releases only, per finding, the histogram of the scores of its positives and of its negatives on
fixed bins (``bins`` equal bins on ``[0, 1]``; :func:`score_histograms`, hospital side). The
server receives the **sum** of these histograms (:func:`plain_sum` in the simulation, or
:func:`tff_sum`: ``tff.federated_sum`` over the hospitals when a TFF context is active; for the
``bfdl`` arm a secure sum - masked or TFF's secure sum, :mod:`bfdl_tff.federated.secure_histograms` -
so the server never handles one hospital's histogram) and
chooses each threshold from the summed counts alone (:func:`thresholds_from_histograms`): a
threshold is a bin edge ``e_i`` (predict positive when ``p >= e_i``), so the rule is exact up to the
bin width ``1 / bins``. The validation AUC follows from the same counts
(:func:`auc_from_histogram`; ties within a bin count one half).

The held-out **test** split stays central: it is the benchmark set on which the paper's metrics
are reported (in a deployment a benchmark curated for the consortium), never used to choose
anything.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from bfdl_tff.federated.evaluation import evaluate_predictions, predict_findings
from bfdl_tff.federated.results import EvalResult

DEFAULT_BINS = 1000
Histograms = Sequence[np.ndarray] | Mapping[str, np.ndarray]
Summer = Callable[[Mapping[str, np.ndarray]], np.ndarray]  # hospital -> histogram  ->  their sum


def score_histograms(y: np.ndarray, p: np.ndarray, *, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Hospital side: ``int64 [L, 2, bins]`` counts of the scores of negatives (``[:, 0]``) and
    positives (``[:, 1]``) per label, bin ``b`` = ``[b / bins, (b + 1) / bins)`` (1.0 in the last)."""
    y, p = np.asarray(y), np.asarray(p, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 2:
        raise ValueError(f"labels {y.shape} and scores {p.shape} must be the same [N, L] shape")
    idx = np.clip(np.floor(np.clip(p, 0.0, 1.0) * bins).astype(np.int64), 0, bins - 1)
    out = np.zeros((y.shape[1], 2, bins), dtype=np.int64)
    for j in range(y.shape[1]):
        pos = y[:, j] > 0.5
        out[j, 1] = np.bincount(idx[pos, j], minlength=bins)
        out[j, 0] = np.bincount(idx[~pos, j], minlength=bins)
    return out


def _arrays(parts: Histograms) -> list[np.ndarray]:
    return [np.asarray(h, dtype=np.int64) for h in (parts.values() if isinstance(parts, Mapping) else parts)]


def plain_sum(parts: Histograms) -> np.ndarray:
    """The server's aggregate of the hospitals' histograms in the simulation: their sum only."""
    return np.sum(np.stack(_arrays(parts)), axis=0)


@functools.lru_cache(maxsize=8)
def _tff_sum_computation(shape: tuple[int, ...]) -> Any:
    import tensorflow_federated as tff

    @tff.federated_computation(tff.FederatedType(tff.TensorType(np.int64, shape), tff.CLIENTS))
    def summed(values):
        return tff.federated_sum(values)

    return summed


def tff_sum(parts: Histograms) -> np.ndarray:
    """``tff.federated_sum`` of the hospitals' histograms (CLIENTS -> SERVER); needs an active
    TFF execution context. Arms without a privacy claim only (the ``bfdl`` arm sums securely:
    :mod:`bfdl_tff.federated.secure_histograms`)."""
    arrays = _arrays(parts)
    return np.asarray(_tff_sum_computation(tuple(arrays[0].shape))(arrays), dtype=np.int64)


def _rates(neg: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin lower edges and the counts predicted positive at each edge (``p >= e_i``)."""
    bins = len(neg)
    edges = np.arange(bins, dtype=np.float64) / bins
    tp = np.cumsum(pos[::-1])[::-1].astype(np.float64)
    fp = np.cumsum(neg[::-1])[::-1].astype(np.float64)
    return edges, tp, fp


def _best(score: np.ndarray) -> int:
    """The highest edge among the maxima (sklearn's curves also prefer the highest threshold)."""
    rev = score[::-1]
    return len(score) - 1 - int(np.nanargmax(rev))


def thresholds_from_histograms(hist: np.ndarray, *, rule: str, findings: Sequence[str],
                               fixed: float = 0.5) -> dict[str, float]:
    """Per-finding thresholds from summed histograms ``[L, 2, bins]`` (``youden_val``: max TPR -
    FPR; ``f1_val``: max F1; ``fixed``); a finding without both classes gets ``fixed``."""
    out: dict[str, float] = {}
    for j, f in enumerate(findings):
        neg, pos = hist[j, 0], hist[j, 1]
        P, N = float(pos.sum()), float(neg.sum())
        if rule == "fixed" or P == 0 or N == 0:
            out[f] = float(fixed)
            continue
        edges, tp, fp = _rates(neg, pos)
        if rule == "youden_val":
            score = tp / P - fp / N
        elif rule == "f1_val":
            score = np.where(tp + fp > 0, 2 * tp / np.maximum(2 * tp + fp + (P - tp), 1e-12), np.nan)
        else:
            raise ValueError(f"unknown threshold rule {rule!r}")
        out[f] = float(edges[_best(score)])
    return out


def auc_from_histogram(neg: np.ndarray, pos: np.ndarray) -> float | None:
    """ROC AUC from binned scores: P(score_pos > score_neg) + 1/2 P(same bin); None without both classes."""
    P, N = float(np.sum(pos)), float(np.sum(neg))
    if P == 0 or N == 0:
        return None
    below = np.concatenate([[0], np.cumsum(neg)[:-1]]).astype(np.float64)
    return float(np.sum(pos * (below + 0.5 * neg)) / (P * N))


class FederatedValidationEvaluator:
    """The server's evaluation with federated thresholds: each hospital scores its own validation
    split and contributes its histograms (hospital side); the server sums them (``summer``),
    chooses the thresholds, and scores the central test split (the benchmark set)."""

    def __init__(self, keras_model: Any, *, x_test: np.ndarray, y_test: np.ndarray,
                 val_sets: Mapping[str, tuple[np.ndarray, np.ndarray]], findings: Sequence[str],
                 threshold_rule: str, fixed_threshold: float = 0.5, bins: int = DEFAULT_BINS,
                 summer: Summer = plain_sum, kind: str = "multilabel") -> None:
        self.model = keras_model
        self.kind = kind  # the task (bfdl_tff.data.tasks.Task.kind): which metrics evaluate_predictions adds
        self.x_test, self.y_test = x_test, y_test
        self.val_sets = {n: v for n, v in val_sets.items() if v is not None and len(v[0])}
        self.findings, self.threshold_rule, self.fixed = list(findings), threshold_rule, fixed_threshold
        self.bins, self.summer = bins, summer
        self.last_val_auc: dict[str, float | None] = {}  # per finding, from the summed histograms

    def hospital_histograms(self) -> dict[str, np.ndarray]:
        """Hospital side: each hospital's histograms of the current model on its validation split."""
        return {n: score_histograms(y, predict_findings(self.model, x), bins=self.bins)
                for n, (x, y) in self.val_sets.items()}

    def thresholds(self) -> tuple[dict[str, float], str]:
        """Server side: the thresholds from the summed histograms, and the rule applied."""
        if self.threshold_rule == "fixed" or not self.val_sets:
            rule = "fixed" if self.threshold_rule == "fixed" else f"fixed (no validation data for {self.threshold_rule})"
            return {f: float(self.fixed) for f in self.findings}, rule
        total = self.summer(self.hospital_histograms())
        self.last_val_auc = {f: auc_from_histogram(total[j, 0], total[j, 1]) for j, f in enumerate(self.findings)}
        return thresholds_from_histograms(total, rule=self.threshold_rule, findings=self.findings,
                                          fixed=self.fixed), self.threshold_rule

    def summary_extra(self) -> dict[str, Any]:
        """``summary.json`` fields of the newest validation (empty before one): the validation AUC
        from the summed histograms, per finding and macro (mean over findings with both classes)."""
        aucs = [a for a in self.last_val_auc.values() if a is not None]
        if not aucs:
            return {}
        out: dict[str, Any] = {"val_macro_auc_federated": float(np.mean(aucs)),
                               "val_per_finding_auc_federated": dict(self.last_val_auc),
                               "val_histogram_bins": self.bins}
        secure = getattr(self.summer, "last", None)  # masked secure sum: survivors, aggregate digest
        if secure:
            out["val_histogram_secure_sum"] = dict(secure)
        return out

    def predict_test(self, weights: Sequence[np.ndarray]) -> np.ndarray:
        self.model.set_weights(list(weights))
        return predict_findings(self.model, self.x_test)

    def evaluate(self, weights: Sequence[np.ndarray]) -> EvalResult:
        self.model.set_weights(list(weights))
        thresholds, rule = self.thresholds()
        p_test = predict_findings(self.model, self.x_test)
        return evaluate_predictions(self.y_test, p_test, findings=self.findings, thresholds=thresholds,
                                    threshold_rule=rule, kind=self.kind)


__all__ = ["DEFAULT_BINS", "FederatedValidationEvaluator", "auc_from_histogram", "plain_sum", "score_histograms",
           "tff_sum", "thresholds_from_histograms"]
