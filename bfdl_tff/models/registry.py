"""Model registry: named model configs under ``configs/models/`` and fresh Keras models built from them.

Paper 3.1 trains "a hybrid of the U-Net architecture and the ResNet-50 architecture" on NIH
ChestX-ray14 (14 findings). The registry offers that hybrid (``resnet50_unet``), the plain
ResNet-50 classifier (``resnet50``) and two small configs that share the code path and run on a
CPU in seconds per round (``small_cnn``, ``resnet_unet_small``). Any Keras functional model can be
plugged in through the ``keras_config`` architecture (a JSON from ``model.to_json()`` or a YAML
of the same structure).

Contract (docs/INTERFACES.md, "Models API"):

- :func:`load_model_config` reads ``configs/models/<name>.yaml`` (or a path to a YAML/JSON file)
  into :class:`ModelConfig`, strictly: unknown keys, wrong types and impossible values raise
  :class:`bfdl_tff.errors.ConfigError` naming the file and the key. Keyword overrides are applied
  before validation, so they are checked the same way.
- :func:`build_model` returns a **fresh, uncompiled, functional** ``tf.keras.Model`` on every
  call (TFF's ``from_keras_model`` needs a new model inside every ``model_fn()``). Input
  ``[None, S, S, C]`` float32 in [0, 1]. Output: one tensor ``[None, 14]`` of sigmoid
  probabilities (layer ``findings``), or, when the segmentation head is active
  (:func:`uses_masks`), two outputs ``[findings [None, 14], lesion [None, S, S, 1]]``.
- No ``Lambda`` layers anywhere (also refused inside ``keras_config`` files, whose Lambda
  deserialisation would execute stored code); custom layers are registered serialisable.

Deviations from the paper (documented in docs/models.md): the paper gives no architecture
details (decoder widths, normalisation, heads, input size); the choices here are standard ones and
are all config values. Normalisation is a choice because TFF's FedAvg aggregates trainable
weights only (BatchNormalization moving statistics are never averaged).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any


from bfdl_tff.config import CONFIG_DIR, from_dict, load_yaml_mapping
from bfdl_tff.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

MODELS_DIR = CONFIG_DIR / "models"

ARCHITECTURES = ("small_cnn", "resnet50", "resnet50_unet", "resnet_unet_small", "keras_config")
HYBRIDS = ("resnet50_unet", "resnet_unet_small")
NORMS = ("batch", "group", "ws", "none")

#: Input sizes of the ResNet-50 backbone must be multiples of its total stride.
RESNET50_STRIDE = 32


def _c(default: Any, **meta: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    """One model config file (``configs/models/<name>.yaml``); every field is a YAML key."""

    # Registry name; defaults to the file stem when the file does not set it.
    name: str = ""
    description: str = ""
    architecture: str = _c("small_cnn", choices=ARCHITECTURES)
    # Input images: [input_size, input_size, channels] float32 in [0, 1].
    input_size: int = _c(64, min=16, max=1024)
    channels: int = _c(1, min=1, max=4)
    num_findings: int = _c(14, min=1)
    # Base number of filters (small_cnn, resnet_unet_small). The ResNet-50 backbone is fixed.
    width: int = _c(16, min=1, max=512)
    # Residual blocks per encoder stage (resnet_unet_small; the number of stages is len(blocks)).
    blocks: list[int] = _c([1, 1, 1, 1])
    # Conv layers of small_cnn (each followed by 2x2 max pooling); filters width * 2**i.
    conv_layers: int = _c(3, min=1, max=8)
    # U-Net decoder filters, deepest first (hybrids). Empty: derived from the encoder.
    decoder_filters: list[int] = _c([])
    norm: str = _c("group", choices=NORMS)
    # Per-image input standardisation (layers.ImageStandardization) before the first conv.
    input_norm: str = _c("none", choices=("none", "image"))
    # Groups of GroupNormalization (reduced to a divisor of the channel count where needed).
    norm_groups: int = _c(8, min=1)
    pooling: str = _c("avg", choices=("avg", "max"))
    dropout: float = _c(0.0, min=0.0, max=0.95)
    # Initial bias of the 14 outputs: zeros, or the log-odds of the public NIH prevalences.
    output_bias: str = _c("zero", choices=("zero", "prior"))
    # Hidden units of the classification head before the 14 sigmoid outputs (0: none).
    head_units: int = _c(0, min=0)
    # Segmentation head (hybrids only): active when seg_head and seg_loss_weight > 0.
    seg_head: bool = False
    seg_loss_weight: float = _c(0.0, min=0.0)
    # Positive-class weighting of the findings BCE for rare findings. The caller computes the
    # weights from the labels it may see (losses.positive_weights) and passes them to build_loss.
    class_weighting: str = _c("none", choices=("none", "inverse_frequency"))
    pos_weight_max: float = _c(10.0, min=1.0)
    # architecture == keras_config: a JSON from model.to_json() or a YAML of the same structure;
    # relative paths are resolved against the config file's directory, then the repository root.
    keras_config: str = ""
    # Set by the loader: the file this config came from (not a YAML key users need to write).
    source: str = ""

    def check(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        arch = self.architecture
        if arch == "keras_config" and not self.keras_config:
            problems.append(("keras_config", "architecture keras_config needs a keras_config file path"))
        if arch != "keras_config" and self.keras_config:
            problems.append(("keras_config", f"only used with architecture: keras_config (got {arch})"))
        if self.seg_head and arch not in HYBRIDS + ("keras_config",):
            problems.append(("seg_head", f"architecture {arch} has no segmentation head (hybrids: {list(HYBRIDS)})"))
        if self.seg_loss_weight > 0 and not self.seg_head:
            problems.append(("seg_loss_weight", "is > 0 but seg_head is false"))
        if arch in ("resnet50", "resnet50_unet", "keras_config") and (self.norm == "ws" or self.input_norm != "none"):
            key = "norm" if self.norm == "ws" else "input_norm"
            problems.append((key, f"norm: ws and input_norm: image are built by small_cnn / resnet_unet_small only, not {arch}"))
        if arch in ("resnet50", "resnet50_unet") and (self.input_size % RESNET50_STRIDE or self.input_size < 32):
            problems.append(("input_size", f"ResNet-50 needs a multiple of {RESNET50_STRIDE} (>= 32), got {self.input_size}"))
        if arch == "resnet_unet_small":
            if not self.blocks or any(b < 1 for b in self.blocks):
                problems.append(("blocks", f"needs >= 1 stage with >= 1 block each, got {self.blocks}"))
            elif self.input_size % (2 ** len(self.blocks)):
                problems.append(
                    ("input_size", f"must be a multiple of 2**len(blocks) = {2 ** len(self.blocks)}, got {self.input_size}")
                )
        if arch == "small_cnn" and self.input_size < 2 ** self.conv_layers:
            problems.append(("input_size", f"too small for {self.conv_layers} pooling layers"))
        if self.decoder_filters:
            want = {"resnet50_unet": 5, "resnet_unet_small": len(self.blocks)}.get(arch)
            if want is None:
                problems.append(("decoder_filters", f"only used by the hybrids {list(HYBRIDS)}"))
            elif len(self.decoder_filters) != want:
                problems.append(("decoder_filters", f"{arch} has {want} decoder stages, got {len(self.decoder_filters)} values"))
            elif any(f < 1 for f in self.decoder_filters):
                problems.append(("decoder_filters", f"filters must be >= 1, got {self.decoder_filters}"))
        return problems

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        d = dataclasses.asdict(self)
        d.pop("source")
        return d


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def list_models() -> list[str]:
    """Names of the YAML configs under ``configs/models/`` (sorted; ``_*`` files are skipped).

    JSON files there are not listed (they may be serialised Keras models referenced by a
    ``keras_config`` entry); a JSON *model config* is loaded by its path.
    """
    names = {p.stem for p in MODELS_DIR.glob("*.yaml")} | {p.stem for p in MODELS_DIR.glob("*.yml")}
    return sorted(n for n in names if not n.startswith("_"))


def resolve_model_config(name_or_path: str | Path) -> Path:
    """``small_cnn`` -> ``configs/models/small_cnn.yaml``; a path is returned as is."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml", ".json") or p.is_file():
        if not p.is_file():
            raise ConfigError(str(p), "", "model config file not found")
        return p
    for ext in (".yaml", ".yml"):
        cand = MODELS_DIR / f"{name_or_path}{ext}"
        if cand.is_file():
            return cand
    raise ConfigError(
        str(MODELS_DIR / f"{name_or_path}.yaml"),
        "",
        f"unknown model {str(name_or_path)!r} (available: {', '.join(list_models()) or 'none'})",
    )


def load_model_config(name_or_path: str | Path, **overrides: Any) -> ModelConfig:
    """Load a model config by registry name or path; ``overrides`` replace keys before validation.

    Example: ``load_model_config("resnet_unet_small", input_size=32, seg_loss_weight=0.5)``.
    """
    path = resolve_model_config(name_or_path)
    data = load_yaml_mapping(path)
    if "source" in data:
        raise ConfigError(str(path), "source", "reserved key (set by the loader)")
    overrides.pop("source", None)
    data.update(overrides)
    cfg = from_dict(ModelConfig, data, source=str(path))
    cfg.source = str(path)
    if not cfg.name:
        cfg.name = path.stem
    return cfg


def uses_masks(cfg: ModelConfig) -> bool:
    """True when the model has an active segmentation head (two outputs, needs masks)."""
    return bool(cfg.seg_head and cfg.seg_loss_weight > 0)


def input_spec(cfg: ModelConfig, *, batch_size: int | None = None) -> Any:
    """The ``tf.TensorSpec`` structure of one batch: ``(x, y)`` or ``(x, (y, mask))``.

    Matches ``bfdl_tff.data.loader.make_dataset(..., with_masks=uses_masks(cfg))`` and is what
    ``tff.learning.models.from_keras_model(input_spec=...)`` expects.
    """
    import tensorflow as tf

    s, c = cfg.input_size, cfg.channels
    x = tf.TensorSpec([batch_size, s, s, c], tf.float32)
    y = tf.TensorSpec([batch_size, cfg.num_findings], tf.float32)
    if uses_masks(cfg):
        return (x, (y, tf.TensorSpec([batch_size, s, s, 1], tf.float32)))
    return (x, y)


def build_model(cfg: ModelConfig, *, seed: int | None = None) -> "tf.keras.Model":
    """A fresh, uncompiled, functional Keras model for ``cfg`` (new variables on every call).

    ``seed`` (optional) seeds Python, NumPy and TensorFlow (``tf.keras.utils.set_random_seed``)
    before building, so the initial weights are reproducible; federated code should still set
    the server's initial weights explicitly (TFF re-initialises per process).
    """
    from bfdl_tff.models import architectures

    if seed is not None:
        import tensorflow as tf

        tf.keras.utils.set_random_seed(int(seed))
    builder = architectures.BUILDERS[cfg.architecture]
    model = builder(cfg)
    architectures.check_outputs(model, cfg)
    return model


def count_params(model: "tf.keras.Model") -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    import numpy as np

    trainable = int(sum(np.prod(v.shape) for v in model.trainable_weights))
    total = int(sum(np.prod(v.shape) for v in model.weights))
    return total, trainable


def describe(cfg: ModelConfig, model: "tf.keras.Model") -> dict[str, Any]:
    """Summary used by ``bfdl models show``: parameters and output shapes."""
    total, trainable = count_params(model)
    outs = model.outputs
    return {
        "name": cfg.name,
        "architecture": cfg.architecture,
        "source": cfg.source,
        "input_shape": list(model.inputs[0].shape),
        "outputs": {t.name.split("/")[0]: list(t.shape) for t in outs},
        "output_names": list(model.output_names),
        "parameters": total,
        "trainable_parameters": trainable,
        "non_trainable_parameters": total - trainable,
        "layers": len(model.layers),
        "norm": cfg.norm,
        "uses_masks": uses_masks(cfg),
        "update_bytes_float32": trainable * 4,
        "approx_mib": round(total * 4 / 2**20, 2),
    }
