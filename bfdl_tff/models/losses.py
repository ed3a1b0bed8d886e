"""Losses and metrics shared by centralized (Keras ``compile``/``fit``) and federated (TFF) training.

Paper 3.1-3.3: multi-label classification of the 14 ChestX-ray14 findings with a U-Net/ResNet-50
hybrid. The paper names no loss; the standard choice is used:

- **findings**: binary cross-entropy averaged over the 14 findings (sigmoid outputs), optionally
  with a positive-class weight per finding (``pos_weight_k``, e.g. ``n_neg / n_pos`` capped at
  ``pos_weight_max``: :func:`positive_weights`) so rare findings (Hernia: 0.2 % of NIH images)
  are not ignored. ``class_weights`` are an argument, not computed here, because what label
  counts the caller may use is a privacy decision (pooled labels centrally; in the federated arm
  either a public prior or each site's own counts).
- a **softmax head** (``head: softmax``, multiclass tasks, issue 15.1): categorical cross-entropy
  over the one-hot ``y`` instead (a binary task is one sigmoid output with the BCE above).
- **lesion** (hybrids with an active segmentation head): per-pixel binary cross-entropy over the
  pixels whose mask value is 0 or 1; masks filled with **-1** (images without a lesion box, as
  produced by ``bfdl_tff.data.loader``) are ignored. Each example's value is the mean over its
  valid pixels (0 when it has none); the batch value is the mean over the examples that have a
  mask, so images without masks do not dilute the segmentation signal. With
  ``reduction="none"`` the per-example values are returned (as DP-SGD needs).
- The total loss is ``bce + seg_loss_weight * masked_seg`` (``loss_weights = [1, w]``).

The two-output form works with ``model.compile(loss=[...], loss_weights=[...])`` and with
``tff.learning.models.from_keras_model(..., loss=[...], loss_weights=[...])`` (which calls
``loss_fns[i](y_true[i], y_pred[i])`` on batches ``(x, (y, mask))``).

Metrics (:func:`build_metrics`) read the findings output even when TFF hands them the whole
``(y, mask)`` / ``[findings, lesion]`` structure, so the same list serves both model shapes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from bfdl_tff.models.registry import ModelConfig

import tensorflow as tf

_PKG = "bfdl_tff"
_REDUCTIONS = {
    "auto": tf.keras.losses.Reduction.AUTO,
    "sum_over_batch_size": tf.keras.losses.Reduction.SUM_OVER_BATCH_SIZE,
    "sum": tf.keras.losses.Reduction.SUM,
    "none": tf.keras.losses.Reduction.NONE,
}


def _bce(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    eps = tf.keras.backend.epsilon()
    p = tf.clip_by_value(y_pred, eps, 1.0 - eps)
    return -(y_true * tf.math.log(p) + (1.0 - y_true) * tf.math.log(1.0 - p))


@tf.keras.utils.register_keras_serializable(package=_PKG)
class WeightedBinaryCrossentropy(tf.keras.losses.Loss):
    """BCE averaged over the last axis with a positive-class weight per output.

    ``loss = mean_k -(w_k y_k log p_k + (1 - y_k) log(1 - p_k))``; ``w_k = 1`` reproduces
    ``tf.keras.losses.BinaryCrossentropy`` (up to clipping at ``epsilon``).
    """

    def __init__(self, pos_weight: Sequence[float], *, name: str = "weighted_bce", reduction: Any = tf.keras.losses.Reduction.AUTO) -> None:
        super().__init__(name=name, reduction=reduction)
        self.pos_weight = [float(w) for w in pos_weight]

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        y_true = tf.cast(y_true, y_pred.dtype)
        w = tf.constant(self.pos_weight, dtype=y_pred.dtype)
        eps = tf.keras.backend.epsilon()
        p = tf.clip_by_value(y_pred, eps, 1.0 - eps)
        per = -(w * y_true * tf.math.log(p) + (1.0 - y_true) * tf.math.log(1.0 - p))
        return tf.reduce_mean(per, axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "pos_weight": self.pos_weight}


def masked_bce_per_example(y_true: tf.Tensor, y_pred: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(per-example mean BCE over valid pixels, per-example 1.0 if it has any valid pixel).

    A pixel is valid when its mask value is >= 0 (masks are {0, 1}; -1 marks "no mask").
    """
    y_true = tf.cast(y_true, y_pred.dtype)
    valid = tf.cast(y_true >= 0.0, y_pred.dtype)
    target = tf.clip_by_value(y_true, 0.0, 1.0)
    per_pixel = _bce(target, y_pred) * valid
    axes = tf.range(1, tf.rank(per_pixel))
    n_valid = tf.reduce_sum(valid, axis=axes)
    per_example = tf.math.divide_no_nan(tf.reduce_sum(per_pixel, axis=axes), n_valid)
    return per_example, tf.cast(n_valid > 0, y_pred.dtype)


@tf.keras.utils.register_keras_serializable(package=_PKG)
class MaskedBinaryCrossentropy(tf.keras.losses.Loss):
    """Segmentation BCE that ignores masks filled with -1 (see the module docstring).

    Reductions: ``none`` -> per-example values ``[batch]`` (0 for examples without a mask);
    ``sum`` -> their sum; anything else -> their mean over the examples that have a mask
    (0 when no example in the batch has one).
    """

    def __init__(self, *, name: str = "masked_seg_bce", reduction: Any = tf.keras.losses.Reduction.AUTO) -> None:
        super().__init__(name=name, reduction=reduction)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        return masked_bce_per_example(y_true, y_pred)[0]

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> tf.Tensor:
        with tf.name_scope(self.name):
            y_pred = tf.convert_to_tensor(y_pred)
            per_example, has_mask = masked_bce_per_example(tf.convert_to_tensor(y_true), y_pred)
            if sample_weight is not None:
                sw = tf.reshape(tf.cast(sample_weight, y_pred.dtype), [-1])
                per_example = per_example * sw
                has_mask = has_mask * tf.cast(sw > 0, y_pred.dtype)
            if self.reduction == tf.keras.losses.Reduction.NONE:
                return per_example
            total = tf.reduce_sum(per_example)
            if self.reduction == tf.keras.losses.Reduction.SUM:
                return total
            return tf.math.divide_no_nan(total, tf.reduce_sum(has_mask))


def positive_weights(y: np.ndarray, *, max_weight: float = 10.0) -> np.ndarray:
    """Per-finding positive weights ``clip(n_neg / n_pos, 1, max_weight)`` from labels ``[N, K]``.

    A finding with no positives gets ``max_weight``; a finding more frequent than its absence gets 1.
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2:
        raise ValueError(f"labels must be [N, K], got shape {y.shape}")
    pos = y.sum(axis=0)
    neg = y.shape[0] - pos
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(pos > 0, neg / np.maximum(pos, 1e-12), max_weight)
    return np.clip(ratio, 1.0, max_weight).astype(np.float32)


def build_loss(
    cfg: "ModelConfig",
    *,
    class_weights: Sequence[float] | np.ndarray | None = None,
    reduction: str = "auto",
) -> tuple[Any, list[float] | None]:
    """``(loss, loss_weights)`` for ``cfg``'s model.

    Single output: ``(bce, None)``. Active segmentation head: ``([bce, masked_seg], [1.0, w])``
    with ``w = cfg.seg_loss_weight``. ``class_weights``: per-finding positive weights (length
    ``num_findings``), e.g. from :func:`positive_weights`. ``reduction``: ``auto`` (Keras/TFF
    default, batch mean) or ``none`` (per-example losses for DP-SGD).
    """
    from bfdl_tff.models.registry import uses_masks

    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {sorted(_REDUCTIONS)}, got {reduction!r}")
    red = _REDUCTIONS[reduction]
    if cfg.head == "softmax":  # multiclass task (issue 15.1): one class per image
        if class_weights is not None:
            raise ValueError("class_weights apply to sigmoid heads, not a softmax (multiclass) head")
        bce: tf.keras.losses.Loss = tf.keras.losses.CategoricalCrossentropy(name="findings_cce", reduction=red)
    elif class_weights is not None:
        w = np.asarray(class_weights, dtype=np.float32).reshape(-1)
        if w.shape != (cfg.num_findings,):
            raise ValueError(f"class_weights must have {cfg.num_findings} values, got shape {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError("class_weights must be finite and > 0")
        bce = WeightedBinaryCrossentropy(w.tolist(), name="findings_bce", reduction=red)
    else:
        bce = tf.keras.losses.BinaryCrossentropy(name="findings_bce", reduction=red)
    if not uses_masks(cfg):
        return bce, None
    return [bce, MaskedBinaryCrossentropy(reduction=red)], [1.0, float(cfg.seg_loss_weight)]


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def _first(t: Any) -> Any:
    """The findings part of a possibly structured ``(y, mask)`` / ``[findings, lesion]`` value."""
    return tf.nest.flatten(t)[0]


@tf.keras.utils.register_keras_serializable(package=_PKG)
class FindingsAUC(tf.keras.metrics.AUC):
    """ROC AUC over the findings output. ``multi_label=True``: mean of per-finding AUCs (macro).

    ``__init__`` lists exactly the keys of ``get_config()`` (no explicit ``thresholds``), which
    TFF requires to rebuild the metric in its finalizers.
    """

    def __init__(
        self,
        num_thresholds: int = 200,
        curve: str = "ROC",
        summation_method: str = "interpolation",
        name: str | None = None,
        dtype: Any = None,
        multi_label: bool = False,
        num_labels: int | None = None,
        label_weights: Any = None,
        from_logits: bool = False,
    ) -> None:
        super().__init__(
            num_thresholds=num_thresholds,
            curve=curve,
            summation_method=summation_method,
            name=name,
            dtype=dtype,
            multi_label=multi_label,
            num_labels=num_labels,
            label_weights=label_weights,
            from_logits=from_logits,
        )

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        super().update_state(_first(y_true), _first(y_pred), sample_weight)


@tf.keras.utils.register_keras_serializable(package=_PKG)
class FindingsBinaryAccuracy(tf.keras.metrics.BinaryAccuracy):
    """Per-label accuracy at threshold 0.5 over the findings output."""

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        super().update_state(_first(y_true), _first(y_pred), sample_weight)


def build_metrics(*, num_findings: int = 14) -> list[tf.keras.metrics.Metric]:
    """Fresh metric objects: macro AUC (``auc``), micro AUC (``micro_auc``), ``binary_accuracy``.

    Streaming AUCs use 200 thresholds (Keras' approximation); final reported AUCs should be
    computed exactly from predictions (scikit-learn) by the evaluation code.
    """
    return [
        FindingsAUC(name="auc", multi_label=True, num_labels=num_findings),
        FindingsAUC(name="micro_auc", multi_label=False),
        FindingsBinaryAccuracy(name="binary_accuracy"),
    ]


def compile_model(
    model: tf.keras.Model,
    cfg: "ModelConfig",
    *,
    optimizer: Any,
    class_weights: Sequence[float] | np.ndarray | None = None,
) -> tf.keras.Model:
    """Compile ``model`` for centralized training with the same loss/metrics as the federated arms."""
    from bfdl_tff.models.registry import uses_masks

    loss, loss_weights = build_loss(cfg, class_weights=class_weights)
    metrics: Any = build_metrics(num_findings=cfg.num_findings)
    if uses_masks(cfg):
        metrics = {"findings": metrics}
    model.compile(optimizer=optimizer, loss=loss, loss_weights=loss_weights, metrics=metrics)
    return model
