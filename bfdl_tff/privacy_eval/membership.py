"""Membership inference on a released model (paper 3.5 "membership inference attacks"; claim C3).

Membership inference is the leakage measure common to all three arms (centralized, federated,
B-FDL): every arm releases a model, while only the federated arms have an update channel to
invert. Implemented with numpy / scikit-learn / Keras because tensorflow-privacy 0.9.0's wheel
lacks its ``privacy_tests/membership_inference_attack`` package.

* **Loss threshold** (Yeom et al. 2018): score = minus the per-example binary cross-entropy
  averaged over the 14 findings; members tend to have lower loss.
* **LiRA** (Carlini et al. 2022, "Membership Inference Attacks From First Principles"): shadow
  models are trained on random halves of the population (members and non-members of the target
  together), so every example has "in" and "out" shadows. For multi-label sigmoid outputs the
  per-example statistic is the sum over findings of the logit-scaled confidence in the true
  label, ``phi = sum_j log(p_j / (1 - p_j))`` with ``p_j`` the predicted probability of the true
  value of finding ``j`` (for one label this is exactly LiRA's logit scaling; the sum of
  per-label log-odds is approximately Gaussian, which is what LiRA's parametric test needs).
  *Online* LiRA scores ``log N(phi; mu_in, sigma_in) - log N(phi; mu_out, sigma_out)``;
  *offline* LiRA uses the out-shadows only, score ``log Phi((phi - mu_out) / sigma_out)``. With
  fewer than ~64 shadows the variances are pooled over examples (Carlini et al.'s "fixed
  variance" variant). Shadows come in complementary pairs (one trained on a random half, one on
  the other half), so every example has exactly ``n_shadows / 2`` in- and out-models. The result
  carries ``stability``: the same attack scored with the first 2, 4, 8, ... shadows.

Shadows are trained "on the same pipeline" in the sense of the same Keras model builder, loss,
optimizer, learning rate, batch size and number of passes over the data as the target
(``federated.*``), but centrally with ``model.fit`` rather than through TFF FedAvg, and without
DP noise; with ``always_in`` (the run's other training images) each shadow's training set has
the target's size. For a DP target the non-DP shadows are a mismatch: the per-example in/out
distributions they estimate are further apart than the target's, so LiRA's likelihood ratio is
miscalibrated and the attack weaker than one with DP shadows -- still a valid test (its TPR/FPR
are measured on the target), so the DP audit stays valid; only its power suffers. Shadow
statistics are cached in-process (:func:`shadow_statistics`), so the three arms of one seed,
which share data and recipe, train them once.

Reported (``membership.json``): AUC, attacker advantage ``max(TPR - FPR)`` and TPR at 0.1% and
1% FPR of each attack with exact Clopper-Pearson intervals and the counts behind them
(:func:`bfdl_tff.privacy_eval.metrics.low_fpr_point`), and for DP runs the largest TPR at those
FPRs allowed by the run's (epsilon, delta) (:func:`bfdl_tff.privacy_eval.metrics.dp_tpr_bound`,
Kairouz et al. 2015) and the DP audit (:mod:`bfdl_tff.privacy_eval.dp_audit`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from bfdl_tff.privacy_eval import metrics as M

_EPS = 1e-7


def predict_probs(model: Any, x: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    """Findings probabilities ``[N, 14]`` (the first output of a two-output model)."""
    import tensorflow as tf

    outs = []
    for i in range(0, len(x), batch_size):
        o = model(tf.constant(x[i : i + batch_size], tf.float32), training=False)
        if isinstance(o, (list, tuple)):
            o = o[0]
        outs.append(np.asarray(o, np.float64))
    return np.concatenate(outs) if outs else np.zeros((0, 14))


def per_example_loss(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Binary cross-entropy per example, averaged over findings."""
    p = np.clip(probs, _EPS, 1 - _EPS)
    return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p), axis=1)


def lira_statistic(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``sum_j log(p_j / (1 - p_j))`` with ``p_j`` the probability of the true value of finding j."""
    p = np.clip(probs, _EPS, 1 - _EPS)
    p_true = np.where(y > 0.5, p, 1 - p)
    return np.sum(np.log(p_true) - np.log1p(-p_true), axis=1)


def loss_threshold_attack(
    model: Any, members: tuple[np.ndarray, np.ndarray], nonmembers: tuple[np.ndarray, np.ndarray]
) -> dict[str, float]:
    """Yeom et al. (2018): score = -loss."""
    lm = per_example_loss(predict_probs(model, members[0]), members[1])
    ln = per_example_loss(predict_probs(model, nonmembers[0]), nonmembers[1])
    out = M.roc_summary(-lm, -ln)
    out["mean_loss_members"] = float(np.mean(lm))
    out["mean_loss_nonmembers"] = float(np.mean(ln))
    return out


@dataclass
class ShadowRecipe:
    """How shadow models are trained (mirror the target's pipeline)."""

    epochs: int = 10
    batch_size: int = 16
    lr: float = 0.05
    optimizer: str = "sgd"  # sgd | adam
    momentum: float = 0.9


def train_keras(
    build_model: Callable[[], Any], x: np.ndarray, y: np.ndarray, *, recipe: ShadowRecipe, seed: int
) -> Any:
    """A fresh model from ``build_model`` fitted on ``(x, y)`` with binary cross-entropy."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    model = build_model()
    if recipe.optimizer == "adam":
        opt = tf.keras.optimizers.Adam(recipe.lr)
    else:
        opt = tf.keras.optimizers.SGD(recipe.lr, momentum=recipe.momentum)
    n_out = len(model.outputs)
    if n_out > 1:  # a segmentation head: train the findings output only (no masks here)
        model = tf.keras.Model(model.inputs, model.outputs[0])
    model.compile(optimizer=opt, loss=tf.keras.losses.BinaryCrossentropy())
    model.fit(x, y, epochs=recipe.epochs, batch_size=recipe.batch_size, shuffle=True, verbose=0)
    return model


@dataclass
class ShadowStats:
    """Each shadow's LiRA statistic on every audited example and whether the example was in its
    training set (``[n_shadows, N]`` each; shadow ``2p`` and ``2p + 1`` are a complementary pair)."""

    stats: np.ndarray
    inmask: np.ndarray
    seconds: float
    train_size: int  # images per shadow training set


#: Shadow statistics of this process, by a digest of everything that determines them (data, model,
#: recipe, shadows, seed): the reproduction attacks the three arms' runs of one seed in one process,
#: and their shadows are identical (same data, same recipe), so they are trained once.
_SHADOW_CACHE: dict[str, ShadowStats] = {}


def digest(*parts: Any) -> str:
    """SHA-256 over arrays (dtype, shape, bytes) and the ``repr`` of anything else (cache keys)."""
    import hashlib

    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(str((part.dtype, part.shape)).encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(repr(part).encode())
    return h.hexdigest()


def shadow_statistics(
    build_model: Callable[[], Any],
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_shadows: int,
    recipe: ShadowRecipe,
    seed: int,
    always_in: tuple[np.ndarray, np.ndarray] | None = None,
    train_fn: Callable[..., Any] | None = None,
    cache_key: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> ShadowStats:
    """Train ``n_shadows`` shadows (complementary pairs of random halves of ``x``, each plus the
    ``always_in`` images, so a shadow's training set has the target's size) and record every
    shadow's statistic on ``x``. Cached in-process under ``cache_key`` when given."""
    if cache_key is not None and cache_key in _SHADOW_CACHE:
        if progress:
            progress(f"{n_shadows} shadows: reused from this process (same data, model and recipe)")
        return _SHADOW_CACHE[cache_key]
    train_fn = train_fn or train_keras
    n = len(x)
    rng = np.random.default_rng(seed)
    stats = np.zeros((n_shadows, n))
    inmask = np.zeros((n_shadows, n), bool)
    extra_x, extra_y = always_in if always_in is not None else (x[:0], y[:0])
    t0 = time.perf_counter()
    for p in range(n_shadows // 2):
        half = np.zeros(n, bool)
        half[rng.permutation(n)[: n // 2]] = True
        for j, mask in enumerate((half, ~half)):
            s = 2 * p + j
            tx, ty = np.concatenate([x[mask], extra_x]), np.concatenate([y[mask], extra_y])
            shadow = train_fn(build_model, tx, ty, recipe=recipe, seed=seed * 1000 + s + 1)
            stats[s] = lira_statistic(predict_probs(shadow, x), y)
            inmask[s] = mask
            del shadow
            if progress:
                progress(f"shadow {s + 1}/{n_shadows} trained on {len(tx)} images ({time.perf_counter() - t0:.1f}s)")
    out = ShadowStats(stats=stats, inmask=inmask, seconds=time.perf_counter() - t0,
                      train_size=int(n // 2 + len(extra_x)))
    if cache_key is not None:
        _SHADOW_CACHE[cache_key] = out
    return out


def lira_scores(target_stat: np.ndarray, stats: np.ndarray, inmask: np.ndarray, *, online: bool) -> np.ndarray:
    """LiRA scores from the first shadows given (pooled "fixed" variance, Carlini et al. 2022)."""
    from scipy.stats import norm

    n = stats.shape[1]
    cnt_in = inmask.sum(axis=0)
    cnt_out = (~inmask).sum(axis=0)
    mu_in = np.where(inmask, stats, 0).sum(axis=0) / np.maximum(cnt_in, 1)
    mu_out = np.where(~inmask, stats, 0).sum(axis=0) / np.maximum(cnt_out, 1)
    res_in = np.where(inmask, stats - mu_in, 0.0)
    res_out = np.where(~inmask, stats - mu_out, 0.0)
    # pooled ("fixed") variance: unbiased over all residuals
    sd_in = math.sqrt(float(np.sum(res_in**2)) / max(int(cnt_in.sum()) - n, 1)) + 1e-6
    sd_out = math.sqrt(float(np.sum(res_out**2)) / max(int(cnt_out.sum()) - n, 1)) + 1e-6
    if online:
        return norm.logpdf(target_stat, mu_in, sd_in) - norm.logpdf(target_stat, mu_out, sd_out)
    return norm.logcdf((target_stat - mu_out) / sd_out)


def _stability(target_stat: np.ndarray, sh: ShadowStats, is_member: np.ndarray, *, online: bool) -> list[dict]:
    """AUC and TPR at the low FPRs (with intervals) using the first 2, 4, 8, ... shadows."""
    total = sh.stats.shape[0]
    ks = sorted({k for k in (2, 4, 8, 16, 32, 64, 128, 256) if k < total} | {total})
    out = []
    for k in ks:
        sc = lira_scores(target_stat, sh.stats[:k], sh.inmask[:k], online=online)
        summ = M.roc_summary(sc[is_member], sc[~is_member])
        summ.pop("low_fpr")
        out.append({"n_shadows": k, **summ})
    return out


def lira_attack(
    target_model: Any,
    build_model: Callable[[], Any],
    members: tuple[np.ndarray, np.ndarray],
    nonmembers: tuple[np.ndarray, np.ndarray],
    *,
    n_shadows: int = 4,
    recipe: ShadowRecipe | None = None,
    online: bool = True,
    seed: int = 0,
    train_fn: Callable[..., Any] | None = None,
    always_in: tuple[np.ndarray, np.ndarray] | None = None,
    cache_key: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """LiRA (Carlini et al. 2022) with ``n_shadows`` shadows (even; complementary pairs).

    ``always_in``: further images of the target's training set that are not audited; every
    shadow trains on them too, so its training set has the target's size (members are then a
    random half of the audited population plus these). ``stability`` in the result: the attack
    re-scored with the first 2, 4, 8, ... shadows (how much the estimate still moves)."""
    if n_shadows < 2 or n_shadows % 2:
        raise ValueError(f"n_shadows must be an even number >= 2, got {n_shadows}")
    recipe = recipe or ShadowRecipe()
    x = np.concatenate([members[0], nonmembers[0]])
    y = np.concatenate([members[1], nonmembers[1]])
    is_member = np.concatenate([np.ones(len(members[0]), bool), np.zeros(len(nonmembers[0]), bool)])
    sh = shadow_statistics(build_model, x, y, n_shadows=n_shadows, recipe=recipe, seed=seed, always_in=always_in,
                           train_fn=train_fn, cache_key=cache_key, progress=progress)
    target_stat = lira_statistic(predict_probs(target_model, x), y)
    score = lira_scores(target_stat, sh.stats, sh.inmask, online=online)
    out: dict[str, Any] = M.roc_summary(score[is_member], score[~is_member])
    out.update(
        {
            "n_shadows": n_shadows,
            "variant": "online" if online else "offline",
            "variance": "pooled",
            "shadow_epochs": recipe.epochs,
            "shadow_train_size": sh.train_size,
            "shadow_seconds": sh.seconds,
            "stability": _stability(target_stat, sh, is_member, online=online),
        }
    )
    return out


def dp_bound(epsilon: float | None, delta: float | None) -> dict[str, float] | None:
    """The (epsilon, delta)-DP ceiling on TPR at 0.1% and 1% FPR, or None without a finite epsilon."""
    if epsilon is None or delta is None or not math.isfinite(epsilon) or epsilon < 0:
        return None
    return {
        "epsilon": float(epsilon),
        "delta": float(delta),
        "tpr_bound_at_fpr_0.001": M.dp_tpr_bound(epsilon, delta, 0.001),
        "tpr_bound_at_fpr_0.01": M.dp_tpr_bound(epsilon, delta, 0.01),
    }


__all__ = [
    "ShadowRecipe",
    "ShadowStats",
    "digest",
    "lira_scores",
    "shadow_statistics",
    "dp_bound",
    "lira_attack",
    "lira_statistic",
    "loss_threshold_attack",
    "per_example_loss",
    "predict_probs",
    "train_keras",
]
