"""Model builders for the registry (paper 3.1: U-Net + ResNet-50 hybrid for chest X-rays).

Every builder takes a :class:`bfdl_tff.models.registry.ModelConfig` and returns a new functional
``tf.keras.Model`` (no subclassed models, no ``Lambda`` layers), so TFF's ``from_keras_model`` can
wrap it inside ``model_fn()``.

- ``small_cnn``: optional per-image input standardisation (``input_norm: image``), then
  ``conv_layers`` x (3x3 conv, norm, ReLU, 2x2 max-pool), filters ``width * 2**i``, global
  pooling, optional dropout / hidden layer, 14 sigmoid outputs ``findings``. ``norm``: ``batch``
  (centralized reference only), ``group`` (GroupNorm), ``ws`` (weight-standardised convs with a
  bias, no activation normalisation: ``layers.WSConv2D``) or ``none``.
- ``resnet50``: ``tf.keras.applications.ResNet50(weights=None, include_top=False)`` backbone,
  global pooling, 14-way sigmoid head. With ``norm: batch`` the backbone is exactly keras'
  (same layers and parameter count); ``group`` / ``none`` rebuild the same graph from its config
  with each BatchNormalization replaced by GroupNormalization / Identity.
- ``resnet50_unet``: the same ResNet-50 as encoder; a U-Net decoder (bilinear 2x up-sampling,
  concatenation with the encoder stage of the same resolution, two 3x3 conv + norm + ReLU) over
  the skips ``conv4_block6_out`` (S/16), ``conv3_block4_out`` (S/8), ``conv2_block3_out`` (S/4),
  ``conv1_relu`` (S/2) and the input image (S); a 1x1 sigmoid segmentation head ``lesion``
  [S, S, 1]; the classification head sits on the bottleneck (``conv5_block3_out``, S/32).
- ``resnet_unet_small``: the same hybrid topology with a narrow residual encoder (3x3 stem, then
  ``len(blocks)`` stages of basic residual blocks, each halving the resolution (stride-2 3x3
  conv; average-pool + 1x1 conv shortcut, "ResNet-D") and doubling the filters from
  ``2 * width``), for 64 px CPU runs.
- ``keras_config``: a model rebuilt from a JSON (``model.to_json()``) or YAML file.

With the segmentation head inactive (``seg_head: false`` or ``seg_loss_weight: 0``) the hybrids
omit the decoder entirely (it would receive no gradient), i.e. they become encoder + classifier.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import yaml

from bfdl_tff.config import REPO_ROOT
from bfdl_tff.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

    from bfdl_tff.models.model_config import ModelConfig

#: ResNet-50 layers used as U-Net skips (deepest first) and the bottleneck.
RESNET50_SKIPS = ("conv4_block6_out", "conv3_block4_out", "conv2_block3_out", "conv1_relu")
RESNET50_BOTTLENECK = "conv5_block3_out"
RESNET50_DECODER = (256, 128, 64, 32, 16)


def _tf():
    import tensorflow as tf

    return tf


def group_count(groups: int, channels: int) -> int:
    """Largest divisor of ``channels`` that is <= ``groups`` (GroupNormalization needs one)."""
    g = max(1, min(groups, channels))
    while channels % g:
        g -= 1
    return g


def _norm(cfg: "ModelConfig", x: Any, name: str) -> Any:
    tf = _tf()
    if cfg.norm == "batch":
        return tf.keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    if cfg.norm == "group":
        ch = int(x.shape[-1])
        return tf.keras.layers.GroupNormalization(groups=group_count(cfg.norm_groups, ch), name=f"{name}_gn")(x)
    return x


def _conv(cfg: "ModelConfig", x: Any, filters: int, kernel: int, name: str, *, strides: int = 1) -> Any:
    """Conv2D (``norm: ws``: weight-standardised ``WSConv2D``), with a bias unless a norm follows."""
    tf = _tf()
    from bfdl_tff.models.layers import WSConv2D

    cls = WSConv2D if cfg.norm == "ws" else tf.keras.layers.Conv2D
    return cls(filters, kernel, strides=strides, padding="same", use_bias=cfg.norm in ("none", "ws"), name=name)(x)


def _input(cfg: "ModelConfig") -> tuple[Any, Any]:
    """The image input and, with ``input_norm: image``, its per-image standardisation."""
    tf = _tf()
    from bfdl_tff.models.layers import ImageStandardization

    inp = tf.keras.Input(shape=(cfg.input_size, cfg.input_size, cfg.channels), name="image")
    return inp, (ImageStandardization(name="input_std")(inp) if cfg.input_norm == "image" else inp)


def _conv_norm_relu(cfg: "ModelConfig", x: Any, filters: int, name: str, *, strides: int = 1, relu: bool = True) -> Any:
    tf = _tf()
    x = _conv(cfg, x, filters, 3, f"{name}_conv", strides=strides)
    x = _norm(cfg, x, name)
    if relu:
        x = tf.keras.layers.ReLU(name=f"{name}_relu")(x)
    return x


def _classification_head(cfg: "ModelConfig", features: Any) -> Any:
    tf = _tf()
    if cfg.pooling == "avg":
        x = tf.keras.layers.GlobalAveragePooling2D(name="head_pool")(features)
    else:
        x = tf.keras.layers.GlobalMaxPooling2D(name="head_pool")(features)
    if cfg.dropout > 0:
        x = tf.keras.layers.Dropout(cfg.dropout, name="head_dropout")(x)
    if cfg.head_units > 0:
        x = tf.keras.layers.Dense(cfg.head_units, activation="relu", name="head_hidden")(x)
        if cfg.dropout > 0:
            x = tf.keras.layers.Dropout(cfg.dropout, name="head_hidden_dropout")(x)
    return tf.keras.layers.Dense(cfg.num_findings, activation=cfg.head, dtype="float32", name="findings",
                                 bias_initializer=_output_bias(cfg))(x)


def _output_bias(cfg: "ModelConfig") -> Any:
    """``output_bias: prior``: the findings' biases start at the log-odds of the public NIH
    prevalences (chestxray14_label_stats.json), so training does not first spend its steps on
    learning the label priors (a public statistic: no privacy cost)."""
    tf = _tf()
    if cfg.output_bias != "prior" or cfg.num_findings != 14 or cfg.head != "sigmoid":
        return "zeros"
    import math

    from bfdl_tff.data.labels import FINDINGS
    from bfdl_tff.data.synth import load_label_stats

    prev = load_label_stats()["per_label_prevalence"]
    return tf.keras.initializers.Constant([math.log(prev[f] / (1 - prev[f])) for f in FINDINGS])


def _unet_decoder(cfg: "ModelConfig", bottleneck: Any, skips: list[Any], filters: list[int]) -> Any:
    """U-Net decoder: per skip, 2x bilinear up-sampling, concatenation, two conv-norm-ReLU."""
    tf = _tf()
    x = bottleneck
    for i, (skip, f) in enumerate(zip(skips, filters), start=1):
        x = tf.keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"dec{i}_up")(x)
        x = tf.keras.layers.Concatenate(name=f"dec{i}_concat")([x, skip])
        x = _conv_norm_relu(cfg, x, f, f"dec{i}_a")
        x = _conv_norm_relu(cfg, x, f, f"dec{i}_b")
    return tf.keras.layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="lesion")(x)


def _outputs(cfg: "ModelConfig", findings: Any, lesion: Any | None) -> Any:
    from bfdl_tff.models.model_config import uses_masks

    return [findings, lesion] if uses_masks(cfg) else findings


# --------------------------------------------------------------------------------------------
# small_cnn
# --------------------------------------------------------------------------------------------


def build_small_cnn(cfg: "ModelConfig") -> "tf.keras.Model":
    tf = _tf()
    inp, x = _input(cfg)
    for i in range(cfg.conv_layers):
        x = _conv_norm_relu(cfg, x, cfg.width * 2**i, f"block{i + 1}")
        x = tf.keras.layers.MaxPooling2D(2, name=f"block{i + 1}_pool")(x)
    return tf.keras.Model(inp, _classification_head(cfg, x), name=cfg.name or "small_cnn")


# --------------------------------------------------------------------------------------------
# ResNet-50 (keras.applications) and its U-Net hybrid
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _resnet50_config_json(size: int, channels: int) -> str:
    """keras' ResNet-50 (no top, random init) as a config, built once in a throwaway graph.

    Building it in a separate ``tf.Graph`` keeps its variables out of the caller's context
    (e.g. the graph TFF traces ``model_fn`` in) and out of memory; the model itself is then
    rebuilt from the config, with fresh variables, on every call.
    """
    tf = _tf()
    with tf.Graph().as_default():
        base = tf.keras.applications.ResNet50(include_top=False, weights=None, input_shape=(size, size, channels))
        config = base.get_config()
    return json.dumps(config)


def resnet50_backbone(cfg: "ModelConfig") -> "tf.keras.Model":
    """``keras.applications.ResNet50(weights=None, include_top=False)`` with the chosen norm."""
    tf = _tf()
    config = json.loads(_resnet50_config_json(cfg.input_size, cfg.channels))
    for layer in config["layers"]:
        if layer["class_name"] != "BatchNormalization" or cfg.norm == "batch":
            continue
        name = layer["config"]["name"]
        if cfg.norm == "group":
            # Every ResNet-50 normalised tensor has a multiple of 64 channels.
            layer["class_name"] = "GroupNormalization"
            layer["config"] = {
                "name": name,
                "trainable": True,
                "dtype": "float32",
                "groups": group_count(cfg.norm_groups, 64),
                "axis": -1,
                "epsilon": 1.001e-5,
            }
        else:
            layer["class_name"] = "Identity"
            layer["config"] = {"name": name, "trainable": True, "dtype": "float32"}
    return tf.keras.Model.from_config(config)


def build_resnet50(cfg: "ModelConfig") -> "tf.keras.Model":
    tf = _tf()
    base = resnet50_backbone(cfg)
    return tf.keras.Model(base.input, _classification_head(cfg, base.output), name=cfg.name or "resnet50")


def build_resnet50_unet(cfg: "ModelConfig") -> "tf.keras.Model":
    from bfdl_tff.models.model_config import uses_masks

    tf = _tf()
    base = resnet50_backbone(cfg)
    inp = base.input
    bottleneck = base.get_layer(RESNET50_BOTTLENECK).output
    findings = _classification_head(cfg, bottleneck)
    lesion = None
    if uses_masks(cfg):
        skips = [base.get_layer(n).output for n in RESNET50_SKIPS] + [inp]
        filters = list(cfg.decoder_filters) or list(RESNET50_DECODER)
        lesion = _unet_decoder(cfg, bottleneck, skips, filters)
    return tf.keras.Model(inp, _outputs(cfg, findings, lesion), name=cfg.name or "resnet50_unet")


# --------------------------------------------------------------------------------------------
# resnet_unet_small: narrow residual encoder + U-Net decoder
# --------------------------------------------------------------------------------------------


def _basic_block(cfg: "ModelConfig", x: Any, filters: int, name: str, *, strides: int) -> Any:
    tf = _tf()
    shortcut = x
    if strides != 1:
        # "Average-down" shortcut (ResNet-D): 2x2 average pooling, then a stride-1 1x1 conv.
        # A strided 1x1 conv here corrupts memory inside TFF's worker_binary with oneDNN on
        # (TF 2.14; see docs/models.md), and ResNet-D is the better-behaved variant anyway.
        shortcut = tf.keras.layers.AveragePooling2D(strides, name=f"{name}_proj_pool")(shortcut)
    if strides != 1 or int(x.shape[-1]) != filters:
        shortcut = _conv(cfg, shortcut, filters, 1, f"{name}_proj_conv")
        shortcut = _norm(cfg, shortcut, f"{name}_proj")
    y = _conv_norm_relu(cfg, x, filters, f"{name}_1", strides=strides)
    y = _conv_norm_relu(cfg, y, filters, f"{name}_2", relu=False)
    y = tf.keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return tf.keras.layers.ReLU(name=f"{name}_out")(y)


def build_resnet_unet_small(cfg: "ModelConfig") -> "tf.keras.Model":
    tf = _tf()
    inp, x = _input(cfg)
    x = _conv_norm_relu(cfg, x, cfg.width, "stem")
    stages = [x]
    for s, n_blocks in enumerate(cfg.blocks, start=1):
        f = cfg.width * 2**s
        for b in range(n_blocks):
            x = _basic_block(cfg, x, f, f"stage{s}_block{b + 1}", strides=2 if b == 0 else 1)
        stages.append(x)
    bottleneck = stages[-1]
    findings = _classification_head(cfg, bottleneck)
    lesion = None
    from bfdl_tff.models.model_config import uses_masks

    if uses_masks(cfg):
        skips = stages[-2::-1]  # deepest first, ending with the stem at full resolution
        filters = list(cfg.decoder_filters) or [int(t.shape[-1]) for t in skips]
        lesion = _unet_decoder(cfg, bottleneck, skips, filters)
    return tf.keras.Model(inp, _outputs(cfg, findings, lesion), name=cfg.name or "resnet_unet_small")


# --------------------------------------------------------------------------------------------
# keras_config escape hatch
# --------------------------------------------------------------------------------------------


def resolve_keras_config_path(cfg: "ModelConfig") -> Path:
    p = Path(cfg.keras_config)
    candidates = [p] if p.is_absolute() else []
    if not p.is_absolute():
        if cfg.source:
            candidates.append(Path(cfg.source).parent / p)
        candidates.append(REPO_ROOT / p)
    for c in candidates:
        if c.is_file():
            return c
    raise ConfigError(cfg.source or "<model config>", "keras_config", f"file not found: {cfg.keras_config}")


def _find_class(obj: Any, class_name: str, path: str = "") -> str | None:
    if isinstance(obj, dict):
        if obj.get("class_name") == class_name:
            cfg = obj.get("config")
            return (cfg or {}).get("name", path) if isinstance(cfg, dict) else path
        for k, v in obj.items():
            hit = _find_class(v, class_name, f"{path}.{k}" if path else str(k))
            if hit is not None:
                return hit
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            hit = _find_class(v, class_name, f"{path}[{i}]")
            if hit is not None:
                return hit
    return None


def read_keras_config(path: Path, *, source: str) -> dict[str, Any]:
    """Parse and vet a serialised Keras model (JSON or YAML, via ``yaml.safe_load``)."""
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(source, "keras_config", f"{path}: not valid JSON/YAML: {e}") from None
    if not isinstance(data, dict) or "class_name" not in data or "config" not in data:
        raise ConfigError(
            source, "keras_config", f"{path}: expected a serialised Keras model with class_name and config (model.to_json())"
        )
    lam = _find_class(data, "Lambda")
    if lam is not None:
        raise ConfigError(
            source,
            "keras_config",
            f"{path}: Lambda layer {lam!r} refused (its deserialisation runs stored code; use a registered custom layer)",
        )
    return data


def build_from_keras_config(cfg: "ModelConfig") -> "tf.keras.Model":
    tf = _tf()
    path = resolve_keras_config_path(cfg)
    data = read_keras_config(path, source=cfg.source or str(path))
    try:
        model = tf.keras.models.model_from_config(data)
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(cfg.source or str(path), "keras_config", f"{path}: cannot rebuild the model: {e}") from None
    want = (cfg.input_size, cfg.input_size, cfg.channels)
    got = tuple(model.inputs[0].shape[1:]) if model.inputs else None
    if got != want:
        raise ConfigError(
            cfg.source or str(path),
            "keras_config",
            f"{path}: model input shape {got} does not match input_size/channels {want} of the model config",
        )
    return model


BUILDERS: dict[str, Callable[["ModelConfig"], "tf.keras.Model"]] = {
    "small_cnn": build_small_cnn,
    "resnet50": build_resnet50,
    "resnet50_unet": build_resnet50_unet,
    "resnet_unet_small": build_resnet_unet_small,
    "keras_config": build_from_keras_config,
}


def check_outputs(model: "tf.keras.Model", cfg: "ModelConfig") -> None:
    """Enforce the output contract (findings [None, K] (+ lesion [None, S, S, 1]))."""
    from bfdl_tff.models.model_config import uses_masks

    outs = list(model.outputs)
    s, k = cfg.input_size, cfg.num_findings
    want = [("findings", (None, k))]
    if uses_masks(cfg):
        want.append(("lesion", (None, s, s, 1)))
    got = [(n, tuple(t.shape)) for n, t in zip(model.output_names, outs)]
    if got != want:
        msg = f"model outputs {got} do not match the contract {want}"
        if cfg.architecture == "keras_config":
            raise ConfigError(cfg.source or "<model config>", "keras_config", msg)
        raise AssertionError(msg)  # pragma: no cover - a builder bug
