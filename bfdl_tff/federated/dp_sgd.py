"""Sample-level DP-SGD inside each hospital as a TFF ``ClientWorkProcess`` (paper 3.1: "optimized
with differential privacy stochastic gradient descent (DP-SGD)"; issue 16: patient-level DP).

TFF's FedAvg client step only sees batch-mean gradients, so DP-SGD (Abadi et al. 2016) is a
custom :class:`tff.learning.templates.ClientWorkProcess`:

* **Poisson sampling of privacy units, hospital-side.** :func:`poisson_dp_sgd_dataset` draws,
  for every local step, each of the hospital's units independently with probability
  ``q = min(1, batch_size / n_k)`` (``n_k`` = the hospital's training images; numpy ``Generator``
  seeded from (seed, round, hospital)), so step sizes vary (possibly 0). The unit is the
  **patient** (``unit="patient"``, the default of the configs): a sampled patient contributes
  ``min(n_p, max_images_per_patient)`` of its images (drawn without replacement from the same
  generator; 0 = all), and the *sum* of their gradients is clipped as one; or the single image
  (``unit="image"``). The cap bounds the work per step and is not needed for the guarantee (the
  patient's whole contribution is clipped to ``C`` whatever its number of images); a patient with
  more images than the cap contributes a fresh random subset at each step it is sampled.
  ``ceil(n_k / batch_size)`` steps make one local epoch, so every unit is sampled once per local
  epoch in expectation and the expected number of images per step is ``batch_size`` (before the
  cap). This is the scheme the accountant (:mod:`bfdl_tff.federated.accounting`,
  Poisson-subsampled Gaussian per unit) analyses.
* **Dataset elements** (one per step): ``x [b,...]``, ``y`` (``[b,14]`` or ``(labels, masks)``),
  ``seg [b]`` (the unit of each image, ``0 .. nseg-1``), ``nseg`` (units in the step), ``seed``
  (int64[2], the step's noise key), ``n`` (``n_k``, the FedAvg weight), ``z`` (the hospital's own
  noise multiplier, calibrated per hospital) and ``denom`` (the expected number of units per step,
  ``q * units``: the standard unbiased estimator under Poisson sampling divides by the expected,
  not the realised, sample size).
* **Clipping.** Per-unit gradients ``G_u = sum_{i in u} grad L_i`` clipped to ``l2_clip`` and
  summed: with :func:`bfdl_tff.models.clipping.clipped_gradient_sum` (one forward and one backward
  pass; per-layer per-example gradients from the layer inputs and output gradients) when every
  trainable layer has a rule there, else with per-example gradients from ``tf.vectorized_map``
  (pfor). Then Gaussian noise ``N(0, (z * l2_clip)^2)`` from ``tf.random.stateless_normal``
  keyed by the step's seed, divided by ``denom``.
* **Inference-mode forward pass.** One example must not influence another: BatchNormalization in
  training mode normalises over the batch (and has no statistics for one example) and stateful
  dropout does not vectorise. The forward pass therefore runs in inference mode (BN uses stored
  statistics, dropout off); the project's DP models use GroupNorm or weight-standardised convs.
* Non-finite updates are zeroed and given weight 0, like TFF's own ``model_delta`` client work;
  the runner reports such hospitals as rejected.

The update returned is ``w_t - w_t^k`` on the trainable weights, weight ``n_k`` (paper 2.1
``n_k / n``), aggregated by weighted FedAvg (optionally through ``SecureSumFactory``). Metrics
(loss, clipped fraction, counts) are returned by the client work; what leaves the hospital is
decided by the runner/aggregation (issue 16.3).
"""

from __future__ import annotations

import collections
import math
from typing import Any, Callable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
UNITS = ("patient", "image")


def _patient_groups(patient_ids: np.ndarray) -> list[np.ndarray]:
    """Image indices of each patient (patients in order of first appearance)."""
    _, first, inverse = np.unique(patient_ids, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    groups = [np.flatnonzero(inverse == u) for u in order]
    return groups


def _sample_steps(n: int, groups: list[np.ndarray] | None, *, batch_size: int, steps: int, cap: int,
                  rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Per step: sampled image indices, their unit ids (0..units-1 within the step), the step seed."""
    q = min(1.0, batch_size / n)
    units = n if groups is None else len(groups)
    idx_steps, seg_steps, seeds = [], [], []
    for _ in range(steps):
        picked = np.flatnonzero(rng.random(units) < q)
        if groups is None:
            idx, seg = picked, np.arange(len(picked))
        else:
            parts = []
            for u in picked:
                g = groups[u]
                parts.append(rng.choice(g, size=cap, replace=False) if 0 < cap < len(g) else g)
            idx = np.concatenate(parts) if parts else np.zeros(0, np.int64)
            seg = np.repeat(np.arange(len(picked)), [len(p) for p in parts]) if parts else np.zeros(0, np.int64)
        idx_steps.append(idx.astype(np.int64))
        seg_steps.append(seg.astype(np.int32))
        seeds.append(rng.integers(0, 2**62, size=2, dtype=np.int64))
    return idx_steps, seg_steps, seeds


def poisson_dp_sgd_dataset(
    x: np.ndarray,
    y: Any,
    *,
    batch_size: int,
    local_epochs: int,
    rng: np.random.Generator,
    patient_ids: np.ndarray | None = None,
    unit: str = "image",
    max_images_per_patient: int = 0,
    noise_multiplier: float = 0.0,
) -> tf.data.Dataset:
    """One hospital's DP-SGD steps for one round, with Poisson sampling of units (see module doc).

    ``y`` is the label array ``[n, 14]`` or a tuple ``(labels, masks)`` for a segmentation model.
    ``unit="patient"`` needs ``patient_ids`` ``[n]``.
    """
    n = len(x)
    if n == 0:
        raise ValueError("Poisson sampling needs at least one example")
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    if unit == "patient" and (patient_ids is None or len(patient_ids) != n):
        raise ValueError("patient-level DP-SGD needs one patient id per image")
    groups = _patient_groups(np.asarray(patient_ids)) if unit == "patient" else None
    units = n if groups is None else len(groups)
    steps = local_epochs * max(1, math.ceil(n / batch_size))
    idx_steps, seg_steps, seeds = _sample_steps(n, groups, batch_size=batch_size, steps=steps,
                                                cap=max_images_per_patient, rng=rng)
    lengths = np.array([len(i) for i in idx_steps], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    all_idx = np.concatenate(idx_steps) if lengths.sum() else np.zeros(0, np.int64)
    all_seg = np.concatenate(seg_steps) if lengths.sum() else np.zeros(0, np.int32)
    nseg = np.array([int(s.max()) + 1 if len(s) else 0 for s in seg_steps], dtype=np.int32)
    q = min(1.0, batch_size / n)
    x_t, y_t = tf.constant(x), tf.nest.map_structure(tf.constant, y)
    idx_t, seg_t = tf.constant(all_idx), tf.constant(all_seg)
    consts = dict(n=np.int64(n), z=np.float32(noise_multiplier), denom=np.float32(q * units))

    def element(start, length, k, seed):
        take = idx_t[start : start + length]
        return collections.OrderedDict(
            x=tf.gather(x_t, take),
            y=tf.nest.map_structure(lambda t: tf.gather(t, take), y_t),
            seg=seg_t[start : start + length],
            nseg=k,
            seed=seed,
            n=tf.constant(consts["n"]),
            z=tf.constant(consts["z"]),
            denom=tf.constant(consts["denom"]),
        )

    return tf.data.Dataset.from_tensor_slices((starts, lengths, nseg, np.stack(seeds))).map(element)


def round_dataset(image_set: Any, *, batch_size: int, local_epochs: int, rng: np.random.Generator,
                  with_masks: bool = False, noise_multiplier: float = 0.0, unit: str = "image",
                  max_images_per_patient: int = 0, dp_batch_size: int = 0) -> tf.data.Dataset:
    """One hospital's DP-SGD steps for one round from its training ``ImageSet`` (hospital-side).

    The privacy keywords come from ``PrivacySchedule.dp_sgd_kwargs(hospital)``; ``dp_batch_size``
    (the private arm's own expected batch, ``privacy.batch_size``) replaces ``batch_size`` when > 0."""
    y = (image_set.y, image_set.mask) if with_masks else image_set.y
    return poisson_dp_sgd_dataset(image_set.x, y, batch_size=dp_batch_size or batch_size, local_epochs=local_epochs, rng=rng,
                                  patient_ids=image_set.patient_ids, unit=unit,
                                  max_images_per_patient=max_images_per_patient, noise_multiplier=noise_multiplier)


def dp_sgd_element_spec(batch_spec: Any) -> collections.OrderedDict:
    """Element spec of :func:`poisson_dp_sgd_dataset` from the model's ``(x, y)`` batch spec."""
    x_spec, y_spec = batch_spec
    unbatched = lambda s: tf.TensorSpec([None, *s.shape[1:]], s.dtype)  # noqa: E731
    return collections.OrderedDict(
        x=unbatched(x_spec),
        y=tf.nest.map_structure(unbatched, y_spec),
        seg=tf.TensorSpec([None], tf.int32),
        nseg=tf.TensorSpec([], tf.int32),
        seed=tf.TensorSpec([2], tf.int64),
        n=tf.TensorSpec([], tf.int64),
        z=tf.TensorSpec([], tf.float32),
        denom=tf.TensorSpec([], tf.float32),
    )


def _zero_if_non_finite(update):
    flat = tf.nest.flatten(update)
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in flat])
    zeroed = [tf.where(finite, t, tf.zeros_like(t)) for t in flat]
    return tf.nest.pack_sequence_as(update, zeroed), finite


def _naive_clipped_sum(predict: Callable[[tf.Tensor], Any], trainable: tuple, per_example_loss: LossFn, batch: Any,
                       clip: float):
    """Fallback: per-example gradients with ``tf.vectorized_map``, summed per unit, clipped."""

    def per_example(ex):
        xi, yi = ex
        with tf.GradientTape() as tape:
            pred = predict(tf.expand_dims(xi, 0))
            loss = per_example_loss(tf.nest.map_structure(lambda t: tf.expand_dims(t, 0), yi), pred)
        grads = tape.gradient(loss, trainable)
        return [tf.zeros_like(v) if g is None else g for g, v in zip(grads, trainable)], loss

    g, losses = tf.vectorized_map(per_example, (batch["x"], batch["y"]))
    units = [tf.math.unsorted_segment_sum(t, batch["seg"], batch["nseg"]) for t in g]
    # Global-norm clipping written with vectorisable ops (tf.clip_by_global_norm uses L2Loss).
    sq = tf.add_n([tf.reduce_sum(tf.reshape(tf.square(u), [batch["nseg"], -1]), axis=1) for u in units])
    norms = tf.sqrt(sq)
    factor = tf.minimum(1.0, clip / tf.maximum(norms, 1e-12))
    return [tf.tensordot(factor, u, axes=1) for u in units], tf.reduce_sum(losses), norms


def _keras_and_weights(model_fn: Callable[[], Any], keras_model_fn: Callable[[], Any] | None):
    """(Keras model or None, inference-mode predict, ``ModelWeights`` in ``model_fn``'s order)."""
    if keras_model_fn is not None:
        km = keras_model_fn()
        mw = tff.learning.models.ModelWeights(trainable=list(km.trainable_weights),
                                              non_trainable=list(km.non_trainable_weights))
        return km, (lambda x: km(x, training=False)), mw
    model = model_fn()
    km = getattr(model, "_keras_model", None)  # TFF 0.87's from_keras_model wrapper
    return km, (lambda x: model.predict_on_batch(x, training=False)), tff.learning.models.ModelWeights.from_model(model)


def _clipped_sum_fn(km: Any, predict: Callable, trainable: tuple, per_example_loss: LossFn, clip: float, fast: bool):
    from bfdl_tff.models import clipping

    def fn(batch):
        if fast:
            return clipping.clipped_gradient_sum(km, batch["x"], batch["y"], per_example_loss,
                                                 segment_ids=batch["seg"], num_segments=batch["nseg"], l2_clip=clip)
        return _naive_clipped_sum(predict, trainable, per_example_loss, batch, clip)

    return fn


def _local_training(mw: Any, optimizer: Any, clipped_sum: Callable, clip: float):
    """The hospital's DP-SGD loop over one round's steps (a ``tf.function``)."""
    trainable = tuple(mw.trainable)
    specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable)

    # Everything inside one tf.function: automatic control dependencies order the weight
    # assignment, the local steps and the final read (plain graph mode would not).
    @tf.function
    def run(initial_weights, dataset):
        tf.nest.map_structure(lambda v, t: v.assign(t), mw, initial_weights)
        opt_state = optimizer.initialize(specs)

        def step(state, batch):
            opt_state, seen, units, loss_sum, clipped, n_k = state
            b = tf.shape(batch["x"])[0]

            def nonempty():
                g, lsum, norms = clipped_sum(batch)
                return list(g), lsum, tf.reduce_sum(tf.cast(norms > clip, tf.float32))

            def empty():
                return [tf.zeros_like(v) for v in trainable], tf.constant(0.0), tf.constant(0.0)

            gsum, lsum, csum = tf.cond(b > 0, nonempty, empty)
            keys = tf.random.experimental.stateless_split(batch["seed"], num=len(trainable))
            std = batch["z"] * clip
            noisy = tuple((g + tf.random.stateless_normal(tf.shape(g), seed=keys[i], stddev=std)) / batch["denom"]
                          for i, g in enumerate(gsum))
            opt_state, new_w = optimizer.next(opt_state, trainable, noisy)
            for v, w in zip(trainable, new_w):
                v.assign(w)
            return (opt_state, seen + tf.cast(b, tf.int64), units + tf.cast(batch["nseg"], tf.int64),
                    loss_sum + lsum, clipped + csum, tf.maximum(n_k, batch["n"]))

        zero = tf.constant(0, tf.int64)
        init = (opt_state, zero, zero, tf.constant(0.0), tf.constant(0.0), zero)
        _, seen, units, loss_sum, clipped, n_k = dataset.reduce(init, step)
        update = tuple(tf.subtract(a, v.read_value()) for a, v in zip(initial_weights.trainable, trainable))
        return update, seen, units, loss_sum, clipped, n_k

    return run


def build_dp_sgd_client_work(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    *,
    element_spec: collections.OrderedDict,
    per_example_loss: LossFn,
    optimizer: tff.learning.optimizers.Optimizer,
    l2_clip: float,
    keras_model_fn: Callable[[], tf.keras.Model] | None = None,
    fast_clipping: bool = True,
) -> tff.learning.templates.ClientWorkProcess:
    """DP-SGD client work (see module doc).

    ``per_example_loss(y, pred)`` returns the *sum* of the examples' losses of a batch (for a
    batch of one: that example's loss). ``keras_model_fn`` builds the Keras model behind
    ``model_fn`` (default: taken from ``model_fn()``); the noise multiplier and the denominator
    come from each step's dataset element (per hospital)."""
    from bfdl_tff.models import clipping

    clip = float(l2_clip)
    weights_type = tff.learning.models.weights_type_from_model(model_fn)
    data_type = tff.SequenceType(tff.types.tensorflow_to_type(element_spec))

    @tff.tensorflow.computation(weights_type, data_type)
    def client_update(initial_weights, dataset):
        km, predict, mw = _keras_and_weights(model_fn, keras_model_fn)
        fast = bool(fast_clipping and km is not None and clipping.supports_fast_clipping(km))
        clipped_sum = _clipped_sum_fn(km, predict, tuple(mw.trainable), per_example_loss, clip, fast)
        run = _local_training(mw, optimizer, clipped_sum, clip)
        update, seen, units, loss_sum, clipped, n_k = run(initial_weights, dataset)
        update, finite = _zero_if_non_finite(update)
        weight = tf.where(finite, tf.cast(n_k, tf.float32), 0.0)
        metrics = collections.OrderedDict(
            loss=loss_sum / tf.maximum(tf.cast(seen, tf.float32), 1.0),
            num_examples=seen,
            clipped_fraction=clipped / tf.maximum(tf.cast(units, tf.float32), 1.0),
            non_finite=tf.cast(tf.logical_not(finite), tf.int32),
        )
        return tff.learning.templates.ClientResult(update=update, update_weight=weight), metrics

    @tff.federated_computation
    def init_fn():
        return tff.federated_value((), tff.SERVER)

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(weights_type, tff.CLIENTS),
        tff.FederatedType(data_type, tff.CLIENTS),
    )
    def next_fn(state, weights, client_data):
        result, metrics = tff.federated_map(client_update, (weights, client_data))
        measurements = tff.federated_zip(
            collections.OrderedDict(
                train=collections.OrderedDict(
                    loss=tff.federated_mean(metrics.loss),
                    num_examples=tff.federated_sum(metrics.num_examples),
                    clipped_fraction=tff.federated_mean(metrics.clipped_fraction),
                    non_finite_clients=tff.federated_sum(metrics.non_finite),
                )
            )
        )
        return tff.templates.MeasuredProcessOutput(state, result, measurements)

    return tff.learning.templates.ClientWorkProcess(init_fn, next_fn)


__all__ = ["UNITS", "build_dp_sgd_client_work", "dp_sgd_element_spec", "poisson_dp_sgd_dataset", "round_dataset"]
