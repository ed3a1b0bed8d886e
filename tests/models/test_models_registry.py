"""Model registry: configs, validation errors, builders, output contract, keras_config round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bfdl_tff.errors import ConfigError
from bfdl_tff.models import registry
from bfdl_tff.models.registry import build_model, list_models, load_model_config, uses_masks


def _write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------ configs and validation


def test_registry_lists_the_shipped_configs():
    names = list_models()
    for n in ("small_cnn", "resnet_unet_small", "resnet50", "resnet50_unet"):
        assert n in names
    cfg = load_model_config("small_cnn")
    assert cfg.name == "small_cnn" and cfg.architecture == "small_cnn"
    assert cfg.source.endswith("configs/models/small_cnn.yaml")
    assert (cfg.input_size, cfg.channels, cfg.num_findings, cfg.norm) == (64, 1, 14, "group")
    assert uses_masks(load_model_config("resnet_unet_small"))
    assert not uses_masks(load_model_config("resnet_unet_small", seg_loss_weight=0.0))
    assert not uses_masks(cfg)


def test_overrides_are_validated_like_file_keys():
    cfg = load_model_config("small_cnn", dropout=0.25, input_size=32)
    assert cfg.dropout == 0.25 and cfg.input_size == 32
    with pytest.raises(ConfigError) as ei:
        load_model_config("small_cnn", dropuot=0.1)
    assert ei.value.key == "dropuot" and "small_cnn.yaml" in ei.value.source


def test_unknown_model_names_file_and_lists_available():
    with pytest.raises(ConfigError) as ei:
        load_model_config("resnet9000")
    msg = str(ei.value)
    assert "resnet9000" in msg and "small_cnn" in msg and "configs/models" in msg


@pytest.mark.parametrize(
    "text, key, fragment",
    [
        ("architecture: small_cnn\nwidht: 8\n", "widht", "unknown key"),
        ("architecture: small_cnn\nwidth: eight\n", "width", "expected an integer"),
        ("architecture: small_cnn\ndropout: high\n", "dropout", "expected a number"),
        ("architecture: vgg19\n", "architecture", "must be one of"),
        ("architecture: small_cnn\nnorm: layer\n", "norm", "must be one of"),
        ("architecture: small_cnn\nseg_head: true\n", "seg_head", "no segmentation head"),
        ("architecture: resnet50\ninput_size: 100\n", "input_size", "multiple of 32"),
        ("architecture: resnet_unet_small\ninput_size: 40\n", "input_size", "multiple of"),
        ("architecture: resnet_unet_small\nseg_loss_weight: 0.5\n", "seg_loss_weight", "seg_head is false"),
        ("architecture: keras_config\n", "keras_config", "needs a keras_config"),
        ("architecture: resnet50_unet\ndecoder_filters: [8, 8]\n", "decoder_filters", "5 decoder stages"),
        ("architecture: small_cnn\nseg_head: yes please\n", "seg_head", "true/false"),
        ("- just\n- a list\n", "", "mapping"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path, text, key, fragment):
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        load_model_config(p)
    assert ei.value.source == str(p)
    assert ei.value.key == key
    assert fragment in ei.value.message
    assert str(p) in str(ei.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_model_config(tmp_path / "absent.yaml")


# ------------------------------------------------------------------ builders


def test_small_cnn_is_fresh_functional_and_uncompiled():
    import tensorflow as tf

    cfg = load_model_config("small_cnn")
    a, b = build_model(cfg, seed=1), build_model(cfg, seed=2)
    for m in (a, b):
        assert isinstance(m, tf.keras.Model) and m._is_graph_network  # functional, not subclassed
        assert m.optimizer is None and not m._is_compiled
        assert list(m.inputs[0].shape) == [None, 64, 64, 1]
        assert m.output_names == ["findings"] and list(m.output.shape) == [None, 14]
        assert not any(isinstance(l, tf.keras.layers.Lambda) for l in m.layers)
        assert not any(isinstance(l, tf.keras.layers.BatchNormalization) for l in m.layers)
    assert {id(v) for v in a.weights}.isdisjoint({id(v) for v in b.weights})
    assert any(not np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
    # Same seed, same initial weights.
    c = build_model(cfg, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), c.get_weights()))
    out = a(np.random.default_rng(0).random((3, 64, 64, 1), dtype=np.float32)).numpy()
    assert out.shape == (3, 14) and np.all((out > 0) & (out < 1))


def test_resnet50_param_count_equals_keras_applications_plus_head():
    import tensorflow as tf

    cfg = load_model_config("resnet50", input_size=64)
    model = build_model(cfg)
    ref = tf.keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 1))
    head = 2048 * 14 + 14
    assert model.count_params() == ref.count_params() + head
    total, trainable = registry.count_params(model)
    ref_trainable = int(sum(np.prod(v.shape) for v in ref.trainable_weights))
    assert trainable == ref_trainable + head and total == model.count_params()
    assert [l.name for l in ref.layers[1:]] == [l.name for l in model.layers[1 : len(ref.layers)]]


def test_resnet50_group_norm_replaces_every_batchnorm():
    import tensorflow as tf

    model = build_model(load_model_config("resnet50", input_size=32, norm="group"))
    kinds = {type(l).__name__ for l in model.layers}
    assert "BatchNormalization" not in kinds and "GroupNormalization" in kinds
    assert model.non_trainable_weights == []
    n_bn = sum(isinstance(l, tf.keras.layers.GroupNormalization) for l in model.layers)
    assert n_bn == 53  # ResNet-50 has 53 normalisation layers


def test_resnet50_unet_hybrid_output_shapes_and_skips():
    cfg = load_model_config("resnet50_unet", input_size=64)
    model = build_model(cfg)
    assert model.output_names == ["findings", "lesion"]
    assert [list(t.shape) for t in model.outputs] == [[None, 14], [None, 64, 64, 1]]
    # Decoder concatenates each encoder stage (U-Net skips).
    concat_inputs = {
        l.name: [t.name.split("/")[0] for t in l.input] for l in model.layers if l.name.endswith("_concat")
    }
    skip_sources = {src for srcs in concat_inputs.values() for src in srcs}
    for name in ("conv4_block6_out", "conv3_block4_out", "conv2_block3_out", "conv1_relu"):
        assert name in skip_sources
    # With the segmentation loss off, the decoder is not built: it becomes the plain classifier.
    cls_only = build_model(load_model_config("resnet50_unet", input_size=64, seg_loss_weight=0.0))
    assert cls_only.output_names == ["findings"]
    assert cls_only.count_params() == build_model(load_model_config("resnet50", input_size=64)).count_params()
    assert model.count_params() > cls_only.count_params()


def test_resnet_unet_small_hybrid_shapes_and_forward():
    cfg = load_model_config("resnet_unet_small")
    model = build_model(cfg)
    assert [list(t.shape) for t in model.outputs] == [[None, 14], [None, 64, 64, 1]]
    assert model.count_params() < 2_000_000
    x = np.random.default_rng(0).random((2, 64, 64, 1), dtype=np.float32)
    f, m = (t.numpy() for t in model(x))
    assert f.shape == (2, 14) and m.shape == (2, 64, 64, 1)
    assert np.all((m > 0) & (m < 1))
    small32 = build_model(load_model_config("resnet_unet_small", input_size=32, width=4, blocks=[1, 2, 1]))
    assert [list(t.shape) for t in small32.outputs] == [[None, 14], [None, 32, 32, 1]]
    assert sum("stage2_block" in l.name and l.name.endswith("_add") for l in small32.layers) == 2


# ------------------------------------------------------------------ keras_config escape hatch


def test_keras_config_round_trip_json_and_yaml(tmp_path):
    import yaml

    src_cfg = load_model_config("resnet_unet_small", input_size=32)
    src = build_model(src_cfg)
    (tmp_path / "model.json").write_text(src.to_json())
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(json.loads(src.to_json())))
    for fname in ("model.json", "model.yaml"):
        p = _write(
            tmp_path,
            f"architecture: keras_config\nkeras_config: {fname}\ninput_size: 32\nseg_head: true\nseg_loss_weight: 1.0\n",
            name=f"custom_{fname.split('.')[1]}.yaml",
        )
        cfg = load_model_config(p)
        a, b = build_model(cfg), build_model(cfg)
        assert a is not b and {id(v) for v in a.weights}.isdisjoint({id(v) for v in b.weights})
        assert [w.shape for w in a.get_weights()] == [w.shape for w in src.get_weights()]
        assert [v.name for v in a.weights] == [v.name for v in src.weights]
        assert a.output_names == ["findings", "lesion"]


def test_keras_config_rejects_lambda_and_shape_mismatch(tmp_path):
    import tensorflow as tf

    inp = tf.keras.Input((32, 32, 1))
    x = tf.keras.layers.Lambda(lambda t: t * 2.0, name="evil")(inp)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    out = tf.keras.layers.Dense(14, activation="sigmoid", name="findings")(x)
    (tmp_path / "lam.json").write_text(tf.keras.Model(inp, out).to_json())
    p = _write(tmp_path, "architecture: keras_config\nkeras_config: lam.json\ninput_size: 32\n")
    with pytest.raises(ConfigError) as ei:
        build_model(load_model_config(p))
    assert ei.value.key == "keras_config" and "Lambda" in ei.value.message and "evil" in ei.value.message

    (tmp_path / "ok.json").write_text(build_model(load_model_config("small_cnn", input_size=32)).to_json())
    p2 = _write(tmp_path, "architecture: keras_config\nkeras_config: ok.json\ninput_size: 64\n", name="m2.yaml")
    with pytest.raises(ConfigError, match="does not match input_size"):
        build_model(load_model_config(p2))
    p3 = _write(tmp_path, "architecture: keras_config\nkeras_config: nowhere.json\n", name="m3.yaml")
    with pytest.raises(ConfigError, match="file not found"):
        build_model(load_model_config(p3))


def test_swapping_the_config_file_changes_the_built_model(tmp_path):
    """A run reads its model from the config file: editing/swapping the file changes the model."""
    p = _write(tmp_path, "architecture: small_cnn\ninput_size: 32\nwidth: 4\n", name="mine.yaml")
    m1 = build_model(load_model_config(p))
    p.write_text("architecture: small_cnn\ninput_size: 32\nwidth: 8\nconv_layers: 2\nhead_units: 5\n")
    m2 = build_model(load_model_config(p))
    assert m1.count_params() != m2.count_params()
    assert "head_hidden" in [l.name for l in m2.layers] and "head_hidden" not in [l.name for l in m1.layers]
    # ... and via the experiment config's model reference.
    from bfdl_tff.config import ExperimentConfig, ModelRef

    exp = ExperimentConfig(model=ModelRef(config=str(p), overrides={"width": 2}))
    m3 = build_model(load_model_config(exp.model.config, **exp.model.overrides))
    assert m3.count_params() < m2.count_params()
    assert int(m3.get_layer("block1_conv").filters) == 2
