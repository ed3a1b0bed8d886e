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

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bfdl_tff.config import CONFIG_DIR, from_dict, load_yaml_mapping
from bfdl_tff.errors import ConfigError
# The schema lives in its own module (no registry <-> architectures cycle); re-exported here.
from bfdl_tff.models.model_config import ARCHITECTURES, HYBRIDS, NORMS, RESNET50_STRIDE, ModelConfig, for_task, uses_masks

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

MODELS_DIR = CONFIG_DIR / "models"

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
