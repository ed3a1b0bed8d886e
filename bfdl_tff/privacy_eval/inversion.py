"""Gradient / update inversion against what each party observes (paper 3.3, 3.5; claim C3).

The paper reports an "inversion attack rate" of 9.8% / 6.5% / 1.7% (centralized / federated /
B-FDL) without defining it. This module runs a real attack and reports a defined rate instead.

Attack (the observer is the aggregator):

* **DLG** (Zhu, Liu & Han 2019) optimises a dummy image so that its gradient matches the
  observed one. **Inverting Gradients** (Geiping et al. 2020) replaces the Euclidean gradient
  distance by the cosine distance over all parameters, adds a total-variation prior, keeps the
  image in the box [0, 1] and picks the best of several random restarts by the matching loss
  (the attacker never sees the truth). This is what :func:`invert_batch` implements: Adam on the
  image with the sign of its gradient, step decay x0.1 at 3/8, 5/8, 7/8 of the iterations.
* **Many targets at once.** :func:`invert_batch` inverts ``P`` observed updates (and ``R``
  restarts of each) in one optimisation over a ``[P * R, n, S, S, C]`` dummy tensor: the loss is
  the *sum* of the independent per-problem losses, so each problem's gradient is exactly its own
  (:mod:`bfdl_tff.privacy_eval.problem_grads` computes the ``P * R`` weight gradients in one
  pass), and Adam, the sign, the box and the step schedule act element-wise. The trajectory of
  every problem is therefore the one it would have alone (``tests/privacy_eval`` checks this
  against one-problem runs); only the wall time is shared.
* Labels: for one image they are recovered exactly from the update (iDLG for sigmoid outputs,
  :mod:`bfdl_tff.privacy_eval.label_recovery`). For ``n > 1`` images the reconstruction is, by
  default (``label_mode = "oracle"``), given the true labels (the strongest attacker, as in
  Geiping et al.'s batch experiments), so the measured image leakage is an upper bound for a
  label-blind attacker; ``label_mode = "joint"`` is the label-blind DLG variant that optimises the
  labels (as sigmoid logits) together with the images.

Local steps > 1: the attacker matches the whole update against the gradient of the mean loss of
the ``n`` dummies at the broadcast weights (the FedSGD approximation). Geiping et al. also unroll
the local steps; that is not implemented, so the failure measured at many local steps is a lower
bound on what a stronger attacker could do.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from bfdl_tff.privacy_eval.problem_grads import make_problem_gradients


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
    # problem gradients (problem_grads): auto = loop for a few large problems (>= LOOP_MIN_IMAGES
    # images each, <= LOOP_MAX_PROBLEMS problems incl. restarts), else chain (vmap if unsupported)
    engine: str = "auto"
    # What the dummy gradient is turned into before matching: "gradient" (SGD clients: the update
    # is -lr * gradient) or "adam" (Adam clients with fresh state: the first step is
    # -lr * g / (|g| + eps'), a sign; matched as the soft sign g / (|g| + tau), tau = adam_tau *
    # mean |g| of the problem, so the objective stays differentiable)
    match: str = "gradient"
    adam_tau: float = 0.2


@dataclass
class InversionResult:
    """One problem's best restart."""

    images: np.ndarray  # [n, S, S, C]
    matching_loss: float  # 1 - cosine of the best restart
    labels: np.ndarray | None = None  # labels used / found by the best restart
    restart_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class BatchInversion:
    """Every problem's best restart (``P`` problems of ``n`` images)."""

    images: np.ndarray  # [P, n, S, S, C]
    matching_loss: np.ndarray  # [P]
    labels: np.ndarray  # [P, n, K] used or found
    restart_losses: np.ndarray  # [P, R]
    seconds: float
    engine: str


def total_variation(x: Any) -> Any:
    """Anisotropic TV of each problem ``x [Q, n, S, S, C]``: mean |difference| of neighbours -> ``[Q]``."""
    import tensorflow as tf

    dx = tf.reduce_mean(tf.abs(x[:, :, :, 1:, :] - x[:, :, :, :-1, :]), axis=[1, 2, 3, 4])
    dy = tf.reduce_mean(tf.abs(x[:, :, 1:, :, :] - x[:, :, :-1, :, :]), axis=[1, 2, 3, 4])
    return dx + dy


_STEP_CACHE: dict[tuple, Any] = {}
LOOP_MIN_IMAGES = 8
LOOP_MAX_PROBLEMS = 16


def choose_engine(engine: str, problems: int, images: int) -> str:
    """The problem-gradient engine of an inversion batch (see ``AttackConfig.engine``)."""
    if engine != "auto":
        return engine
    return "loop" if images >= LOOP_MIN_IMAGES and problems <= LOOP_MAX_PROBLEMS else "auto"


def soft_sign(grads: list, tau: float) -> list:
    """``g / (|g| + tau * mean|g|)`` per problem (leading axis), over all variables together."""
    import tensorflow as tf

    total = tf.add_n([tf.reduce_sum(tf.reshape(tf.abs(a), [tf.shape(a)[0], -1]), axis=1) for a in grads])
    count = tf.add_n([tf.cast(tf.reduce_prod(tf.shape(a)[1:]), tf.float32) for a in grads])
    scale = tf.stop_gradient(tau * total / count + 1e-20)
    return [a / (tf.abs(a) + tf.reshape(scale, [-1] + [1] * (a.shape.rank - 1))) for a in grads]


def _step_fn(model: Any, tv_weight: float, engine: str, match: str = "gradient",
             adam_tau: float = 0.2) -> tuple[Any, str]:
    """A compiled ``(x, y, targets) -> (1 - cos [Q], d total / d x, d total / d y)`` (cached)."""
    import tensorflow as tf

    if match not in ("gradient", "adam"):
        raise ValueError(f"unknown match {match!r} (gradient or adam)")
    key = (id(model), float(tv_weight), engine, match, float(adam_tau))
    if key in _STEP_CACHE and _STEP_CACHE[key][0] is model:
        return _STEP_CACHE[key][1], _STEP_CACHE[key][2]
    grads_fn, used = make_problem_gradients(model, engine=engine)

    def sq(t: Any) -> Any:
        return tf.reduce_sum(tf.reshape(t, [tf.shape(t)[0], -1]) ** 2, axis=1)

    @tf.function(reduce_retracing=engine != "loop")  # loop: static number of problems
    def step(x: Any, y: Any, target: list) -> tuple[Any, Any, Any]:
        with tf.GradientTape(persistent=True) as outer:
            outer.watch(x)
            outer.watch(y)
            g = grads_fn(x, y)
            if match == "adam":
                g = soft_sign(g, adam_tau)
            dot = tf.add_n([tf.reduce_sum(tf.reshape(a * b, [tf.shape(a)[0], -1]), axis=1) for a, b in zip(g, target)])
            g_norm = tf.sqrt(tf.add_n([sq(a) for a in g]))
            t_norm = tf.sqrt(tf.add_n([sq(t) for t in target]))
            cos_loss = 1.0 - dot / (g_norm * t_norm + 1e-12)
            total = tf.reduce_sum(cos_loss) + tv_weight * tf.reduce_sum(total_variation(x))
            matching = tf.reduce_sum(cos_loss)
        return cos_loss, outer.gradient(total, x), outer.gradient(matching, y)

    if len(_STEP_CACHE) > 8:
        _STEP_CACHE.clear()
    _STEP_CACHE[key] = (model, step, used)
    return step, used


def _initial(seeds: Sequence[int], restarts: int, n: int, shape: tuple[int, ...], k: int,
             joint: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Dummies ``[P * R, n, ...]`` (restart-major within a problem) from each problem's own seed."""
    xs, ys = [], []
    for s in seeds:
        rng = np.random.default_rng(s)
        for _ in range(restarts):
            xs.append(rng.uniform(0.0, 1.0, size=(n, *shape)).astype(np.float32))
            if joint:
                ys.append(rng.normal(0.0, 0.1, size=(n, k)).astype(np.float32))
    return np.stack(xs), (np.stack(ys) if joint else None)


def _optimise(step: Any, target: list, x0: np.ndarray, y_fixed: np.ndarray | None, ylog0: np.ndarray | None,
              cfg: AttackConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the iterations; returns ``(images, matching loss per problem, labels used/found)``."""
    import tensorflow as tf

    joint = y_fixed is None
    x = tf.Variable(x0)
    opt = tf.keras.optimizers.Adam(learning_rate=cfg.lr)
    if joint:
        ylog = tf.Variable(ylog0)
        opt_y = tf.keras.optimizers.Adam(learning_rate=cfg.lr)
    else:
        y = tf.constant(y_fixed, tf.float32)
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
    loss = np.nan_to_num(final.numpy().astype(np.float64), nan=2.0, posinf=2.0, neginf=2.0)
    labels = np.asarray(y.numpy() > 0.5, np.float32) if joint else np.asarray(y_fixed, np.float32)
    return x.numpy(), loss, labels


def invert_batch(
    model: Any,
    observed: Sequence[Sequence[np.ndarray]],
    labels: np.ndarray | None,
    *,
    cfg: AttackConfig,
    n_images: int | None = None,
    seeds: Sequence[int] | None = None,
    image_shape: tuple[int, int, int] | None = None,
) -> BatchInversion:
    """Reconstruct, for each of ``P`` observed updates, ``n`` images whose gradient best matches it.

    ``observed[p]`` is an update ``w_after - w_before`` (about ``-lr * gradient``); the dummy
    gradient is matched against ``-observed[p]``. ``labels [P, n, K]`` (known or iDLG-recovered)
    fixes the labels; ``labels=None`` optimises them jointly (label-blind DLG) for ``n_images``
    images. Problem ``p`` draws its restarts' starting points from ``seeds[p]`` (default
    ``cfg.seed + p``), so a problem's result does not depend on the others in the batch. Returns
    each problem's restart with the lowest matching loss (the attacker cannot see the truth)."""
    t0 = time.perf_counter()
    joint = labels is None
    p = len(observed)
    if joint and not n_images:
        raise ValueError("label-blind inversion needs n_images")
    if not joint and np.asarray(labels).shape[0] != p:
        raise ValueError(f"labels for {np.asarray(labels).shape[0]} problems, {p} observed updates")
    n = int(n_images if joint else np.asarray(labels).shape[1])
    shape = tuple(image_shape or tuple(int(d) for d in model.input_shape[1:]))
    out_shape = model.output_shape[0] if isinstance(model.output_shape, list) else model.output_shape
    k = int(out_shape[-1])
    r = cfg.restarts
    seeds = list(seeds) if seeds is not None else [cfg.seed + i for i in range(p)]
    step, used = _step_fn(model, cfg.tv_weight, choose_engine(cfg.engine, p * cfg.restarts, n), cfg.match,
                          cfg.adam_tau)
    import tensorflow as tf

    target = [tf.constant(np.repeat(-np.stack([np.asarray(u[j], np.float32) for u in observed]), r, axis=0))
              for j in range(len(observed[0]))]
    x0, ylog0 = _initial(seeds, r, n, shape, k, joint)
    y_fixed = None if joint else np.repeat(np.asarray(labels, np.float32), r, axis=0)
    x, loss, found = _optimise(step, target, x0, y_fixed, ylog0, cfg)
    loss = loss.reshape(p, r)
    best = np.argmin(loss, axis=1)
    pick = np.arange(p) * r + best
    return BatchInversion(images=x[pick], matching_loss=loss[np.arange(p), best], labels=found[pick],
                          restart_losses=loss, seconds=time.perf_counter() - t0, engine=used)


def invert(
    model: Any,
    observed: Sequence[np.ndarray],
    labels: np.ndarray | None,
    *,
    cfg: AttackConfig,
    n_images: int | None = None,
    image_shape: tuple[int, int, int] | None = None,
) -> InversionResult:
    """One observed update (:func:`invert_batch` with one problem, seeded with ``cfg.seed``)."""
    res = invert_batch(model, [observed], None if labels is None else np.asarray(labels)[None], cfg=cfg,
                       n_images=n_images, seeds=[cfg.seed], image_shape=image_shape)
    loss = float(res.matching_loss[0])
    return InversionResult(images=res.images[0], matching_loss=loss if math.isfinite(loss) else 2.0,
                           labels=res.labels[0], restart_losses=[float(v) for v in res.restart_losses[0]],
                           seconds=res.seconds)


__all__ = ["AttackConfig", "BatchInversion", "InversionResult", "invert", "invert_batch", "soft_sign",
           "total_variation"]
