"""Leakage metrics shared by the attacks (paper 3.3 / 3.5, claim C3).

The paper reports a "privacy leakage (inversion attack rate)" without defining it. This module
holds the definitions the reproduction uses instead (see ``docs/privacy.md``):

- :func:`wilson_interval`: 95% Wilson score interval of a success proportion (inversion).
- :func:`clopper_pearson`: exact (Clopper-Pearson 1934) interval of a binomial proportion
  (membership TPR / FPR at a threshold).
- :func:`psnr`, :func:`ssim`: image similarity in [0, 1] intensity units. SSIM is
  ``tf.image.ssim`` (Wang et al. 2004, 11x11 Gaussian window, sigma 1.5, K1=0.01, K2=0.03);
  the window shrinks for images smaller than 11 px.
- :func:`standardise`, :func:`calibrate`: per-image standardisation and mapping a reconstruction
  to a target's mean and standard deviation (models that standardise their input: the update
  carries no information about an image's brightness and contrast).
- :func:`reidentifies`: the true image is the nearest neighbour (pixel L2) of the
  reconstruction among the target and >= 100 other images of the same hospital.
- :func:`roc_summary`: AUC, attacker advantage max(TPR - FPR) (Yeom et al. 2018) and TPR at
  fixed low FPR (Carlini et al. 2022) of a membership score, with the counts behind each
  low-FPR point (:func:`low_fpr_point`) and their Clopper-Pearson intervals.
- :func:`dp_tpr_bound`: the largest TPR any test can reach at a given FPR against an
  (epsilon, delta)-DP mechanism (hypothesis-testing view of DP, Kairouz, Oh & Viswanath 2015):
  ``TPR <= min(e^eps * FPR + delta, 1 - e^-eps * (1 - delta - FPR))``.

Everything here is numpy / scipy (SSIM imports TensorFlow lazily).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def wilson_interval(successes: int, n: int, *, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for ``successes`` out of ``n`` (95% by default); (0, 1) if n == 0."""
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (lo, hi)


def clopper_pearson(successes: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided interval for ``successes`` out of ``n`` (each tail ``(1 - confidence) / 2``):
    ``[Beta((a/2); k, n - k + 1), Beta(1 - a/2; k + 1, n - k)]``, 0 / 1 at the ends; (0, 1) if n == 0."""
    from scipy.stats import beta

    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return (0.0, 1.0)
    a = 1.0 - confidence
    lo = 0.0 if successes == 0 else float(beta.ppf(a / 2, successes, n - successes + 1))
    hi = 1.0 if successes == n else float(beta.ppf(1 - a / 2, successes + 1, n - successes))
    return (lo, hi)


def psnr(a: np.ndarray, b: np.ndarray, *, max_val: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of two images of the same shape (inf if identical)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * math.log10(max_val * max_val / mse))


def ssim(a: np.ndarray, b: np.ndarray, *, max_val: float = 1.0) -> float:
    """Structural similarity of two images ``[H, W, C]`` with values in [0, max_val]."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"ssim needs two [H, W, C] images of the same shape, got {a.shape} and {b.shape}")
    return float(ssim_pairs(a[None], b[None], max_val=max_val)[0])


def ssim_matrix(recs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """SSIM of every reconstruction (rows) against every target (columns)."""
    recs = np.asarray(recs, np.float32)
    targets = np.asarray(targets, np.float32)
    r, t = len(recs), len(targets)
    return ssim_pairs(np.repeat(recs, t, axis=0), np.tile(targets, (r, 1, 1, 1))).reshape(r, t)


def standardise(x: np.ndarray) -> np.ndarray:
    """Each image ``[..., H, W, C]`` to zero mean and unit standard deviation over its pixels."""
    x = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim - 3, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    std = x.std(axis=axes, keepdims=True)
    return (x - mean) / np.maximum(std, 1e-8)


def calibrate(recs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Reconstructions mapped to the targets' per-image mean and standard deviation, in [0, 1]."""
    t = np.asarray(targets, np.float64)
    axes = tuple(range(t.ndim - 3, t.ndim))
    out = standardise(recs) * t.std(axis=axes, keepdims=True) + t.mean(axis=axes, keepdims=True)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def ssim_pairs(a: np.ndarray, b: np.ndarray, *, chunk: int = 4096, max_val: float = 1.0) -> np.ndarray:
    """SSIM of ``a[i]`` against ``b[i]`` for image stacks ``[N, H, W, C]`` (in chunks); an 11-pixel
    Gaussian window (sigma 1.5), shrunk to the image for images under 11 pixels."""
    import tensorflow as tf

    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"ssim_pairs needs two [N, H, W, C] stacks of the same shape, got {a.shape} and {b.shape}")
    size = int(min(11, a.shape[1], a.shape[2]))
    sigma = 1.5 * size / 11.0
    out = [tf.image.ssim(tf.constant(a[i : i + chunk]), tf.constant(b[i : i + chunk]), max_val=max_val,
                         filter_size=size, filter_sigma=sigma).numpy() for i in range(0, len(a), chunk)]
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def reidentifies(reconstruction: np.ndarray, target_index: int, gallery: np.ndarray) -> bool:
    """True iff ``gallery[target_index]`` is the nearest neighbour (pixel L2) of ``reconstruction``.

    ``gallery`` holds the target and the other images of the same hospital (>= 101 images for the
    project's success criterion; the caller checks the size). Ties count as failure."""
    g = np.asarray(gallery, np.float64).reshape(len(gallery), -1)
    r = np.asarray(reconstruction, np.float64).reshape(1, -1)
    d = np.sum((g - r) ** 2, axis=1)
    best = float(d[target_index])
    others = np.delete(d, target_index)
    return bool(others.size == 0 or best < float(others.min()))


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target_fpr: float) -> float:
    """Largest TPR among ROC points with FPR <= ``target_fpr`` (0 if there is none)."""
    ok = fpr <= target_fpr + 1e-12
    return float(tpr[ok].max()) if np.any(ok) else 0.0


def low_fpr_point(scores_members: Sequence[float], scores_nonmembers: Sequence[float], level: float, *,
                  confidence: float = 0.95) -> dict[str, float]:
    """The ROC point with the largest TPR at FPR <= ``level``, as counts with exact intervals.

    Threshold: the ``(k+1)``-th largest non-member score, ``k = floor(level * n_nonmembers)``;
    "member" iff score > threshold. ``fp <= k`` non-members and ``tp`` members pass. Because the
    threshold is an order statistic of the non-members, the true FPR at it has exactly the
    Clopper-Pearson distribution of ``fp`` out of ``n``; given the threshold, ``tp`` is binomial,
    so both intervals are exact (the TPR one conditionally on the threshold)."""
    m = np.nan_to_num(np.asarray(scores_members, np.float64), nan=-np.inf)
    n = np.sort(np.nan_to_num(np.asarray(scores_nonmembers, np.float64), nan=-np.inf))[::-1]
    k = int(math.floor(level * len(n) + 1e-9))
    threshold = float(n[k]) if k < len(n) else -math.inf
    tp, fp = int(np.sum(m > threshold)), int(np.sum(n > threshold))
    tlo, thi = clopper_pearson(tp, len(m), confidence=confidence)
    flo, fhi = clopper_pearson(fp, len(n), confidence=confidence)
    return {"level": level, "threshold": threshold, "tp": tp, "n_members": int(len(m)), "fp": fp,
            "n_nonmembers": int(len(n)), "tpr": tp / len(m), "fpr": fp / len(n), "tpr_ci_low": tlo,
            "tpr_ci_high": thi, "fpr_ci_low": flo, "fpr_ci_high": fhi, "confidence": confidence}


#: The low false-positive rates of the membership reports (Carlini et al. 2022).
LOW_FPRS: tuple[float, ...] = (0.001, 0.01)


def roc_summary(scores_members: Sequence[float], scores_nonmembers: Sequence[float]) -> dict[str, Any]:
    """AUC, advantage and TPR at 0.1% / 1% FPR for "higher score = more likely a member", with
    each TPR's exact 95% interval (``tpr_ci_low_at_fpr_<level>``, ``tpr_ci_high_at_fpr_<level>``)
    and the counts behind it (``low_fpr``: :func:`low_fpr_point` per level).

    Note that TPR at 0.1% FPR is only resolved with >= 1000 non-members; with fewer, the value is
    the TPR at zero false positives (``n_nonmembers`` tells the reader)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    m = np.asarray(scores_members, np.float64)
    n = np.asarray(scores_nonmembers, np.float64)
    if m.size == 0 or n.size == 0:
        raise ValueError("need at least one member and one non-member score")
    y = np.concatenate([np.ones(m.size), np.zeros(n.size)])
    s = np.concatenate([m, n])
    s = np.nan_to_num(s, nan=-np.inf)
    fpr, tpr, _ = roc_curve(y, s)
    out: dict[str, Any] = {"auc": float(roc_auc_score(y, s)), "advantage": float(np.max(tpr - fpr))}
    low = {}
    for level in LOW_FPRS:
        pt = low_fpr_point(m, n, level)
        key = f"{level:g}"
        low[key] = pt
        out[f"tpr_at_fpr_{key}"] = pt["tpr"]
        out[f"tpr_ci_low_at_fpr_{key}"] = pt["tpr_ci_low"]
        out[f"tpr_ci_high_at_fpr_{key}"] = pt["tpr_ci_high"]
    out["low_fpr"] = low
    return out


def dp_tpr_bound(epsilon: float, delta: float, fpr: float) -> float:
    """Upper bound on a membership test's TPR at ``fpr`` against an (epsilon, delta)-DP algorithm.

    Kairouz, Oh & Viswanath (2015), Theorem 2.1: every rejection region satisfies
    ``FPR + e^eps * FNR >= 1 - delta`` and ``FNR + e^eps * FPR >= 1 - delta``, hence
    ``TPR <= min(e^eps * FPR + delta, 1 - e^-eps * (1 - delta - FPR))`` (clipped to [0, 1])."""
    if epsilon < 0 or not 0 <= delta <= 1 or not 0 <= fpr <= 1:
        raise ValueError(f"invalid (epsilon, delta, fpr) = ({epsilon}, {delta}, {fpr})")
    if math.isinf(epsilon):
        return 1.0
    a = math.exp(epsilon) * fpr + delta
    b = 1.0 - math.exp(-epsilon) * (1.0 - delta - fpr)
    return float(min(1.0, max(0.0, min(a, b))))


__all__ = [
    "LOW_FPRS",
    "calibrate",
    "clopper_pearson",
    "dp_tpr_bound",
    "low_fpr_point",
    "psnr",
    "reidentifies",
    "roc_summary",
    "ssim",
    "ssim_matrix",
    "ssim_pairs",
    "standardise",
    "tpr_at_fpr",
    "wilson_interval",
]
