"""What the aggregator observes of a hospital's training (paper 3.3, 3.5; the attacker's input).

Targets (:func:`observed_update`; ``docs/privacy.md``):

* ``plain_update``: one hospital's FedAvg update in plain federated training (what a curious
  aggregator sees): ``local_steps`` SGD steps with ``batch_size`` images each from the model the
  server broadcast (``n = batch_size * local_steps`` distinct images, one local epoch).
* ``secure_sum``: the sum of the updates of all hospitals (3 in the paper), which is all a
  B-FDL aggregator sees under secure aggregation. Every contributing image counts as a target
  (any reconstructed patient image is a leak, even if it cannot be attributed to a hospital).
  The sum is built without DP noise even for B-FDL runs (the attacker's best case);
  ``dp_update`` measures the DP effect.
* ``dp_update``: one hospital's update under the run's DP mechanism: ``sample`` level (DP-SGD:
  per-example clipping to ``l2_clip`` and Gaussian noise ``N(0, (z * l2_clip)^2)`` on the sum of
  each step, then divided by the batch size) or ``client`` level (the whole update clipped to
  ``l2_clip`` and noise of stddev ``z * l2_clip`` added; in TFF's ``gaussian_fixed`` the noise
  is added once to the *sum* of clients, so attacking one noised update is the observer's best
  case).

Models with a segmentation head are attacked through the findings output only (the hospital
update simulated here uses the classification loss only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from bfdl_tff.privacy_eval.options import TARGETS


@dataclass
class ClientSetting:
    """How a hospital computes its update (what the attacker assumes is public protocol)."""

    batch_size: int = 1
    local_steps: int = 1
    lr: float = 0.05


@dataclass
class DPSetting:
    mode: str = "sample"  # sample (DP-SGD) | client (clip + noise on the whole update)
    noise_multiplier: float = 1.0
    l2_clip: float = 1.0


# ----------------------------------------------------------------------------------------------
# Model helpers
# ----------------------------------------------------------------------------------------------


def classification_forward(model: Any) -> Callable[[Any], Any]:
    """``x -> probabilities [B, 14]`` (the first output for a model with a segmentation head)."""

    def fwd(x: Any) -> Any:
        out = model(x, training=False)
        if isinstance(out, (list, tuple)):
            out = out[0]
        return out

    return fwd


def bce_mean(y: Any, p: Any) -> Any:
    """Binary cross-entropy averaged over findings and batch (Keras ``BinaryCrossentropy``)."""
    import tensorflow as tf

    return tf.reduce_mean(tf.keras.losses.binary_crossentropy(y, p))


def _set_trainable(model: Any, values: Sequence[np.ndarray]) -> None:
    for v, a in zip(model.trainable_variables, values):
        v.assign(a)


def _get_trainable(model: Any) -> list[np.ndarray]:
    return [v.numpy().copy() for v in model.trainable_variables]


# ----------------------------------------------------------------------------------------------
# One hospital's update
# ----------------------------------------------------------------------------------------------


def _dp_sgd_gradient(model: Any, xb: Any, yb: Any, *, dp: DPSetting, rng: np.random.Generator) -> list[np.ndarray]:
    """DP-SGD's step gradient: per-example gradients clipped to ``l2_clip``, summed, noised with
    ``N(0, (z C)^2)``, divided by the batch size."""
    import tensorflow as tf

    fwd = classification_forward(model)
    batch = int(xb.shape[0])
    summed = [np.zeros(v.shape, np.float32) for v in model.trainable_variables]
    for i in range(batch):
        with tf.GradientTape() as tape:
            loss = bce_mean(yb[i : i + 1], fwd(xb[i : i + 1]))
        g = [gi.numpy() for gi in tape.gradient(loss, model.trainable_variables)]
        norm = math.sqrt(sum(float(np.sum(a * a)) for a in g))
        scale = min(1.0, dp.l2_clip / max(norm, 1e-12))
        for k in range(len(g)):
            summed[k] += g[k] * scale
    return [(a + rng.normal(0.0, dp.noise_multiplier * dp.l2_clip, a.shape).astype(np.float32)) / batch
            for a in summed]


def _plain_gradient(model: Any, xb: Any, yb: Any) -> list[np.ndarray]:
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = bce_mean(yb, classification_forward(model)(xb))
    return [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]


def local_update(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    client: ClientSetting,
    dp: DPSetting | None = None,
    rng: np.random.Generator | None = None,
) -> list[np.ndarray]:
    """One hospital's FedAvg update ``w_after - w_before`` (trainable variables, in order).

    ``x`` must hold ``batch_size * local_steps`` images (one local epoch). With ``dp.mode ==
    "sample"`` every step clips per-example gradients to ``dp.l2_clip`` and adds
    ``N(0, (z C)^2)`` to their sum before dividing by the batch size (DP-SGD); with ``"client"``
    the finished update is clipped and noised (:func:`clip_and_noise`). The model's weights are
    restored afterwards."""
    import tensorflow as tf

    n = client.batch_size * client.local_steps
    if len(x) != n:
        raise ValueError(f"need batch_size*local_steps = {n} images, got {len(x)}")
    if dp is not None and dp.mode not in ("sample", "client"):
        raise ValueError(f"unknown DP mode {dp.mode!r} (sample or client)")
    rng = rng or np.random.default_rng(0)
    w0 = _get_trainable(model)
    try:
        for s in range(client.local_steps):
            step = slice(s * client.batch_size, (s + 1) * client.batch_size)
            xb, yb = tf.constant(x[step], tf.float32), tf.constant(y[step], tf.float32)
            if dp is not None and dp.mode == "sample":
                grads = _dp_sgd_gradient(model, xb, yb, dp=dp, rng=rng)
            else:
                grads = _plain_gradient(model, xb, yb)
            for v, g in zip(model.trainable_variables, grads):
                v.assign_sub(client.lr * g)
        update = [v.numpy() - a for v, a in zip(model.trainable_variables, w0)]
    finally:
        _set_trainable(model, w0)
    if dp is not None and dp.mode == "client":
        update = clip_and_noise(update, l2_clip=dp.l2_clip, noise_multiplier=dp.noise_multiplier, rng=rng)
    return update


def clip_and_noise(
    update: Sequence[np.ndarray], *, l2_clip: float, noise_multiplier: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Client-level DP: clip the global L2 norm to ``l2_clip``, add ``N(0, (z * l2_clip)^2)``."""
    norm = math.sqrt(sum(float(np.sum(np.square(a))) for a in update))
    scale = min(1.0, l2_clip / max(norm, 1e-12))
    return [
        (a * scale + rng.normal(0.0, noise_multiplier * l2_clip, a.shape)).astype(np.float32) for a in update
    ]


# ----------------------------------------------------------------------------------------------
# What the observer sees
# ----------------------------------------------------------------------------------------------


@dataclass
class ObservedUpdate:
    """An update as the attacker sees it, plus the ground truth for scoring."""

    target: str
    update: list[np.ndarray]
    n_dummies: int  # how many images the attacker reconstructs
    images: np.ndarray  # the true contributing images [n_dummies, S, S, C]
    labels: np.ndarray  # their labels [n_dummies, 14]
    hospital_of: np.ndarray  # hospital index of each contributing image
    index_in_hospital: np.ndarray  # index of each image in its hospital's gallery
    target_hospital_images: int  # images of the attacked hospital (the first ones)


def observed_update(
    model: Any,
    target: str,
    galleries: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    client: ClientSetting,
    dp: DPSetting | None,
    rng: np.random.Generator,
) -> ObservedUpdate:
    """Draw fresh images from the hospitals' galleries and build what the observer sees.

    ``galleries[k] = (x_k, y_k)`` are hospital ``k``'s images; hospital 0 is the attacked one.
    ``secure_sum`` uses every hospital; the others use hospital 0 only."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; one of {TARGETS}")
    n = client.batch_size * client.local_steps
    hospitals = range(len(galleries)) if target == "secure_sum" else range(1)
    total: list[np.ndarray] | None = None
    xs, ys, hs, idx = [], [], [], []
    for k in hospitals:
        gx, gy = galleries[k]
        pick = rng.choice(len(gx), size=n, replace=False)
        u = local_update(
            model, gx[pick], gy[pick], client=client, dp=dp if target == "dp_update" else None, rng=rng
        )
        total = u if total is None else [a + b for a, b in zip(total, u)]
        xs.append(gx[pick])
        ys.append(gy[pick])
        hs.append(np.full(n, k))
        idx.append(pick)
    assert total is not None
    return ObservedUpdate(
        target=target,
        update=total,
        n_dummies=n * len(hospitals),
        images=np.concatenate(xs),
        labels=np.concatenate(ys),
        hospital_of=np.concatenate(hs),
        index_in_hospital=np.concatenate(idx),
        target_hospital_images=n,
    )


__all__ = ["ClientSetting", "DPSetting", "ObservedUpdate", "TARGETS", "bce_mean", "classification_forward",
           "clip_and_noise", "local_update", "observed_update"]
