"""The bridge between the model registry (``bfdl_tff.models``) and TFF (paper 3.1: the
ResNet-50/U-Net hybrid trained federatedly): ``model_fn`` for ``from_keras_model``, the per-example
loss DP-SGD needs, seeded initial weights and the Keras optimizer of the centralized arm."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from bfdl_tff.models import losses as mlosses
from bfdl_tff.models import registry


@dataclass
class ModelBundle:
    cfg: Any  # registry.ModelConfig
    model_fn: Callable[[], tff.learning.models.VariableModel]
    batch_spec: Any
    per_example_loss: Callable[[Any, Any], tf.Tensor]
    with_masks: bool
    class_weights: np.ndarray | None

    def keras(self, *, seed: int | None = None) -> tf.keras.Model:
        return registry.build_model(self.cfg, seed=seed)


def build_bundle(model_cfg: Any, *, class_weights: np.ndarray | None = None) -> ModelBundle:
    batch_spec = registry.input_spec(model_cfg)
    with_masks = registry.uses_masks(model_cfg)

    def model_fn() -> tff.learning.models.VariableModel:
        loss, loss_weights = mlosses.build_loss(model_cfg, class_weights=class_weights)
        return tff.learning.models.from_keras_model(
            registry.build_model(model_cfg),
            input_spec=batch_spec,
            loss=loss,
            loss_weights=loss_weights,
        )

    loss_none, loss_w = mlosses.build_loss(model_cfg, class_weights=class_weights, reduction="none")

    def per_example_loss(y: Any, pred: Any) -> tf.Tensor:
        """Loss of a batch of one example (the batch axis is summed away)."""
        if isinstance(loss_none, (list, tuple)):
            ys = tf.nest.flatten(y)
            ps = pred if isinstance(pred, (list, tuple)) else [pred]
            total = tf.constant(0.0)
            for lf, w, yt, pt in zip(loss_none, loss_w or [1.0] * len(loss_none), ys, ps):
                total += float(w) * tf.reduce_sum(lf(yt, pt))
            return total
        if isinstance(pred, (list, tuple)):
            pred = pred[0]
        return tf.reduce_sum(loss_none(y, pred))

    return ModelBundle(
        cfg=model_cfg,
        model_fn=model_fn,
        batch_spec=batch_spec,
        per_example_loss=per_example_loss,
        with_masks=with_masks,
        class_weights=class_weights,
    )


def keras_optimizer(name: str, *, learning_rate: float, momentum: float = 0.0) -> tf.keras.optimizers.Optimizer:
    """The Keras optimizer matching ``processes.make_optimizer`` (centralized arm)."""
    if name == "sgd":
        return tf.keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum)
    if name == "adam":
        return tf.keras.optimizers.Adam(learning_rate=learning_rate)
    raise ValueError(f"unknown optimizer {name!r}")


__all__ = ["ModelBundle", "build_bundle", "keras_optimizer"]
