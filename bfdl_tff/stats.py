"""Statistics a reviewer can trust (issue 14.4): bootstrap confidence intervals over test images
and t-based intervals over seeds. Base layer: numpy and the standard library only (no TensorFlow,
no training code), so ``paper_figures`` may import it and compute intervals from result files.

The paper (3.3) reports single AUC values without any interval. Here:

**Over test images** (:func:`bootstrap_auc`, :func:`paired_bootstrap_auc`): a seeded
nonparametric bootstrap that resamples *images* with replacement (``n_boot`` resamples of ``N``
images; every label of a drawn image comes with it, so the labels' dependence is kept). Each
resample is represented by its multiplicity weights, and the ROC AUC of a resample is the
weighted Mann-Whitney statistic ``P(s+ > s-) + 0.5 P(s+ = s-)`` (ties count one half, as
``sklearn.metrics.roc_auc_score`` does). Intervals are percentile intervals (2.5 % and 97.5 % for
``level=0.95``).

- **per-label AUC**: defined only when the label has both classes in the evaluated sample;
  otherwise ``auc`` is ``None`` with the reason (``"no positives"`` / ``"no negatives"``), never
  0.5. Its interval uses the resamples in which the label still has both classes; the resamples
  in which it lost one (e.g. none of a rare label's 5 positives was drawn, probability
  ``(1 - 5/N)^N ~ e^-5``) are **skipped for that label** and counted (``resamples_undefined``).
- **macro AUC**: the mean over the labels defined in the original sample (``macro_labels``; the
  same set for the point estimate and every resample). In a resample where one of those labels
  lost a class, that label is **left out of that resample's mean** (the mean is over the labels
  still defined); the number of such resamples is reported (``resamples_with_dropped_labels``)
  beside the interval, and is 0 whenever every label keeps a reasonable number of positives.
- **micro AUC**: one AUC over all (image, label) pairs, as ``bfdl_tff.federated.evaluation``.
- **paired** (two models scored on the same images): both models are scored on the *same*
  resamples and the interval is the percentile interval of the per-resample difference
  ``a - b``; identical models give exactly ``0`` with interval ``[0, 0]``. ``p_two_sided`` is the
  bootstrap two-sided p-value ``min(1, 2 min(P(d <= 0), P(d >= 0)))``.

**Over seeds** (:func:`mean_ci`, :func:`paired_difference`): mean and the Student-t interval
``mean +- t_{n-1, (1+level)/2} * sd / sqrt(n)`` (sample sd, ``ddof=1``); with one value the
interval is undefined (``None``). Paired differences between arms pair the runs by seed (both arms
trained with the same seed share partition and initialisation) and give the mean and t interval
of the per-seed differences ``a - b``; seeds present in only one arm are listed, not used.
The t quantile is computed here (regularised incomplete beta by continued fraction, then
bisection) to keep this module free of SciPy; it matches tabulated values to 1e-9.

Everything is deterministic given ``seed`` (``numpy.random.default_rng(seed)``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Hashable, Mapping, Sequence

import numpy as np

#: Resamples x (image, label) pairs held in memory at once by the bootstrap (bounds memory, not results).
_CHUNK_ELEMENTS = 4_000_000
#: Resamples drawn per random-number call: fixed, so results never depend on the data size.
_DRAW_BLOCK = 64


# --------------------------------------------------------------------------------------------
# AUC of weighted samples
# --------------------------------------------------------------------------------------------


def weighted_auc(y: np.ndarray, s: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of one label under each row of ``weights``.

    ``y`` ``[M]`` 0/1, ``s`` ``[M]`` scores, ``weights`` ``[B, M]`` non-negative (bootstrap
    multiplicities, or ones). Returns ``[B]``: ``sum_{i pos, j neg} w_i w_j ([s_i > s_j] + 0.5
    [s_i = s_j]) / (W+ W-)``, ``nan`` where a row has no positive or no negative weight."""
    y = np.asarray(y).astype(bool).ravel()
    s = np.asarray(s, dtype=np.float64).ravel()
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if w.shape[1] != len(y) or len(s) != len(y):
        raise ValueError(f"weighted_auc: y {y.shape}, scores {s.shape} and weights {w.shape} do not match")
    if not len(y):
        return np.full(w.shape[0], np.nan)
    _, group = np.unique(s, return_inverse=True)
    order = np.argsort(group, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(group[order]) != 0])
    ws = w[:, order]
    pos = np.add.reduceat(ws * y[order], starts, axis=1)
    neg = np.add.reduceat(ws * ~y[order], starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def roc_auc(y: np.ndarray, s: np.ndarray) -> float | None:
    """ROC AUC of one label, ``None`` when the sample lacks positives or negatives."""
    v = float(weighted_auc(y, s, np.ones((1, len(np.ravel(y)))))[0])
    return None if math.isnan(v) else v


def undefined_reason(y: np.ndarray) -> str | None:
    """``None`` if ``y`` has both classes, else ``"no positives"`` / ``"no negatives"`` / ``"no images"``."""
    y = np.asarray(y).ravel()
    if not len(y):
        return "no images"
    if not (y > 0.5).any():
        return "no positives"
    if (y > 0.5).all():
        return "no negatives"
    return None


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A point estimate and its ``level`` interval; ``None`` where undefined."""

    estimate: float | None
    low: float | None
    high: float | None
    level: float

    def covers(self, value: float) -> bool:
        return self.low is not None and self.high is not None and self.low <= value <= self.high

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LabelAuc:
    """One label's AUC with its bootstrap interval (``auc is None``: undefined, see ``reason``)."""

    label: str
    positives: int
    negatives: int
    auc: float | None
    low: float | None
    high: float | None
    reason: str | None = None
    resamples_used: int = 0
    resamples_undefined: int = 0

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BootstrapAuc:
    """Per-label, macro and micro AUC with bootstrap intervals (see the module docstring)."""

    labels: tuple[str, ...]
    per_label: dict[str, LabelAuc]
    macro: Interval
    macro_labels: tuple[str, ...]
    micro: Interval
    n_images: int
    n_boot: int
    seed: int
    resamples_with_dropped_labels: int
    undefined_labels: dict[str, str] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        return {
            "method": "percentile bootstrap over images (resampled with replacement); a label without both "
                      "classes in a resample is skipped for that resample (counted)",
            "n_images": self.n_images, "n_boot": self.n_boot, "seed": self.seed, "level": self.macro.level,
            "macro": {**self.macro.to_record(), "labels": list(self.macro_labels), "n_labels": len(self.macro_labels),
                      "resamples_with_dropped_labels": self.resamples_with_dropped_labels},
            "micro": self.micro.to_record(),
            "per_label": {k: v.to_record() for k, v in self.per_label.items()},
            "undefined_labels": dict(self.undefined_labels),
        }


@dataclass(frozen=True)
class PairedBootstrapAuc:
    """Differences ``a - b`` of two models scored on the same images, on the same resamples."""

    labels: tuple[str, ...]
    macro: Interval
    macro_labels: tuple[str, ...]
    micro: Interval
    per_label: dict[str, Interval]
    p_two_sided: dict[str, float | None]
    n_images: int
    n_boot: int
    seed: int

    def to_record(self) -> dict[str, Any]:
        return {"method": "paired percentile bootstrap over images (a - b on the same resamples)",
                "n_images": self.n_images, "n_boot": self.n_boot, "seed": self.seed,
                "macro": {**self.macro.to_record(), "labels": list(self.macro_labels)},
                "micro": self.micro.to_record(),
                "per_label": {k: v.to_record() for k, v in self.per_label.items()},
                "p_two_sided": dict(self.p_two_sided)}


# --------------------------------------------------------------------------------------------
# The bootstrap over images
# --------------------------------------------------------------------------------------------


def _check_inputs(y_true: np.ndarray, scores: Sequence[np.ndarray], labels: Sequence[str] | None,
                  n_boot: int, level: float) -> tuple[np.ndarray, list[np.ndarray], tuple[str, ...]]:
    y = np.asarray(y_true, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2:
        raise ValueError(f"y_true must be [N, L], got shape {y.shape}")
    if y.size and not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y_true must be 0/1")
    out = []
    for s in scores:
        s = np.asarray(s, dtype=np.float64)
        s = s[:, None] if s.ndim == 1 else s
        if s.shape != y.shape:
            raise ValueError(f"scores have shape {s.shape}, y_true {y.shape}")
        if not np.isfinite(s).all():
            raise ValueError("scores contain NaN or infinite values")
        out.append(s)
    names = tuple(labels) if labels is not None else tuple(f"label_{j}" for j in range(y.shape[1]))
    if len(names) != y.shape[1]:
        raise ValueError(f"{len(names)} label names for {y.shape[1]} label columns")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return y, out, names


def _resample_weights(rng: np.random.Generator, n: int, count: int) -> np.ndarray:
    """``[count, n]`` multiplicities of ``count`` bootstrap resamples of ``n`` items."""
    idx = rng.integers(0, n, size=(count, n))
    flat = (np.arange(count)[:, None] * n + idx).ravel()
    return np.bincount(flat, minlength=count * n).reshape(count, n).astype(np.float64)


def _bootstrap_aucs(y: np.ndarray, scores: Sequence[np.ndarray], *, n_boot: int, seed: int
                    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per model: per-label AUCs ``[n_boot, L]`` and micro AUCs ``[n_boot]`` on shared resamples."""
    n, n_lab = y.shape
    rng = np.random.default_rng(seed)
    per = [np.full((n_boot, n_lab), np.nan) for _ in scores]
    micro = [np.full(n_boot, np.nan) for _ in scores]
    y_flat = y.ravel()
    flats = [s.ravel() for s in scores]
    for b0 in range(0, n_boot, _DRAW_BLOCK):
        w = _resample_weights(rng, n, min(_DRAW_BLOCK, n_boot - b0))
        for m, s in enumerate(scores):
            for j in range(n_lab):
                per[m][b0:b0 + len(w), j] = weighted_auc(y[:, j], s[:, j], w)
        step = max(1, _CHUNK_ELEMENTS // max(1, n * n_lab))
        for c0 in range(0, len(w), step):
            wp = np.repeat(w[c0:c0 + step], n_lab, axis=1)  # image weight for each of its labels
            for m in range(len(scores)):
                micro[m][b0 + c0:b0 + c0 + len(wp)] = weighted_auc(y_flat, flats[m], wp)
    return per, micro


def _percentiles(values: np.ndarray, level: float) -> tuple[float | None, float | None]:
    v = values[~np.isnan(values)]
    if not len(v):
        return None, None
    lo, hi = np.quantile(v, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def _point(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, float]:
    per = np.array([weighted_auc(y[:, j], s[:, j], np.ones((1, len(y))))[0] for j in range(y.shape[1])])
    micro = float(weighted_auc(y.ravel(), s.ravel(), np.ones((1, y.size)))[0])
    return per, micro


def bootstrap_auc(y_true: np.ndarray, scores: np.ndarray, *, labels: Sequence[str] | None = None,
                  n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> BootstrapAuc:
    """Per-label, macro and micro AUC of ``scores`` ``[N, L]`` against ``y_true`` ``[N, L]`` with
    bootstrap ``level`` intervals over the ``N`` images (module docstring: how labels that lose a
    class in a resample are handled)."""
    y, (s,), names = _check_inputs(y_true, [scores], labels, n_boot, level)
    if not len(y):
        raise ValueError("no images to evaluate")
    point, micro_pt = _point(y, s)
    (per, ), (micro, ) = _bootstrap_aucs(y, [s], n_boot=n_boot, seed=seed)
    defined = ~np.isnan(point)
    table: dict[str, LabelAuc] = {}
    undefined: dict[str, str] = {}
    for j, lab in enumerate(names):
        npos = int(y[:, j].sum())
        if not defined[j]:
            undefined[lab] = undefined_reason(y[:, j]) or "undefined"
            table[lab] = LabelAuc(lab, npos, len(y) - npos, None, None, None, reason=undefined[lab])
            continue
        col = per[:, j]
        lo, hi = _percentiles(col, level)
        n_undef = int(np.isnan(col).sum())
        table[lab] = LabelAuc(lab, npos, len(y) - npos, float(point[j]), lo, hi,
                              resamples_used=n_boot - n_undef, resamples_undefined=n_undef)
    macro_labels = tuple(lab for lab, d in zip(names, defined) if d)
    if macro_labels:
        sub = per[:, defined]
        macro_b = _row_mean(sub)
        dropped = int((np.isnan(sub).any(axis=1)).sum())
        macro = Interval(float(point[defined].mean()), *_percentiles(macro_b, level), level)
    else:
        dropped, macro = 0, Interval(None, None, None, level)
    micro_iv = Interval(None if math.isnan(micro_pt) else micro_pt, *_percentiles(micro, level), level)
    return BootstrapAuc(names, table, macro, macro_labels, micro_iv, len(y), n_boot, seed, dropped, undefined)


def _p_two_sided(d: np.ndarray) -> float | None:
    d = d[~np.isnan(d)]
    if not len(d):
        return None
    return float(min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean())))


def _row_mean(a: np.ndarray) -> np.ndarray:
    """Mean of each row over its non-NaN entries (NaN for an all-NaN row)."""
    ok = ~np.isnan(a)
    cnt = ok.sum(axis=1)
    tot = np.where(ok, a, 0.0).sum(axis=1)
    return np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)


def paired_bootstrap_auc(y_true: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, *,
                         labels: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0,
                         level: float = 0.95) -> PairedBootstrapAuc:
    """Macro / micro / per-label AUC differences ``a - b`` of two models scored on the same
    images, with paired bootstrap intervals (both models on the same resamples)."""
    y, (sa, sb), names = _check_inputs(y_true, [scores_a, scores_b], labels, n_boot, level)
    if not len(y):
        raise ValueError("no images to evaluate")
    pa, ma = _point(y, sa)
    pb, mb = _point(y, sb)
    (ra, rb), (mia, mib) = _bootstrap_aucs(y, [sa, sb], n_boot=n_boot, seed=seed)
    defined = ~np.isnan(pa)
    per: dict[str, Interval] = {}
    p: dict[str, float | None] = {}
    for j, lab in enumerate(names):
        if not defined[j]:
            per[lab] = Interval(None, None, None, level)
            p[lab] = None
            continue
        d = ra[:, j] - rb[:, j]
        per[lab] = Interval(float(pa[j] - pb[j]), *_percentiles(d, level), level)
        p[lab] = _p_two_sided(d)
    if defined.any():
        dm = _row_mean(ra[:, defined]) - _row_mean(rb[:, defined])
        macro = Interval(float(pa[defined].mean() - pb[defined].mean()), *_percentiles(dm, level), level)
        p["macro"] = _p_two_sided(dm)
    else:
        macro, p["macro"] = Interval(None, None, None, level), None
    dmi = mia - mib
    micro = Interval(None if math.isnan(ma) else ma - mb, *_percentiles(dmi, level), level)
    p["micro"] = _p_two_sided(dmi)
    return PairedBootstrapAuc(names, macro, tuple(n for n, d in zip(names, defined) if d), micro, per, p,
                              len(y), n_boot, seed)


# --------------------------------------------------------------------------------------------
# Over seeds: Student-t intervals
# --------------------------------------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(ln) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Student-t cumulative distribution function."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Student-t quantile ``t_{df}^{-1}(p)`` (bisection on :func:`t_cdf`, |error| < 1e-12)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class SeedSummary:
    """Mean over seeds with a Student-t interval (``low``/``high`` ``None`` when ``n < 2``)."""

    mean: float | None
    sd: float | None
    n: int
    low: float | None
    high: float | None
    level: float

    @property
    def half_width(self) -> float | None:
        return None if self.low is None or self.mean is None else self.mean - self.low

    def to_record(self) -> dict[str, Any]:
        return {**asdict(self), "half_width": self.half_width}


def mean_ci(values: Sequence[float] | np.ndarray, *, level: float = 0.95) -> SeedSummary:
    """Mean of ``values`` (e.g. one macro AUC per seed) and its Student-t ``level`` interval.

    NaN values are refused (drop undefined runs explicitly and say so)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if np.isnan(v).any():
        raise ValueError("values contain NaN; leave out undefined runs explicitly")
    if not len(v):
        return SeedSummary(None, None, 0, None, None, level)
    mean = float(v.mean())
    if len(v) < 2:
        return SeedSummary(mean, None, 1, None, None, level)
    sd = float(v.std(ddof=1))
    half = t_quantile((1 + level) / 2, len(v) - 1) * sd / math.sqrt(len(v))
    return SeedSummary(mean, sd, int(len(v)), mean - half, mean + half, level)


@dataclass(frozen=True)
class PairedDifference:
    """Per-seed differences ``a - b`` between two arms and their mean with a t interval."""

    summary: SeedSummary
    keys: tuple[Hashable, ...]
    differences: tuple[float, ...]
    only_in_a: tuple[Hashable, ...]
    only_in_b: tuple[Hashable, ...]

    def to_record(self) -> dict[str, Any]:
        return {**self.summary.to_record(), "paired_on": [str(k) for k in self.keys],
                "differences": list(self.differences), "only_in_a": [str(k) for k in self.only_in_a],
                "only_in_b": [str(k) for k in self.only_in_b]}


def paired_difference(a: Mapping[Hashable, float], b: Mapping[Hashable, float], *,
                      level: float = 0.95) -> PairedDifference:
    """Mean and t interval of ``a[k] - b[k]`` over the keys (seeds) both arms have."""
    common = sorted(set(a) & set(b), key=lambda k: (str(type(k)), k))
    diffs = tuple(float(a[k]) - float(b[k]) for k in common)
    return PairedDifference(mean_ci(diffs, level=level), tuple(common), diffs,
                            tuple(sorted((k for k in a if k not in b), key=str)),
                            tuple(sorted((k for k in b if k not in a), key=str)))


__all__ = ["BootstrapAuc", "Interval", "LabelAuc", "PairedBootstrapAuc", "PairedDifference", "SeedSummary",
           "bootstrap_auc", "mean_ci", "paired_bootstrap_auc", "paired_difference", "roc_auc", "t_cdf",
           "t_quantile", "undefined_reason", "weighted_auc"]
