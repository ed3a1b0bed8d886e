"""The model config schema (``configs/models/<name>.yaml``; paper 3.2 model architecture), shared by
the registry (loading) and the architectures (building) without an import cycle between them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    # Output activation (issue 15.1): sigmoid (one independent probability per label: multi-label
    # and binary tasks, binary cross-entropy) or softmax (one class per image: multiclass tasks,
    # categorical cross-entropy). The runner derives it and num_findings from the data's task
    # (:func:`for_task`) unless model.overrides set them.
    head: str = _c("sigmoid", choices=("sigmoid", "softmax"))
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


#: The head a task needs: task kind -> output activation.
HEAD_OF_TASK: dict[str, str] = {"multilabel": "sigmoid", "binary": "sigmoid", "multiclass": "softmax"}


def for_task(cfg: ModelConfig, *, kind: str, num_outputs: int, fixed: Any = (), source: str = "<model>") -> ModelConfig:
    """``cfg`` with its head derived from a task (issue 15.1): ``num_findings = num_outputs`` and
    ``head`` from :data:`HEAD_OF_TASK`. Keys in ``fixed`` (the user's ``model.overrides``) are not
    derived: a fixed value that contradicts the task raises :class:`ConfigError` naming ``source``."""
    import dataclasses

    from bfdl_tff.errors import ConfigError

    if kind not in HEAD_OF_TASK:
        raise ConfigError(source, "task", f"unknown task kind {kind!r} (one of {', '.join(HEAD_OF_TASK)})")
    want = {"num_findings": int(num_outputs), "head": HEAD_OF_TASK[kind]}
    for key, value in want.items():
        if key in fixed and getattr(cfg, key) != value:
            raise ConfigError(source, f"model.overrides.{key}",
                              f"is {getattr(cfg, key)!r} but the data's {kind} task with {num_outputs} label(s) needs {value!r}")
    if kind == "multiclass" and cfg.class_weighting != "none":
        raise ConfigError(source, "model.class_weighting", "positive-class weighting applies to sigmoid heads, not a multiclass task")
    return dataclasses.replace(cfg, **want)


def uses_masks(cfg: ModelConfig) -> bool:
    """True when the model has an active segmentation head (two outputs, needs masks)."""
    return bool(cfg.seg_head and cfg.seg_loss_weight > 0)


__all__ = ["ARCHITECTURES", "HEAD_OF_TASK", "HYBRIDS", "NORMS", "RESNET50_STRIDE", "ModelConfig", "for_task", "uses_masks"]
