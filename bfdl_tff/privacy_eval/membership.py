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
  few shadows (the CPU default is 4) the variances are pooled over examples (Carlini et al.'s
  "fixed variance" variant). Shadows come in complementary pairs (one trained on a random half,
  one on the other half), so every example has exactly ``n_shadows / 2`` in- and out-models.

Shadows are trained "on the same pipeline" in the sense of the same Keras model builder, loss,
optimizer family, learning rate, batch size and number of passes over the data as the target,
but centrally with ``model.fit`` rather than through TFF FedAvg, and without DP noise. For a DP
target the non-DP shadows are a mismatch, so LiRA there is an empirical attack (a lower bound
on what an attacker can do), and the DP bound below is the guarantee.

Reported (``membership.json``): AUC, attacker advantage ``max(TPR - FPR)`` and TPR at 0.1% and
1% FPR of each attack, and for DP runs the largest TPR at those FPRs allowed by the run's
(epsilon, delta) (:func:`bfdl_tff.privacy_eval.metrics.dp_tpr_bound`, Kairouz et al. 2015).
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
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """LiRA (Carlini et al. 2022) with ``n_shadows`` shadows (even; complementary pairs)."""
    from scipy.stats import norm

    if n_shadows < 2 or n_shadows % 2:
        raise ValueError(f"n_shadows must be an even number >= 2, got {n_shadows}")
    recipe = recipe or ShadowRecipe()
    train_fn = train_fn or train_keras
    x = np.concatenate([members[0], nonmembers[0]])
    y = np.concatenate([members[1], nonmembers[1]])
    is_member = np.concatenate([np.ones(len(members[0]), bool), np.zeros(len(nonmembers[0]), bool)])
    n = len(x)
    rng = np.random.default_rng(seed)
    stats = np.zeros((n_shadows, n))
    inmask = np.zeros((n_shadows, n), bool)
    t0 = time.perf_counter()
    for p in range(n_shadows // 2):
        half = np.zeros(n, bool)
        half[rng.permutation(n)[: n // 2]] = True
        for j, mask in enumerate((half, ~half)):
            s = 2 * p + j
            shadow = train_fn(build_model, x[mask], y[mask], recipe=recipe, seed=seed * 1000 + s + 1)
            stats[s] = lira_statistic(predict_probs(shadow, x), y)
            inmask[s] = mask
            del shadow
            if progress:
                progress(f"shadow {s + 1}/{n_shadows} trained ({time.perf_counter() - t0:.1f}s)")
    target_stat = lira_statistic(predict_probs(target_model, x), y)
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
        score = norm.logpdf(target_stat, mu_in, sd_in) - norm.logpdf(target_stat, mu_out, sd_out)
    else:
        score = norm.logcdf((target_stat - mu_out) / sd_out)
    out: dict[str, Any] = M.roc_summary(score[is_member], score[~is_member])
    out.update(
        {
            "n_shadows": n_shadows,
            "variant": "online" if online else "offline",
            "variance": "pooled",
            "shadow_epochs": recipe.epochs,
            "shadow_seconds": time.perf_counter() - t0,
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
    "dp_bound",
    "lira_attack",
    "lira_statistic",
    "loss_threshold_attack",
    "per_example_loss",
    "predict_probs",
    "train_keras",
]
