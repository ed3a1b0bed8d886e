"""The result types of one training round and of one evaluation (paper 3.1-3.3).

An engine (:mod:`bfdl_tff.federated.engine`) returns a :class:`RoundResult` per round; an
evaluator (:mod:`bfdl_tff.federated.evaluation`) returns an :class:`EvalResult`. The runner
turns both into a ``metrics.csv`` row (:mod:`bfdl_tff.federated.reporting`). Plain data, no
TensorFlow: anything may import this module.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class RoundResult:
    """What one round of training produced (before evaluation)."""

    participants: list[str]  # hospitals that trained this round (``["central"]`` for centralized)
    commitments: dict[str, str]  # hospital -> hex SHA-256 of its own model update (hooks.py)
    train_loss: float  # example-weighted mean training loss of the accepted updates (NaN if none)
    bytes_broadcast: int  # server -> hospitals this round (communication.py)
    bytes_uploaded: int  # hospitals -> server this round (centralized: the images, round 1)
    rejected: dict[str, str] = field(default_factory=dict)  # hospital -> why its update was dropped
    update_non_finite: bool = False  # TFF's finalizer rejected the aggregate; model unchanged
    secure_sum_rel_error: float | None = None  # effect of 32-bit secure-sum quantisation
    clipped_fraction: float | None = None  # DP-SGD: mean fraction of clipped per-example gradients
    # Masked secure aggregation (issue 18): the round's protocol transcript (for the ledger), the
    # abort reason (the global model is then unchanged) and the protocol's measurements.
    secagg_transcript: dict[str, Any] | None = None
    secagg_aborted: str | None = None
    secagg: dict[str, float] = field(default_factory=dict)


@dataclass
class EvalResult:
    """Diagnostic metrics of the global model on the test split (paper 3.2/3.3; evaluation.py)."""

    macro_auc: float
    micro_auc: float
    per_finding_auc: dict[str, float | None]
    skipped_findings: list[str]
    loss: float
    thresholds: dict[str, float]
    threshold_rule: str
    precision_macro: float
    recall_macro: float
    f1_macro: float
    precision_micro: float
    recall_micro: float
    f1_micro: float
    per_label_accuracy: float
    per_finding_accuracy: dict[str, float]
    all_negative_accuracy: float
    num_examples: int
    # issue 15.1: the task's kind; per-label accuracy at the fixed threshold 0.5 (what MedMNIST
    # reports for binary tasks); multiclass: top-1 accuracy (argmax) and the majority-class baseline.
    task_kind: str = "multilabel"
    accuracy_at_half: float | None = None
    top1_accuracy: float | None = None
    majority_class_accuracy: float | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class RoundRecord:
    """One finished round as the runner records it (checkpoint, metrics row, hooks)."""

    round_num: int  # 1-based
    result: RoundResult
    global_weights: list[np.ndarray]  # after the round, Keras get_weights() order
    evaluation: EvalResult | None  # None in rounds without evaluation (eval.every)
    train_s: float
    eval_s: float
    epsilon: float | None  # privacy spent after this round; None without DP
    row: dict[str, Any]  # the metrics.csv row (non-finite values as None)

    @property
    def seconds(self) -> float:
        return self.train_s + self.eval_s


__all__ = ["EvalResult", "RoundRecord", "RoundResult"]
