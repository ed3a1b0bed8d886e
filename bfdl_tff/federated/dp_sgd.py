"""Sample-level DP-SGD inside each hospital as a TFF ``ClientWorkProcess`` (paper 3.1: "optimized
with differential privacy stochastic gradient descent (DP-SGD)").

TFF's FedAvg client step only sees batch-mean gradients, so DP-SGD (Abadi et al. 2016) is a
custom :class:`tff.learning.templates.ClientWorkProcess`:

* **Poisson sampling, hospital-side.** :func:`poisson_dp_sgd_dataset` draws, for every local
  step, each of the hospital's ``n_k`` examples independently with probability
  ``q = batch_size / n_k`` (numpy ``Generator`` seeded from (seed, round, hospital)), so batch
  sizes vary (possibly 0). Each dataset element is one step:
  ``{"x": [b,...], "y": [b,14], "seed": int64[2], "n": int64}`` where ``seed`` is the
  step's noise key and ``n`` the hospital's example count ``n_k`` (its FedAvg weight). This is
  exactly the sampling scheme the accountant (:mod:`bfdl_tff.federated.accounting`, Poisson
  subsampled Gaussian) analyses; ``ceil(n_k / batch_size)`` steps make one local epoch.
* **Vectorised per-example gradients.** ``tf.vectorized_map`` over the examples of the step
  computes each example's gradient (one forward/backward on a batch of one, turned into batched
  ops by pfor) and clips it to L2 norm ``l2_clip``; the clipped gradients are summed, Gaussian
  noise ``N(0, (z * l2_clip)^2)`` from ``tf.random.stateless_normal`` keyed by the step's seed is
  added, and the sum is divided by the *expected* batch size ``batch_size`` (the standard
  unbiased estimator under Poisson sampling: the denominator must not depend on the sample).
* **Inference-mode forward pass.** Per-example gradients need a forward pass in which one
  example does not influence another: BatchNormalization in training mode normalises over the
  batch and would leak across examples (and has no statistics for a batch of one), and
  stateful dropout RNG does not vectorise. The per-example forward therefore runs with
  ``training=False`` (BN uses its stored statistics; dropout off). This is the usual choice
  (Opacus, for instance, rejects BatchNorm for DP-SGD); document models with BN accordingly.
* Non-finite updates are zeroed and given weight 0, like TFF's own ``model_delta`` client work;
  the runner reports such hospitals as rejected.

The update returned is ``w_t - w_t^k`` on the trainable weights, weight ``n_k`` (paper 2.1
``n_k / n``), aggregated by weighted FedAvg (optionally through ``SecureSumFactory``).
"""

from __future__ import annotations

import collections
import math
from typing import Any, Callable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def poisson_dp_sgd_dataset(
    x: np.ndarray,
    y: Any,
    *,
    batch_size: int,
    local_epochs: int,
    rng: np.random.Generator,
) -> tf.data.Dataset:
    """One hospital's DP-SGD steps for one round, with Poisson sampling (see module doc).

    ``y`` is the label array ``[n, 14]`` or a tuple ``(labels, masks)`` for a segmentation model.
    """
    n = len(x)
    if n == 0:
        raise ValueError("Poisson sampling needs at least one example")
    q = min(1.0, batch_size / n)
    steps = local_epochs * max(1, math.ceil(n / batch_size))
    parts = []
    for _ in range(steps):
        idx = np.flatnonzero(rng.random(n) < q)
        seed = rng.integers(0, 2**62, size=2, dtype=np.int64)
        parts.append(
            tf.data.Dataset.from_tensors(
                collections.OrderedDict(
                    x=x[idx],
                    y=tf.nest.map_structure(lambda a: a[idx], y),
                    seed=seed,
                    n=np.int64(n),
                )
            )
        )
    ds = parts[0]
    for p in parts[1:]:
        ds = ds.concatenate(p)
    return ds


def round_dataset(image_set: Any, *, batch_size: int, local_epochs: int, rng: np.random.Generator,
                  with_masks: bool = False) -> tf.data.Dataset:
    """One hospital's DP-SGD steps for one round from its training ``ImageSet`` (hospital-side)."""
    y = (image_set.y, image_set.mask) if with_masks else image_set.y
    return poisson_dp_sgd_dataset(image_set.x, y, batch_size=batch_size, local_epochs=local_epochs, rng=rng)


def dp_sgd_element_spec(batch_spec: Any) -> collections.OrderedDict:
    """Element spec of :func:`poisson_dp_sgd_dataset` from the model's ``(x, y)`` batch spec."""
    x_spec, y_spec = batch_spec
    unbatched = lambda s: tf.TensorSpec([None, *s.shape[1:]], s.dtype)  # noqa: E731
    return collections.OrderedDict(
        x=unbatched(x_spec),
        y=tf.nest.map_structure(unbatched, y_spec),
        seed=tf.TensorSpec([2], tf.int64),
        n=tf.TensorSpec([], tf.int64),
    )


def _zero_if_non_finite(update):
    flat = tf.nest.flatten(update)
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in flat])
    zeroed = [tf.where(finite, t, tf.zeros_like(t)) for t in flat]
    return tf.nest.pack_sequence_as(update, zeroed), finite


def build_dp_sgd_client_work(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    *,
    element_spec: collections.OrderedDict,
    per_example_loss: LossFn,
    optimizer: tff.learning.optimizers.Optimizer,
    l2_clip: float,
    noise_multiplier: float,
    expected_batch_size: int,
) -> tff.learning.templates.ClientWorkProcess:
    """DP-SGD client work (see module doc). ``per_example_loss(y[1,...], pred[1,...])`` -> scalar."""
    clip = float(l2_clip)
    z = float(noise_multiplier)
    denom = float(expected_batch_size)

    weights_type = tff.learning.models.weights_type_from_model(model_fn)
    data_type = tff.SequenceType(tff.types.tensorflow_to_type(element_spec))

    @tff.tensorflow.computation(weights_type, data_type)
    def client_update(initial_weights, dataset):
        model = model_fn()
        mw = tff.learning.models.ModelWeights.from_model(model)
        trainable = tuple(mw.trainable)
        specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable)

        # Everything inside one tf.function: automatic control dependencies order the weight
        # assignment, the local steps and the final read (plain graph mode would not).
        @tf.function
        def run(initial_weights, dataset):
            tf.nest.map_structure(lambda v, t: v.assign(t), mw, initial_weights)
            opt_state = optimizer.initialize(specs)

            def per_example(ex):
                xi, yi = ex
                with tf.GradientTape() as tape:
                    pred = model.predict_on_batch(tf.expand_dims(xi, 0), training=False)
                    loss = per_example_loss(tf.nest.map_structure(lambda t: tf.expand_dims(t, 0), yi), pred)
                grads = tape.gradient(loss, trainable)
                grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, trainable)]
                # Global-norm clipping written with vectorisable ops (tf.clip_by_global_norm uses
                # L2Loss, for which pfor has no converter and falls back to a while_loop).
                norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads]))
                factor = tf.minimum(1.0, clip / tf.maximum(norm, 1e-12))
                clipped = [g * factor for g in grads]
                return clipped, loss, tf.cast(norm > clip, tf.float32)

            def step(state, batch):
                opt_state, seen, loss_sum, clipped_sum, n_k = state
                b = tf.shape(batch["x"])[0]

                def vmapped():
                    g, losses, was_clipped = tf.vectorized_map(per_example, (batch["x"], batch["y"]))
                    return (
                        [tf.reduce_sum(t, axis=0) for t in g],
                        tf.reduce_sum(losses),
                        tf.reduce_sum(was_clipped),
                    )

                def empty():
                    return [tf.zeros_like(v) for v in trainable], tf.constant(0.0), tf.constant(0.0)

                gsum, lsum, csum = tf.cond(b > 0, vmapped, empty)
                keys = tf.random.experimental.stateless_split(batch["seed"], num=len(trainable))
                noisy = [
                    (g + tf.random.stateless_normal(tf.shape(g), seed=keys[i], stddev=z * clip)) / denom
                    for i, g in enumerate(gsum)
                ]
                opt_state, new_w = optimizer.next(opt_state, trainable, tuple(noisy))
                for v, w in zip(trainable, new_w):
                    v.assign(w)
                return (
                    opt_state,
                    seen + tf.cast(b, tf.int64),
                    loss_sum + lsum,
                    clipped_sum + csum,
                    tf.maximum(n_k, batch["n"]),
                )

            init = (opt_state, tf.constant(0, tf.int64), tf.constant(0.0), tf.constant(0.0), tf.constant(0, tf.int64))
            _, seen, loss_sum, clipped_sum, n_k = dataset.reduce(init, step)
            update = tuple(tf.subtract(a, v.read_value()) for a, v in zip(initial_weights.trainable, trainable))
            return update, seen, loss_sum, clipped_sum, n_k

        update, seen, loss_sum, clipped_sum, n_k = run(initial_weights, dataset)
        update, finite = _zero_if_non_finite(update)
        weight = tf.where(finite, tf.cast(n_k, tf.float32), 0.0)
        seen_f = tf.maximum(tf.cast(seen, tf.float32), 1.0)
        metrics = collections.OrderedDict(
            loss=loss_sum / seen_f,
            num_examples=seen,
            clipped_fraction=clipped_sum / seen_f,
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


__all__ = ["build_dp_sgd_client_work", "dp_sgd_element_spec", "poisson_dp_sgd_dataset", "round_dataset"]
