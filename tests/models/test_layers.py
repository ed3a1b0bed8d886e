"""Custom layers (bfdl_tff.models.layers) and the registry options that use them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bfdl_tff.errors import ConfigError


def test_image_standardization_is_per_image():
    import tensorflow as tf

    from bfdl_tff.models.layers import ImageStandardization

    rng = np.random.default_rng(0)
    x = rng.random((3, 8, 8, 1)).astype(np.float32) * np.array([1.0, 5.0, 2.0], np.float32)[:, None, None, None] + 2.0
    out = ImageStandardization()(tf.constant(x)).numpy()
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 1.0, rtol=2e-2)
    # an image's output does not depend on the other images of the batch
    np.testing.assert_allclose(ImageStandardization()(tf.constant(x[1:2])).numpy(), out[1:2], rtol=1e-5, atol=1e-6)


def test_ws_conv_kernel_is_standardised_and_vjp_matches_autodiff():
    import tensorflow as tf

    from bfdl_tff.models.layers import WSConv2D, standardize_kernel, ws_kernel_vjp

    rng = np.random.default_rng(1)
    k = tf.Variable(rng.normal(0.3, 2.0, (3, 3, 4, 5)).astype(np.float32))
    w = standardize_kernel(k).numpy()
    np.testing.assert_allclose(w.mean(axis=(0, 1, 2)), 0.0, atol=1e-6)
    np.testing.assert_allclose((w**2).sum(axis=(0, 1, 2)), 1.0, rtol=1e-3)  # unit norm per output channel
    g = rng.normal(size=(2, 3, 3, 4, 5)).astype(np.float32)  # a batch of upstream gradients
    for i in range(2):
        with tf.GradientTape() as tape:
            out = tf.reduce_sum(standardize_kernel(k) * g[i])
        np.testing.assert_allclose(ws_kernel_vjp(k, tf.constant(g)).numpy()[i], tape.gradient(out, k).numpy(), rtol=1e-4, atol=1e-6)
    layer = WSConv2D(5, 3, padding="same", use_bias=False)
    x = tf.constant(rng.random((1, 6, 6, 4)).astype(np.float32))
    layer(x)
    layer.kernel.assign(k)
    ref = tf.nn.conv2d(x, standardize_kernel(k), 1, "SAME")
    np.testing.assert_allclose(layer(x).numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)


def test_cnn32_config_builds_and_round_trips_through_json():
    import tensorflow as tf

    from bfdl_tff.data.labels import FINDINGS
    from bfdl_tff.data.synth import load_label_stats
    from bfdl_tff.models import registry

    cfg = registry.load_model_config("cnn32")
    assert (cfg.norm, cfg.input_norm, cfg.output_bias, cfg.input_size) == ("ws", "image", "prior", 32)
    model = registry.build_model(cfg, seed=0)
    names = [type(layer).__name__ for layer in model.layers]
    assert names.count("WSConv2D") == cfg.conv_layers and "ImageStandardization" in names
    assert not any("Normalization" in n for n in names)
    bias = model.get_layer("findings").bias.numpy()
    prev = load_label_stats()["per_label_prevalence"]
    np.testing.assert_allclose(1 / (1 + np.exp(-bias)), [prev[f] for f in FINDINGS], rtol=1e-5)
    again = tf.keras.models.model_from_json(model.to_json())
    again.set_weights(model.get_weights())
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype(np.float32)
    np.testing.assert_allclose(again(x).numpy(), model(x).numpy(), rtol=1e-5)
    json.loads(model.to_json())


def test_ws_and_input_norm_only_for_own_builders():
    from bfdl_tff.models import registry

    with pytest.raises(ConfigError, match="norm"):
        registry.load_model_config("resnet50", norm="ws", input_size=32)
    with pytest.raises(ConfigError, match="input_norm"):
        registry.load_model_config("resnet50", input_norm="image", input_size=32)
    with pytest.raises(ConfigError, match="output_bias"):
        registry.load_model_config("small_cnn", output_bias="mean")
