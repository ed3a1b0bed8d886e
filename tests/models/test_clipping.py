"""Fast per-unit clipping (bfdl_tff.models.clipping) equals the naive per-example computation."""

from __future__ import annotations

import numpy as np
import pytest

SIZE = 16


def _naive(model, x, y, loss_sum, seg, n_seg, clip):
    """Reference: one backward pass per example, summed per unit, clipped, summed."""
    import tensorflow as tf

    per_ex = []
    for i in range(len(x)):
        with tf.GradientTape() as tape:
            loss = loss_sum(tf.nest.map_structure(lambda t: t[i : i + 1], y), model(x[i : i + 1], training=False))
        per_ex.append([g.numpy() for g in tape.gradient(loss, model.trainable_variables)])
    units = [[sum(per_ex[i][v] for i in range(len(x)) if seg[i] == u) for v in range(len(per_ex[0]))] for u in range(n_seg)]
    norms = np.array([np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in unit)) for unit in units])
    fac = np.minimum(1.0, clip / np.maximum(norms, 1e-12))
    summed = [sum(fac[u] * units[u][v] for u in range(n_seg)) for v in range(len(per_ex[0]))]
    return summed, norms


def _model(**over):
    from bfdl_tff.federated import model_bridge
    from bfdl_tff.models import registry

    cfg = registry.load_model_config(over.pop("config", "small_cnn"), input_size=SIZE, **over)
    bundle = model_bridge.build_bundle(cfg)
    return bundle.keras(seed=3), bundle


MODELS = {
    "ws_input_std": dict(width=4, conv_layers=2, norm="ws", input_norm="image"),
    "group_norm_hidden_dense": dict(width=4, conv_layers=2, norm="group", norm_groups=2, head_units=6),
    "plain_conv": dict(width=4, conv_layers=2, norm="none"),
    "resnet_unet_small_seg": dict(config="resnet_unet_small", width=2, blocks=[1, 1], norm="group", norm_groups=2,
                                  seg_head=True, seg_loss_weight=0.5),
}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("unit", ["image", "patient"])
def test_fast_clipping_equals_naive(name, unit):
    import tensorflow as tf

    from bfdl_tff.models import clipping

    model, bundle = _model(**dict(MODELS[name]))
    assert clipping.supports_fast_clipping(model)
    rng = np.random.default_rng(0)
    b = 7
    x = rng.random((b, SIZE, SIZE, 1)).astype(np.float32)
    labels = (rng.random((b, 14)) < 0.3).astype(np.float32)
    if bundle.with_masks:
        masks = (rng.random((b, SIZE, SIZE, 1)) < 0.2).astype(np.float32)
        masks[1] = -1.0  # an image without a mask
        y = (labels, masks)
    else:
        y = labels
    seg = np.arange(b) if unit == "image" else np.array([0, 0, 1, 2, 2, 2, 3])
    n_seg = int(seg.max()) + 1
    # a clip norm between the smallest and the largest unit norm: some units clipped, some not
    _, ref_norms = _naive(model, x, y, bundle.per_example_loss, seg, n_seg, 1e9)
    clip = float(np.median(ref_norms))
    ref, ref_norms = _naive(model, x, y, bundle.per_example_loss, seg, n_seg, clip)
    got, loss, norms = clipping.clipped_gradient_sum(
        model, tf.constant(x), tf.nest.map_structure(tf.constant, y), bundle.per_example_loss,
        segment_ids=tf.constant(seg, tf.int32), num_segments=tf.constant(n_seg), l2_clip=clip,
    )
    np.testing.assert_allclose(norms.numpy(), ref_norms, rtol=1e-4)
    assert (ref_norms > clip).any() and (ref_norms < clip).any()
    for a, r, v in zip(got, ref, model.trainable_variables):
        np.testing.assert_allclose(a.numpy(), r, rtol=2e-4, atol=1e-6 * max(1.0, float(np.abs(r).max())), err_msg=v.name)
    full = float(bundle.per_example_loss(y, model(x, training=False)))
    assert float(loss) == pytest.approx(full, rel=1e-5)


def test_strided_and_valid_convs_match_naive():
    """Kernel gradients of stride-2 'same' and 'valid' convs (patch extraction alignment)."""
    import tensorflow as tf

    from bfdl_tff.models import clipping
    from bfdl_tff.models.layers import WSConv2D

    L = tf.keras.layers
    inp = L.Input((9, 9, 2))
    h = L.Conv2D(3, 3, strides=2, padding="same")(inp)
    h = WSConv2D(4, 3, padding="valid", activation="relu")(h)
    h = L.Conv2D(2, 1, strides=2, padding="same")(h)
    out = L.Dense(3, activation="sigmoid")(L.Flatten()(h)) if False else L.Dense(3, activation="sigmoid")(L.GlobalAveragePooling2D()(h))
    model = tf.keras.Model(inp, out)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 9, 9, 2)).astype(np.float32)
    y = (rng.random((5, 3)) < 0.5).astype(np.float32)

    def loss_sum(yt, p):
        return tf.reduce_sum(tf.keras.losses.binary_crossentropy(yt, p))

    seg = np.arange(5)
    ref, ref_norms = _naive(model, x, y, loss_sum, seg, 5, 1e9)
    got, _, norms = clipping.clipped_gradient_sum(model, tf.constant(x), tf.constant(y), loss_sum,
                                                  segment_ids=tf.constant(seg), num_segments=tf.constant(5), l2_clip=1e9)
    np.testing.assert_allclose(norms.numpy(), ref_norms, rtol=1e-4)
    for a, r in zip(got, ref):
        np.testing.assert_allclose(a.numpy(), r, rtol=2e-4, atol=1e-6)


def test_unsupported_layer_is_reported():
    import tensorflow as tf

    from bfdl_tff.models import clipping

    model, _ = _model(width=4, conv_layers=2, norm="batch")
    assert not clipping.supports_fast_clipping(model)
    assert clipping.supports_fast_clipping(tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2)]))
