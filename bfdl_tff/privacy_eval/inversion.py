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
* **iDLG label recovery** (Zhao, Mopuri & Bilen 2020) is for softmax outputs. The findings head
  here is 14 independent sigmoids with binary cross-entropy averaged over findings and batch:
  ``dL/db_j = sum_i (sigmoid(z_ij) - y_ij) / (14 B)``. For one image the sign of the bias
  gradient gives every label exactly (negative iff ``y_j = 1``; the FedAvg update ``w_after -
  w_before = -lr * g`` flips the sign). For ``n`` images the bias update gives only the
  *count* of positives per finding, ``sum_i y_ij = sum_i sigmoid(z_ij) + 14 B * du_j / lr``,
  with ``sum_i sigmoid(z_ij)`` estimated from the model's mean prediction on auxiliary images
  (:func:`recover_label_counts`); it does not say which image carries which label. The
  label-recovery rate is therefore "all 14 per-finding counts exact" per attacked update (for
  one image: the full label vector). For ``n > 1`` images the reconstruction is, by default
  (``AttackConfig.label_mode = "oracle"``), given the true labels (the strongest attacker, as in
  Geiping et al.'s batch experiments), so the measured image leakage is an upper bound for a
  label-blind attacker; ``label_mode = "joint"`` is the label-blind DLG variant that optimises
  the labels (as sigmoid logits) together with the images.

Targets (:func:`observed_update`):

* ``plain_update``: one hospital's FedAvg update in plain federated training (what a curious
  aggregator sees): ``local_steps`` SGD steps with ``batch_size`` images each from the model the
  server broadcast (``n = batch_size * local_steps`` distinct images, one local epoch).
* ``secure_sum``: the sum of the updates of all hospitals (3 in the paper), which is all a
  B-FDL aggregator sees under secure aggregation. The attacker reconstructs ``hospitals * n``
  images jointly; every contributing image counts as a target (any reconstructed patient image
  is a leak, even if it cannot be attributed to a hospital). The sum is built without DP noise
  even for B-FDL runs (the attacker's best case); ``dp_update`` measures the DP effect.
* ``dp_update``: one hospital's update under the run's DP mechanism: ``sample`` level (DP-SGD:
  per-example clipping to ``l2_clip`` and Gaussian noise ``N(0, (z * l2_clip)^2)`` on the sum of
  each step, then divided by the batch size) or ``client`` level (the whole update clipped to
  ``l2_clip`` and noise of stddev ``z * l2_clip`` added; in TFF's ``gaussian_fixed`` the noise
  is added once to the *sum* of clients, so attacking one noised update is the observer's best
  case).

Local steps > 1: the attacker matches the whole update against the gradient of the mean loss
of the ``n`` dummies at the broadcast weights (the FedSGD approximation). Geiping et al. also
unroll the local steps; that is not implemented, so the failure measured at many local steps is
a lower bound on what a stronger attacker could do. Models with a segmentation head are
attacked through the findings output only (the hospital update simulated here uses the
classification loss only).

Success (project definition, ``docs/privacy.md``): an attacked image counts as reconstructed
iff its best reconstruction (the restart with the lowest matching loss; reconstructions are
assigned to originals by maximum-SSIM matching) has SSIM >= 0.5 **and** re-identifies it: the
true image is the nearest neighbour (pixel L2) of the reconstruction among the target and >= 100
other images of the same hospital. The success rate is reported with a Wilson 95% interval.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from bfdl_tff.privacy_eval import metrics as M

TARGETS = ("plain_update", "secure_sum", "dp_update")
SSIM_THRESHOLD = 0.5
MIN_GALLERY_OTHERS = 100


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


def output_bias_index(model: Any, num_labels: int = 14) -> int:
    """Index in ``model.trainable_variables`` of the findings layer's bias.

    The layer named ``findings`` if present, otherwise the last trainable vector of length
    ``num_labels``."""
    tv = model.trainable_variables
    try:
        layer = model.get_layer("findings")
        if getattr(layer, "bias", None) is not None:
            for i, v in enumerate(tv):
                if v is layer.bias:
                    return i
    except ValueError:
        pass
    for i in range(len(tv) - 1, -1, -1):
        if tv[i].shape.rank == 1 and int(tv[i].shape[0]) == num_labels:
            return i
    raise ValueError("the model has no findings-layer bias; label recovery needs one")


def _set_trainable(model: Any, values: Sequence[np.ndarray]) -> None:
    for v, a in zip(model.trainable_variables, values):
        v.assign(a)


def _get_trainable(model: Any) -> list[np.ndarray]:
    return [v.numpy().copy() for v in model.trainable_variables]


# ----------------------------------------------------------------------------------------------
# What the aggregator observes
# ----------------------------------------------------------------------------------------------


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
    rng = rng or np.random.default_rng(0)
    fwd = classification_forward(model)
    w0 = _get_trainable(model)
    try:
        for s in range(client.local_steps):
            xb = tf.constant(x[s * client.batch_size : (s + 1) * client.batch_size], tf.float32)
            yb = tf.constant(y[s * client.batch_size : (s + 1) * client.batch_size], tf.float32)
            if dp is not None and dp.mode == "sample":
                summed = [np.zeros(v.shape, np.float32) for v in model.trainable_variables]
                for i in range(client.batch_size):
                    with tf.GradientTape() as tape:
                        loss = bce_mean(yb[i : i + 1], fwd(xb[i : i + 1]))
                    g = [gi.numpy() for gi in tape.gradient(loss, model.trainable_variables)]
                    norm = math.sqrt(sum(float(np.sum(a * a)) for a in g))
                    scale = min(1.0, dp.l2_clip / max(norm, 1e-12))
                    for k in range(len(g)):
                        summed[k] += g[k] * scale
                grads = [
                    (a + rng.normal(0.0, dp.noise_multiplier * dp.l2_clip, a.shape).astype(np.float32))
                    / client.batch_size
                    for a in summed
                ]
            else:
                with tf.GradientTape() as tape:
                    loss = bce_mean(yb, fwd(xb))
                grads = [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]
            for v, g in zip(model.trainable_variables, grads):
                v.assign_sub(client.lr * g)
        update = [v.numpy() - a for v, a in zip(model.trainable_variables, w0)]
    finally:
        _set_trainable(model, w0)
    if dp is not None and dp.mode == "client":
        update = clip_and_noise(update, l2_clip=dp.l2_clip, noise_multiplier=dp.noise_multiplier, rng=rng)
    elif dp is not None and dp.mode != "sample":
        raise ValueError(f"unknown DP mode {dp.mode!r} (sample or client)")
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


# ----------------------------------------------------------------------------------------------
# Label recovery (iDLG for sigmoid outputs)
# ----------------------------------------------------------------------------------------------


def recover_labels_single(update: Sequence[np.ndarray], bias_index: int) -> np.ndarray:
    """Labels of a one-image update from the sign of the findings-bias update (exact, see top)."""
    return (np.asarray(update[bias_index]) > 0).astype(np.float32)


def recover_label_counts(
    update: Sequence[np.ndarray],
    bias_index: int,
    *,
    n_images: int,
    batch_size: int,
    client_lr: float,
    mean_prediction: np.ndarray,
) -> np.ndarray:
    """Positive count per finding among ``n_images`` from the bias update (see module docstring).

    ``mean_prediction`` is the model's mean sigmoid output on auxiliary images (the attacker's
    estimate of ``sigmoid(z_ij)``)."""
    du = np.asarray(update[bias_index], np.float64)
    k = mean_prediction.shape[-1]
    counts = n_images * np.asarray(mean_prediction, np.float64) + k * batch_size * du / client_lr
    return np.clip(np.rint(counts), 0, n_images).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Inverting Gradients
# ----------------------------------------------------------------------------------------------


def total_variation(x: Any) -> Any:
    """Anisotropic TV: mean absolute difference of neighbouring pixels."""
    import tensorflow as tf

    dx = tf.reduce_mean(tf.abs(x[:, :, 1:, :] - x[:, :, :-1, :]))
    dy = tf.reduce_mean(tf.abs(x[:, 1:, :, :] - x[:, :-1, :, :]))
    return dx + dy


@dataclass
class InversionResult:
    images: np.ndarray  # best restart [n, S, S, C]
    matching_loss: float  # 1 - cosine of the best restart
    labels: np.ndarray | None = None  # labels used / found by the best restart
    restart_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


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
    n = int(n_images if joint else len(labels))  # type: ignore[arg-type]
    if joint and not n_images:
        raise ValueError("label-blind inversion needs n_images")
    shape = tuple(image_shape or tuple(int(d) for d in model.input_shape[1:]))
    step = _step_fn(model, cfg.tv_weight)
    target = [tf.constant(-np.asarray(a, np.float32)) for a in observed]
    k = int(model.output_shape[-1] if not isinstance(model.output_shape, list) else model.output_shape[0][-1])

    best: InversionResult | None = None
    losses: list[float] = []
    rng = np.random.default_rng(cfg.seed)
    for r in range(cfg.restarts):
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
        if not math.isfinite(loss_val):
            loss_val = 2.0
        losses.append(loss_val)
        if best is None or loss_val < best.matching_loss:
            best = InversionResult(images=x.numpy().copy(), matching_loss=loss_val,
                                   labels=np.asarray(y.numpy() > 0.5, np.float32))
    assert best is not None
    best.restart_losses = losses
    best.seconds = time.perf_counter() - t0
    return best


# ----------------------------------------------------------------------------------------------
# Scoring and sweeps
# ----------------------------------------------------------------------------------------------


@dataclass
class ImageScore:
    ssim: float
    psnr: float
    reidentified: bool
    success: bool


def score_reconstruction(
    recs: np.ndarray,
    obs: ObservedUpdate,
    galleries: Sequence[tuple[np.ndarray, np.ndarray]],
) -> tuple[list[ImageScore], np.ndarray]:
    """Score every contributing image; returns scores and the matched reconstruction per image."""
    from scipy.optimize import linear_sum_assignment

    s = M.ssim_matrix(recs, obs.images)  # [n_rec, n_img]
    rows, cols = linear_sum_assignment(-s)
    matched = np.zeros_like(obs.images)
    scores: list[ImageScore | None] = [None] * len(obs.images)
    for r, c in zip(rows, cols):
        rec = np.clip(recs[r], 0.0, 1.0)
        matched[c] = rec
        gallery = galleries[int(obs.hospital_of[c])][0]
        reid = M.reidentifies(rec, int(obs.index_in_hospital[c]), gallery)
        ss = float(s[r, c])
        scores[c] = ImageScore(ssim=ss, psnr=M.psnr(rec, obs.images[c]), reidentified=reid,
                               success=bool(ss >= SSIM_THRESHOLD and reid))
    return [sc for sc in scores if sc is not None], matched


@dataclass
class SweepRow:
    target: str
    batch_size: int
    local_steps: int
    n_targets: int
    n_updates: int
    successes: int
    success_rate: float
    ci_low: float
    ci_high: float
    mean_psnr: float
    mean_ssim: float
    label_recovery_rate: float
    reidentification_rate: float
    mean_matching_loss: float
    seconds: float
    label_mode: str = "idlg"  # idlg (one image: exact sign rule) | oracle | joint

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def attack_setting(
    model: Any,
    galleries: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    target: str,
    client: ClientSetting,
    dp: DPSetting | None,
    n_updates: int,
    cfg: AttackConfig,
    aux_images: np.ndarray | None = None,
    seed: int = 0,
    keep_examples: int = 0,
) -> tuple[SweepRow, list[tuple[np.ndarray, np.ndarray]]]:
    """Attack ``n_updates`` fresh observed updates of one (target, batch, steps) setting.

    Returns the summary row and up to ``keep_examples`` (original, reconstruction) pairs for the
    figure. Label recovery uses the model's mean prediction on ``aux_images`` (default: the
    last hospital's gallery) to estimate the sigmoid sum."""
    import tensorflow as tf

    for k, (gx, _) in enumerate(galleries):
        if len(gx) < MIN_GALLERY_OTHERS + 1:
            raise ValueError(
                f"hospital {k} has {len(gx)} images; re-identification needs the target and >= "
                f"{MIN_GALLERY_OTHERS} others"
            )
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    bias_idx = output_bias_index(model)
    fwd = classification_forward(model)
    aux = aux_images if aux_images is not None else galleries[-1][0][:256]
    mean_pred = np.mean(fwd(tf.constant(aux, tf.float32)).numpy(), axis=0)
    scores: list[ImageScore] = []
    label_hits = 0
    m_losses: list[float] = []
    examples: list[tuple[np.ndarray, np.ndarray]] = []
    for u in range(n_updates):
        obs = observed_update(model, target, galleries, client=client, dp=dp, rng=rng)
        n_images_per_update = obs.n_dummies
        true_counts = obs.labels.sum(axis=0).astype(np.int64)
        if obs.n_dummies == 1:
            labels = recover_labels_single(obs.update, bias_idx)[None, :]
            label_hits += int(np.array_equal(labels[0], obs.labels[0]))
        else:
            counts = recover_label_counts(
                obs.update, bias_idx, n_images=obs.n_dummies, batch_size=client.batch_size,
                client_lr=client.lr, mean_prediction=mean_pred,
            )
            label_hits += int(np.array_equal(counts, true_counts))
            if cfg.label_mode == "oracle":
                labels = obs.labels  # strongest attacker (see module docstring)
            elif cfg.label_mode == "joint":
                labels = None
            else:
                raise ValueError(f"unknown label_mode {cfg.label_mode!r} (oracle or joint)")
        res = invert(model, obs.update, labels, n_images=obs.n_dummies,
                     cfg=AttackConfig(**{**asdict(cfg), "seed": cfg.seed + u}))
        m_losses.append(res.matching_loss)
        sc, matched = score_reconstruction(res.images, obs, galleries)
        scores.extend(sc)
        for c in range(len(obs.images)):
            if len(examples) < keep_examples:
                examples.append((obs.images[c], matched[c]))
    succ = sum(s.success for s in scores)
    lo, hi = M.wilson_interval(succ, len(scores))
    finite_psnr = [min(s.psnr, 100.0) for s in scores]
    row = SweepRow(
        target=target,
        batch_size=client.batch_size,
        local_steps=client.local_steps,
        n_targets=len(scores),
        n_updates=n_updates,
        successes=int(succ),
        success_rate=succ / len(scores),
        ci_low=lo,
        ci_high=hi,
        mean_psnr=float(np.mean(finite_psnr)),
        mean_ssim=float(np.mean([s.ssim for s in scores])),
        label_recovery_rate=label_hits / n_updates,
        reidentification_rate=float(np.mean([s.reidentified for s in scores])),
        mean_matching_loss=float(np.mean(m_losses)),
        seconds=time.perf_counter() - t0,
        label_mode="idlg" if n_images_per_update == 1 else cfg.label_mode,
    )
    return row, examples


def run_sweep(
    model: Any,
    galleries: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    targets: Sequence[str] = TARGETS,
    batch_sizes: Sequence[int] = (1, 4),
    local_steps: Sequence[int] = (1, 4),
    n_updates: int = 8,
    client_lr: float = 0.05,
    dp: DPSetting | None = None,
    cfg: AttackConfig | None = None,
    seed: int = 0,
    keep_examples: int = 4,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[SweepRow], dict[str, list[tuple[np.ndarray, np.ndarray]]]]:
    """Every (target, batch size, local steps) combination; rows plus figure examples per target
    (from the smallest batch/steps setting)."""
    cfg = cfg or AttackConfig()
    dp = dp or DPSetting()
    rows: list[SweepRow] = []
    examples: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for t in targets:
        for b in batch_sizes:
            for s in local_steps:
                row, ex = attack_setting(
                    model, galleries, target=t, client=ClientSetting(batch_size=b, local_steps=s, lr=client_lr),
                    dp=dp, n_updates=n_updates, cfg=cfg, seed=seed, keep_examples=keep_examples,
                )
                rows.append(row)
                if t not in examples:
                    examples[t] = ex
                if progress:
                    progress(
                        f"{t} B={b} steps={s}: success {row.successes}/{row.n_targets} "
                        f"ssim {row.mean_ssim:.3f} labels {row.label_recovery_rate:.2f} ({row.seconds:.1f}s)"
                    )
    return rows, examples


def save_grid(examples: dict[str, list[tuple[np.ndarray, np.ndarray]]], path: Any) -> None:
    """PNG grid: for each target kind, a row of originals above a row of reconstructions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bfdl_tff.io_utils import atomic_open

    kinds = [k for k, v in examples.items() if v]
    if not kinds:
        return
    cols = max(len(examples[k]) for k in kinds)
    fig, axes = plt.subplots(2 * len(kinds), cols, figsize=(1.6 * cols, 3.3 * len(kinds)), squeeze=False)
    for r, k in enumerate(kinds):
        for c in range(cols):
            for j in (0, 1):
                ax = axes[2 * r + j][c]
                ax.axis("off")
                if c < len(examples[k]):
                    img = examples[k][c][j]
                    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
                    if c == 0:
                        ax.set_title(f"{k}: {'original' if j == 0 else 'reconstruction'}", fontsize=7, loc="left")
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)


__all__ = [
    "AttackConfig",
    "ClientSetting",
    "DPSetting",
    "InversionResult",
    "ObservedUpdate",
    "SweepRow",
    "TARGETS",
    "attack_setting",
    "clip_and_noise",
    "invert",
    "local_update",
    "observed_update",
    "recover_label_counts",
    "recover_labels_single",
    "run_sweep",
    "save_grid",
    "score_reconstruction",
    "total_variation",
]
