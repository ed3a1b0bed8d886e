"""What the aggregator observes of a hospital's training (paper 3.3, 3.5; the attacker's input).

Targets (:func:`observe`; ``docs/privacy.md``):

* ``plain_update``: one hospital's FedAvg update in plain federated training (what a curious
  aggregator sees): ``local_steps`` steps of the run's client optimizer (SGD with momentum or
  Adam, fresh state every round as in TFF) with ``batch_size`` images each, from the model the
  server broadcast (``n = batch_size * local_steps`` distinct images, one local epoch).
* ``secure_sum``: the sum of the updates of all hospitals (3 in the paper), which is all a
  B-FDL aggregator sees under secure aggregation. Every contributing image counts as a target
  (any reconstructed patient image is a leak, even if it cannot be attributed to a hospital).
  The sum is built without DP noise even for B-FDL runs (the attacker's best case);
  ``dp_update`` measures the DP effect.
* ``dp_update``: one hospital's update under the run's DP mechanism: ``sample`` level (DP-SGD:
  every image's gradient clipped to ``l2_clip``, Gaussian noise ``N(0, (z * l2_clip)^2)`` on the
  sum of each step, divided by the batch size, then the client optimizer's step; the images of a
  simulated batch come from distinct patients, so patient-level and image-level clipping agree)
  or ``client`` level (the whole update clipped to ``l2_clip`` and noise of stddev
  ``z * l2_clip`` added; in TFF's ``gaussian_fixed`` the noise is added once to the *sum* of
  clients, so attacking one noised update is the observer's best case).

Many updates are simulated at once (:func:`local_updates`): one-step updates of ``P`` problems
share the broadcast weights, so their gradients (and DP-SGD's per-example gradients) come from one
:mod:`bfdl_tff.privacy_eval.problem_grads` call; multi-step updates run problem by problem.
Models with a segmentation head are attacked through the findings output only (the hospital
update simulated here uses the classification loss only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from bfdl_tff.privacy_eval.options import TARGETS
from bfdl_tff.privacy_eval.problem_grads import bce_mean, classification_forward, make_problem_gradients

Update = list[np.ndarray]


@dataclass
class ClientSetting:
    """How a hospital computes its update (what the attacker assumes is public protocol)."""

    batch_size: int = 1
    local_steps: int = 1
    lr: float = 0.05
    optimizer: str = "sgd"  # sgd (with momentum) | adam (TFF build_adam defaults)
    momentum: float = 0.0


@dataclass
class DPSetting:
    mode: str = "sample"  # sample (DP-SGD) | client (clip + noise on the whole update)
    noise_multiplier: float = 1.0
    l2_clip: float = 1.0


_GRADS: dict[int, Any] = {}


def problem_gradients(model: Any) -> Any:
    """Compiled ``(x [P, n, ...], y [P, n, K]) -> [[P, *var.shape]]`` for ``model`` (cached)."""
    import tensorflow as tf

    hit = _GRADS.get(id(model))
    if hit is not None and hit[0] is model:
        return hit[1]
    fn, _ = make_problem_gradients(model)
    compiled = tf.function(fn, reduce_retracing=True)
    if len(_GRADS) > 8:
        _GRADS.clear()
    _GRADS[id(model)] = (model, compiled)
    return compiled


def _grads(model: Any, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    import tensorflow as tf

    return [g.numpy() for g in problem_gradients(model)(tf.constant(x, tf.float32), tf.constant(y, tf.float32))]


def step_gradients(model: Any, x: np.ndarray, y: np.ndarray, *, dp: DPSetting | None,
                   rng: np.random.Generator) -> list[np.ndarray]:
    """The step gradient of each problem ``x [P, B, ...]`` at the model's current weights: the
    batch-mean gradient, or with sample-level DP the DP-SGD gradient (per-example clip to
    ``l2_clip``, sum, ``+ N(0, (z C)^2)``, ``/ B``). Returns ``[[P, *var.shape]]``."""
    p, b = x.shape[:2]
    if dp is None or dp.mode != "sample":
        return _grads(model, x, y)
    per = _grads(model, x.reshape(p * b, 1, *x.shape[2:]), y.reshape(p * b, 1, -1))  # [P*B, ...]
    norms = np.sqrt(sum(np.sum(g.reshape(p * b, -1).astype(np.float64) ** 2, axis=1) for g in per))
    scale = np.minimum(1.0, dp.l2_clip / np.maximum(norms, 1e-12))
    out = []
    for g in per:
        clipped = (g * scale.reshape(-1, *([1] * (g.ndim - 1)))).reshape(p, b, *g.shape[1:]).sum(axis=1)
        noise = rng.normal(0.0, dp.noise_multiplier * dp.l2_clip, clipped.shape)
        out.append(((clipped + noise) / b).astype(np.float32))
    return out


class _Optimizer:
    """The client optimizer's step on numpy arrays (fresh state: TFF clients start every round anew)."""

    def __init__(self, client: ClientSetting, shapes: Sequence[tuple[int, ...]]) -> None:
        if client.optimizer not in ("sgd", "adam"):
            raise ValueError(f"unknown client optimizer {client.optimizer!r} (sgd or adam)")
        self.c = client
        self.t = 0
        self.m = [np.zeros(s, np.float64) for s in shapes]
        self.v = [np.zeros(s, np.float64) for s in shapes]

    def delta(self, grads: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The weight change of one step for gradients ``grads`` (SGD momentum / Adam, eps 1e-7)."""
        self.t += 1
        out = []
        for k, g in enumerate(grads):
            g = np.asarray(g, np.float64)
            if self.c.optimizer == "sgd":
                self.m[k] = self.c.momentum * self.m[k] + g
                out.append(-self.c.lr * self.m[k])
                continue
            self.m[k] = 0.9 * self.m[k] + 0.1 * g
            self.v[k] = 0.999 * self.v[k] + 0.001 * g * g
            lr_t = self.c.lr * math.sqrt(1 - 0.999**self.t) / (1 - 0.9**self.t)
            out.append(-lr_t * self.m[k] / (np.sqrt(self.v[k]) + 1e-7))
        return out


def local_updates(model: Any, x: np.ndarray, y: np.ndarray, *, client: ClientSetting, dp: DPSetting | None = None,
                  rng: np.random.Generator | None = None) -> list[Update]:
    """Each problem's FedAvg update ``w_after - w_before`` (trainable variables, in order).

    ``x [P, n, ...]`` holds ``n = batch_size * local_steps`` images per problem (one local
    epoch, taken in order). With ``dp.mode == "sample"`` every step uses the DP-SGD gradient
    (:func:`step_gradients`); with ``"client"`` the finished update is clipped and noised
    (:func:`clip_and_noise`). The model's weights are restored afterwards."""
    n = client.batch_size * client.local_steps
    if x.ndim < 3 or x.shape[1] != n:
        raise ValueError(f"need [P, batch_size*local_steps = {n}, ...] images, got {x.shape}")
    if dp is not None and dp.mode not in ("sample", "client"):
        raise ValueError(f"unknown DP mode {dp.mode!r} (sample or client)")
    rng = rng or np.random.default_rng(0)
    tvars = model.trainable_variables
    w0 = [v.numpy().copy() for v in tvars]
    p, b = len(x), client.batch_size
    updates: list[Update] = []
    try:
        if client.local_steps == 1:
            g = step_gradients(model, x, y, dp=dp, rng=rng)
            for i in range(p):
                opt = _Optimizer(client, [a.shape for a in w0])
                updates.append([d.astype(np.float32) for d in opt.delta([a[i] for a in g])])
        else:
            for i in range(p):
                opt = _Optimizer(client, [a.shape for a in w0])
                w = [a.astype(np.float64) for a in w0]
                for s in range(client.local_steps):
                    for v, a in zip(tvars, w):
                        v.assign(a.astype(np.float32))
                    g = step_gradients(model, x[i : i + 1, s * b : (s + 1) * b], y[i : i + 1, s * b : (s + 1) * b],
                                       dp=dp, rng=rng)
                    w = [a + d for a, d in zip(w, opt.delta([gk[0] for gk in g]))]
                updates.append([(a - a0).astype(np.float32) for a, a0 in zip(w, w0)])
    finally:
        for v, a in zip(tvars, w0):
            v.assign(a)
    if dp is not None and dp.mode == "client":
        updates = [clip_and_noise(u, l2_clip=dp.l2_clip, noise_multiplier=dp.noise_multiplier, rng=rng)
                   for u in updates]
    return updates


def local_update(model: Any, x: np.ndarray, y: np.ndarray, *, client: ClientSetting, dp: DPSetting | None = None,
                 rng: np.random.Generator | None = None) -> Update:
    """One hospital's update from ``x [n, ...]`` (:func:`local_updates` with one problem)."""
    return local_updates(model, np.asarray(x)[None], np.asarray(y)[None], client=client, dp=dp, rng=rng)[0]


def clip_and_noise(
    update: Sequence[np.ndarray], *, l2_clip: float, noise_multiplier: float, rng: np.random.Generator
) -> Update:
    """Client-level DP: clip the global L2 norm to ``l2_clip``, add ``N(0, (z * l2_clip)^2)``."""
    norm = math.sqrt(sum(float(np.sum(np.square(a))) for a in update))
    scale = min(1.0, l2_clip / max(norm, 1e-12))
    return [
        (a * scale + rng.normal(0.0, noise_multiplier * l2_clip, a.shape)).astype(np.float32) for a in update
    ]


@dataclass
class ObservedBatch:
    """``P`` updates as the attacker sees them, plus the ground truth for scoring."""

    target: str
    updates: list[Update]  # [P] observed updates
    images: np.ndarray  # the true contributing images [P, m, S, S, C] (m = images per update)
    labels: np.ndarray  # their labels [P, m, K]
    hospital_of: np.ndarray  # [P, m] hospital index of each contributing image
    index_in_hospital: np.ndarray  # [P, m] index of each image in its hospital's gallery
    target_hospital_images: int  # images per update from the attacked hospital (the first ones)

    @property
    def n_dummies(self) -> int:
        return int(self.images.shape[1])


def draw_indices(gallery_size: int, problems: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``[problems, n]`` gallery indices: distinct within a problem, and across problems while the
    gallery lasts (a fresh permutation for each further block of problems)."""
    per_perm = max(1, gallery_size // n)
    rows = []
    while len(rows) < problems:
        perm = rng.permutation(gallery_size)
        rows += [perm[i * n : (i + 1) * n] for i in range(min(per_perm, problems - len(rows)))]
    return np.stack(rows)


def observe(model: Any, target: str, galleries: Sequence[tuple[np.ndarray, np.ndarray]], *, problems: int,
            client: ClientSetting, dp: DPSetting | None, rng: np.random.Generator) -> ObservedBatch:
    """``problems`` fresh observed updates of ``target`` from the hospitals' galleries.

    ``galleries[k] = (x_k, y_k)``; hospital 0 is the attacked one. ``secure_sum`` uses every
    hospital (each trains on its own images; the observer sees the sum); the others hospital 0."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; one of {TARGETS}")
    n = client.batch_size * client.local_steps
    hospitals = list(range(len(galleries))) if target == "secure_sum" else [0]
    idx = [draw_indices(len(galleries[k][0]), problems, n, rng) for k in hospitals]
    xs = np.stack([galleries[k][0][i] for k, i in zip(hospitals, idx)], axis=1)  # [P, H, n, ...]
    ys = np.stack([galleries[k][1][i] for k, i in zip(hospitals, idx)], axis=1)
    h = len(hospitals)
    flat = local_updates(model, xs.reshape(problems * h, n, *xs.shape[3:]), ys.reshape(problems * h, n, -1),
                         client=client, dp=dp if target == "dp_update" else None, rng=rng)
    updates = [[sum(flat[i * h + j][v] for j in range(h)) for v in range(len(flat[0]))] for i in range(problems)]
    return ObservedBatch(
        target=target, updates=updates,
        images=xs.reshape(problems, h * n, *xs.shape[3:]), labels=ys.reshape(problems, h * n, -1),
        hospital_of=np.repeat(np.asarray(hospitals)[None, :, None], problems, 0).repeat(n, 2).reshape(problems, h * n),
        index_in_hospital=np.stack(idx, axis=1).reshape(problems, h * n), target_hospital_images=n,
    )


__all__ = ["ClientSetting", "DPSetting", "ObservedBatch", "TARGETS", "Update", "bce_mean", "classification_forward",
           "clip_and_noise", "draw_indices", "local_update", "local_updates", "observe", "problem_gradients",
           "step_gradients"]
