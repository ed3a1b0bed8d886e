"""Gradient / update inversion against what each party observes (paper 3.3, 3.5; claim C3).

The paper reports an "inversion attack rate" of 9.8% / 6.5% / 1.7% (centralized / federated /
B-FDL) without defining it. This module runs a real attack and reports a defined rate instead.

Attack (the observer is the aggregator):

* **DLG** (Zhu, Liu & Han 2019) optimises a dummy image so that its gradient matches the
  observed one. **Inverting Gradients** (Geiping et al. 2020) replaces the Euclidean gradient
  distance by the cosine distance over all parameters, adds a total-variation prior, keeps the
  image in the box [0, 1] and picks the best of several random restarts by the matching loss
  (the attacker never sees the truth). This is what :func:`invert` implements, with
  ``tf.GradientTape`` (second order: gradient of the gradient distance w.r.t. the image) and Adam
  on the image with step decay at 3/8, 5/8, 7/8 of the iterations.
* Labels: for one image they are recovered exactly from the update (iDLG for sigmoid outputs,
  :mod:`bfdl_tff.privacy_eval.label_recovery`). For ``n > 1`` images the reconstruction is, by
  default (``AttackConfig.label_mode = "oracle"``), given the true labels (the strongest
  attacker, as in Geiping et al.'s batch experiments), so the measured image leakage is an upper
  bound for a label-blind attacker; ``label_mode = "joint"`` is the label-blind DLG variant that
  optimises the labels (as sigmoid logits) together with the images.

What is attacked (the observed updates) is built in :mod:`bfdl_tff.privacy_eval.observation`;
the sweep over settings and the success rule are in :mod:`bfdl_tff.privacy_eval.inversion_sweep`.

Local steps > 1: the attacker matches the whole update against the gradient of the mean loss
of the ``n`` dummies at the broadcast weights (the FedSGD approximation). Geiping et al. also
unroll the local steps; that is not implemented, so the failure measured at many local steps is
a lower bound on what a stronger attacker could do.

Success (project definition, ``docs/privacy.md``): an attacked image counts as reconstructed
iff its best reconstruction (the restart with the lowest matching loss; reconstructions are
assigned to originals by maximum-SSIM matching) has SSIM >= 0.5 **and** re-identifies it: the
true image is the nearest neighbour (pixel L2) of the reconstruction among the target and >= 100
other images of the same hospital. The success rate is reported with a Wilson 95% interval.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from bfdl_tff.privacy_eval.observation import bce_mean, classification_forward


@dataclass
class AttackConfig:
    """Inverting Gradients hyper-parameters (Geiping et al. 2020, defaults scaled for 2 CPUs)."""

    iterations: int = 300
    restarts: int = 2
    lr: float = 0.1
    tv_weight: float = 1e-4
    signed_gradients: bool = True  # Geiping et al. use the sign of the image gradient in Adam
    # Labels for updates of n > 1 images: "oracle" (true labels: strongest attacker, as in
    # Geiping et al.'s batch experiments) or "joint" (label-blind, optimised with the images, DLG).
    label_mode: str = "oracle"
    seed: int = 0


@dataclass
class InversionResult:
    images: np.ndarray  # best restart [n, S, S, C]
    matching_loss: float  # 1 - cosine of the best restart
    labels: np.ndarray | None = None  # labels used / found by the best restart
    restart_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def total_variation(x: Any) -> Any:
    """Anisotropic TV: mean absolute difference of neighbouring pixels."""
    import tensorflow as tf

    dx = tf.reduce_mean(tf.abs(x[:, :, 1:, :] - x[:, :, :-1, :]))
    dy = tf.reduce_mean(tf.abs(x[:, 1:, :, :] - x[:, :-1, :, :]))
    return dx + dy


_STEP_CACHE: dict[tuple[int, float], Any] = {}


def _step_fn(model: Any, tv_weight: float) -> Any:
    """A compiled ``(x, y, target) -> (1 - cos, d total / d x, d total / d y)`` (cached)."""
    import tensorflow as tf

    key = (id(model), float(tv_weight))
    if key in _STEP_CACHE and _STEP_CACHE[key][0] is model:
        return _STEP_CACHE[key][1]
    fwd = classification_forward(model)
    tvars = model.trainable_variables

    @tf.function(reduce_retracing=True)
    def step(x: Any, y: Any, target: list) -> tuple[Any, Any]:
        with tf.GradientTape(persistent=True) as outer:
            outer.watch(x)
            outer.watch(y)
            with tf.GradientTape() as inner:
                loss = bce_mean(y, fwd(x))
            g = inner.gradient(loss, tvars)
            dot = tf.add_n([tf.reduce_sum(a * b) for a, b in zip(g, target)])
            g_norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(a)) for a in g]))
            t_norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(t)) for t in target]))
            cos_loss = 1.0 - dot / (g_norm * t_norm + 1e-12)
            total = cos_loss + tv_weight * total_variation(x)
        return cos_loss, outer.gradient(total, x), outer.gradient(cos_loss, y)

    if len(_STEP_CACHE) > 8:
        _STEP_CACHE.clear()
    _STEP_CACHE[key] = (model, step)
    return step


def _restart(step: Any, target: list, labels: np.ndarray | None, *, shape: tuple[int, ...], n: int,
             k: int, cfg: AttackConfig, rng: np.random.Generator) -> tuple[np.ndarray, float, np.ndarray]:
    """One random restart: ``(images, matching loss, labels)``. ``labels=None`` optimises them too."""
    import tensorflow as tf

    joint = labels is None
    x = tf.Variable(rng.uniform(0.0, 1.0, size=(n, *shape)).astype(np.float32))
    opt = tf.keras.optimizers.Adam(learning_rate=cfg.lr)
    if joint:
        ylog = tf.Variable(rng.normal(0.0, 0.1, size=(n, k)).astype(np.float32))
        opt_y = tf.keras.optimizers.Adam(learning_rate=cfg.lr)
    else:
        y = tf.constant(labels, tf.float32)
    milestones = {int(cfg.iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)}
    lr_now = cfg.lr
    for it in range(cfg.iterations):
        if it in milestones:
            lr_now *= 0.1
            opt.learning_rate.assign(lr_now)
            if joint:
                opt_y.learning_rate.assign(lr_now)
        if joint:
            y = tf.sigmoid(ylog)
        _, gx, gy = step(tf.convert_to_tensor(x), y, target)
        if cfg.signed_gradients:
            gx = tf.sign(gx)
        opt.apply_gradients([(gx, x)])
        x.assign(tf.clip_by_value(x, 0.0, 1.0))
        if joint:
            opt_y.apply_gradients([(gy * y * (1.0 - y), ylog)])
    if joint:
        y = tf.sigmoid(ylog)
    final, _, _ = step(tf.convert_to_tensor(x), y, target)
    loss_val = float(final.numpy())
    return x.numpy().copy(), loss_val if math.isfinite(loss_val) else 2.0, np.asarray(y.numpy() > 0.5, np.float32)


def invert(
    model: Any,
    observed: Sequence[np.ndarray],
    labels: np.ndarray | None,
    *,
    cfg: AttackConfig,
    n_images: int | None = None,
    image_shape: tuple[int, int, int] | None = None,
) -> InversionResult:
    """Reconstruct images whose gradient best matches ``observed`` (cosine distance + TV).

    ``observed`` is an update ``w_after - w_before`` (about ``-lr * gradient``); the dummy
    gradient is matched against ``-observed``. With ``labels`` (known or iDLG-recovered) only the
    images are optimised; with ``labels=None`` the labels are optimised jointly as sigmoid
    logits (DLG, label-blind) for ``n_images`` images. Returns the restart with the lowest
    matching loss (the attacker cannot see the truth)."""
    import tensorflow as tf

    t0 = time.perf_counter()
    joint = labels is None
    if joint and not n_images:
        raise ValueError("label-blind inversion needs n_images")
    n = int(n_images if joint else len(labels))  # type: ignore[arg-type]
    shape = tuple(image_shape or tuple(int(d) for d in model.input_shape[1:]))
    step = _step_fn(model, cfg.tv_weight)
    target = [tf.constant(-np.asarray(a, np.float32)) for a in observed]
    k = int(model.output_shape[-1] if not isinstance(model.output_shape, list) else model.output_shape[0][-1])
    best: InversionResult | None = None
    losses: list[float] = []
    rng = np.random.default_rng(cfg.seed)
    for _ in range(cfg.restarts):
        images, loss_val, found = _restart(step, target, labels, shape=shape, n=n, k=k, cfg=cfg, rng=rng)
        losses.append(loss_val)
        if best is None or loss_val < best.matching_loss:
            best = InversionResult(images=images, matching_loss=loss_val, labels=found)
    assert best is not None
    best.restart_losses = losses
    best.seconds = time.perf_counter() - t0
    return best


__all__ = ["AttackConfig", "InversionResult", "invert", "total_variation"]
