"""Label recovery from an observed update: iDLG (Zhao, Mopuri & Bilen 2020) for sigmoid outputs.

iDLG is for softmax outputs. The findings head here is 14 independent sigmoids with binary
cross-entropy averaged over findings and batch: ``dL/db_j = sum_i (sigmoid(z_ij) - y_ij) / (14 B)``.
For one image the sign of the bias gradient gives every label exactly (negative iff ``y_j = 1``;
the FedAvg update ``w_after - w_before = -lr * g`` flips the sign). For ``n`` images the bias
update gives only the *count* of positives per finding,
``sum_i y_ij = sum_i sigmoid(z_ij) + 14 B * du_j / lr``, with ``sum_i sigmoid(z_ij)`` estimated
from the model's mean prediction on auxiliary images (:func:`recover_label_counts`); it does not
say which image carries which label. The label-recovery rate is therefore "all 14 per-finding
counts exact" per attacked update (for one image: the full label vector).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def output_bias_index(model: Any, num_labels: int = 14) -> int:
    """Index in ``model.trainable_variables`` of the findings layer's bias.

    The layer named ``findings`` if present, otherwise the last trainable vector of length
    ``num_labels``."""
    tv = model.trainable_variables
    try:
        layer = model.get_layer("findings")
        if getattr(layer, "bias", None) is not None:
            for i, v in enumerate(tv):
                if v is layer.bias:
                    return i
    except ValueError:
        pass
    for i in range(len(tv) - 1, -1, -1):
        if tv[i].shape.rank == 1 and int(tv[i].shape[0]) == num_labels:
            return i
    raise ValueError("the model has no findings-layer bias; label recovery needs one")


def recover_labels_single(update: Sequence[np.ndarray], bias_index: int) -> np.ndarray:
    """Labels of a one-image update from the sign of the findings-bias update (exact, see top)."""
    return (np.asarray(update[bias_index]) > 0).astype(np.float32)


def recover_label_counts(
    update: Sequence[np.ndarray],
    bias_index: int,
    *,
    n_images: int,
    batch_size: int,
    client_lr: float,
    mean_prediction: np.ndarray,
) -> np.ndarray:
    """Positive count per finding among ``n_images`` from the bias update (see module docstring).

    ``mean_prediction`` is the model's mean sigmoid output on auxiliary images (the attacker's
    estimate of ``sigmoid(z_ij)``)."""
    du = np.asarray(update[bias_index], np.float64)
    k = mean_prediction.shape[-1]
    counts = n_images * np.asarray(mean_prediction, np.float64) + k * batch_size * du / client_lr
    return np.clip(np.rint(counts), 0, n_images).astype(np.int64)


__all__ = ["output_bias_index", "recover_label_counts", "recover_labels_single"]
