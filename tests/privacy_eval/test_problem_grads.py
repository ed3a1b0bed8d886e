"""Per-problem weight gradients (bfdl_tff.privacy_eval.problem_grads), the engine of the batched
inversion: the ``chain`` engine (one pass, per-layer formulas) and the generic ``vmap`` engine
against one ``tf.GradientTape`` per problem, to first and to second order (the inversion
differentiates the gradient-matching loss w.r.t. the images)."""

from __future__ import annotations

import numpy as np
import pytest

from bfdl_tff.privacy_eval import problem_grads as PG
from bfdl_tff.privacy_eval import toy

SIZE = 16


def _ws_conv_class():
    """A Conv2D with a weight-standardising kernel transform (like the models' WSConv2D)."""
    import tensorflow as tf

    def standardise(k):
        mean = tf.reduce_mean(k, axis=[0, 1, 2], keepdims=True)
        var = tf.reduce_mean(tf.square(k - mean), axis=[0, 1, 2], keepdims=True)
        return (k - mean) * tf.math.rsqrt(var + 1e-4)

    class StdConv(tf.keras.layers.Conv2D):
        def kernel_transform(self, kernel):
            return standardise(kernel)

        def convolution_op(self, inputs, kernel):
            return super().convolution_op(inputs, standardise(kernel))

    return StdConv


def _models():
    import tensorflow as tf

    from bfdl_tff.models import registry

    tf.keras.utils.set_random_seed(3)
    inp = tf.keras.Input((SIZE, SIZE, 1))
    h = _ws_conv_class()(4, 3, padding="valid", strides=2, activation="relu")(inp)
    h = tf.keras.layers.GroupNormalization(groups=2)(h)
    h = tf.keras.layers.Conv2D(6, 3, padding="same", use_bias=False)(h)
    h = tf.keras.layers.ReLU()(h)
    h = tf.keras.layers.GlobalAveragePooling2D()(h)
    h = tf.keras.layers.Dense(8, activation="tanh")(h)
    ws = tf.keras.Model(inp, tf.keras.layers.Dense(14, activation="sigmoid", name="findings")(h))
    small = registry.build_model(registry.load_model_config("small_cnn", input_size=SIZE, width=4), seed=1)
    return {"tiny": toy.tiny_model(SIZE, seed=0), "small_cnn": small, "ws_gn_dense": ws}


@pytest.fixture(scope="module")
def models():
    return _models()


def _data(p: int, n: int, seed: int = 0):
    x, y = toy.toy_images(p * n, SIZE, seed=seed)
    return x.reshape(p, n, SIZE, SIZE, 1), y.reshape(p, n, 14)


@pytest.mark.parametrize("name,engine", [("tiny", "chain"), ("small_cnn", "chain"), ("ws_gn_dense", "chain"),
                                         ("ws_gn_dense", "loop")])
def test_engines_equal_per_problem_tapes(models, name, engine):
    import tensorflow as tf

    model = models[name]
    fn, used = PG.make_problem_gradients(model, engine=engine)
    assert used == engine
    x, y = _data(3, 4)
    got = fn(tf.constant(x), tf.constant(y))
    ref = PG.reference_gradients(model, x, y)
    assert [tuple(g.shape) for g in got] == [(3, *v.shape) for v in model.trainable_variables]
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-4, atol=1e-6 * max(1.0, float(np.abs(b).max())))


@pytest.mark.parametrize("name", ["tiny", "ws_gn_dense"])
def test_second_order_gradient_equals_per_problem_tapes(models, name):
    """d/dx of sum_p (1 - cos(g_p(x_p), t_p)) equals each problem's own d/dx_p (independence)."""
    import tensorflow as tf

    from bfdl_tff.privacy_eval.problem_grads import bce_mean

    model = models[name]
    x, y = _data(2, 2, seed=1)
    t, _ = _data(2, 2, seed=2)
    targets = PG.reference_gradients(model, t, y)
    fn, _ = PG.make_problem_gradients(model, engine="chain")

    def cos(gs, ts):
        dot = tf.add_n([tf.reduce_sum(a * b) for a, b in zip(gs, ts)])
        na = tf.sqrt(tf.add_n([tf.reduce_sum(a * a) for a in gs]))
        nb = tf.sqrt(tf.add_n([tf.reduce_sum(b * b) for b in ts]))
        return 1.0 - dot / (na * nb)

    xv = tf.constant(x)
    with tf.GradientTape() as outer:
        outer.watch(xv)
        g = fn(xv, tf.constant(y))
        total = tf.add_n([cos([a[p] for a in g], [b[p] for b in targets]) for p in range(2)])
    batched = outer.gradient(total, xv).numpy()
    for p in range(2):
        xp = tf.constant(x[p])
        with tf.GradientTape() as o:
            o.watch(xp)
            with tf.GradientTape() as inner:
                loss = bce_mean(tf.constant(y[p]), model(xp))
            gp = inner.gradient(loss, model.trainable_variables)
            c = cos(gp, [b[p] for b in targets])
        ref = o.gradient(c, xp).numpy()
        np.testing.assert_allclose(batched[p], ref, rtol=1e-3, atol=1e-4 * float(np.abs(ref).max()))


def test_vmap_engine_and_fallback_for_models_that_are_not_chains():
    import tensorflow as tf

    inp = tf.keras.Input((SIZE, SIZE, 1))
    a = tf.keras.layers.Conv2D(3, 3, padding="same", activation="relu")(inp)
    b = tf.keras.layers.Conv2D(3, 1)(inp)
    h = tf.keras.layers.GlobalAveragePooling2D()(tf.keras.layers.Add()([a, b]))
    model = tf.keras.Model(inp, tf.keras.layers.Dense(14, activation="sigmoid")(h))
    assert PG.chain_layers(model) is None
    with pytest.raises(NotImplementedError):
        PG.make_problem_gradients(model, engine="chain")
    fn, used = PG.make_problem_gradients(model)
    assert used == "vmap"
    x, y = _data(2, 3)
    for got, ref in zip(fn(tf.constant(x), tf.constant(y)), PG.reference_gradients(model, x, y)):
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-4, atol=1e-7)
