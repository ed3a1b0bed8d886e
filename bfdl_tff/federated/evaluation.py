"""Diagnostic evaluation of the global model (paper 3.2/3.3: AUC, accuracy, precision, recall, F1
on NIH ChestX-ray14's 14 findings).

The paper reports a single "AUC = 0.948" and accuracy/precision/recall/F1 without saying how they
are averaged over 14 findings or which threshold turns probabilities into decisions. Here:

* **macro AUC**: the mean of the per-finding ROC AUCs over the findings present in the
  (patient-disjoint) test split with both classes; findings without a positive (or without a
  negative) test example have no AUC, are skipped and listed in ``skipped_findings``;
* **micro AUC**: one ROC AUC over all (image, finding) pairs;
* **thresholds** per finding chosen on *validation* data (never on test): ``youden_val``
  (maximises TPR - FPR), ``f1_val`` (maximises F1) or ``fixed`` (``eval.fixed_threshold``);
  a finding without both classes in validation falls back to the fixed threshold;
* precision / recall / F1, macro (mean over evaluable findings) and micro (pooled counts);
* task (issue 15.1): a binary task is one label (AUC, accuracy at the validation-chosen threshold
  and at 0.5, as MedMNIST reports); a multiclass task (softmax scores) is scored one-vs-rest per
  class (macro AUC over classes), with top-1 accuracy beside the majority-class baseline and
  categorical cross-entropy as test loss;
* per-label accuracy and, beside it, the accuracy of the **all-negative baseline** (predict no
  finding at all), which is already about 0.95 on ChestX-ray14 because findings are rare: per-label
  accuracy alone says little.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
from sklearn import metrics as skm

from bfdl_tff.federated.results import EvalResult


def _has_both(y: np.ndarray) -> bool:
    return bool(y.min() < 0.5 < y.max()) if len(y) else False


def choose_thresholds(
    y_val: np.ndarray, p_val: np.ndarray, *, rule: str, findings: Sequence[str], fixed: float = 0.5
) -> dict[str, float]:
    """Per-finding decision thresholds from validation predictions (see module doc)."""
    out: dict[str, float] = {}
    for j, f in enumerate(findings):
        y, p = y_val[:, j], p_val[:, j]
        if rule == "fixed" or not _has_both(y):
            out[f] = float(fixed)
            continue
        if rule == "youden_val":
            fpr, tpr, thr = skm.roc_curve(y, p)
            k = int(np.argmax(tpr - fpr))
            t = float(thr[k])
            out[f] = float(min(t, 1.0)) if np.isfinite(t) else float(fixed)
        elif rule == "f1_val":
            prec, rec, thr = skm.precision_recall_curve(y, p)
            f1 = 2 * prec[:-1] * rec[:-1] / np.maximum(prec[:-1] + rec[:-1], 1e-12)
            out[f] = float(thr[int(np.argmax(f1))]) if len(thr) else float(fixed)
        else:
            raise ValueError(f"unknown threshold rule {rule!r}")
    return out


def binary_cross_entropy(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def categorical_cross_entropy(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p.astype(np.float64), 1e-7, 1.0)
    return float(-np.mean(np.sum(y * np.log(p), axis=1)))


def _task_accuracy(y: np.ndarray, p: np.ndarray, kind: str) -> dict[str, Any]:
    """Accuracy at 0.5 per label (mean) and, for a multiclass task, top-1 and majority-class."""
    out: dict[str, Any] = {"task_kind": kind, "accuracy_at_half": float(((p >= 0.5) == (y > 0.5)).mean()) if len(y) else None}
    if kind == "multiclass" and len(y):
        out["top1_accuracy"] = float((p.argmax(axis=1) == y.argmax(axis=1)).mean())
        out["majority_class_accuracy"] = float(y.sum(axis=0).max() / len(y))
    return out


def evaluate_predictions(
    y_test: np.ndarray,
    p_test: np.ndarray,
    *,
    findings: Sequence[str],
    thresholds: dict[str, float],
    threshold_rule: str,
    kind: str = "multilabel",
) -> EvalResult:
    """All metrics of one evaluation from test labels and predicted probabilities."""
    y_test = np.asarray(y_test, dtype=np.float32)
    p_test = np.asarray(p_test, dtype=np.float64)
    if y_test.shape != p_test.shape:
        raise ValueError(f"labels {y_test.shape} and predictions {p_test.shape} differ")
    if not np.all(np.isfinite(p_test)):
        raise ValueError("non-finite predictions: the model has NaN/Inf weights or outputs")
    per_auc: dict[str, float | None] = {}
    skipped: list[str] = []
    for j, f in enumerate(findings):
        if _has_both(y_test[:, j]):
            per_auc[f] = float(skm.roc_auc_score(y_test[:, j], p_test[:, j]))
        else:
            per_auc[f] = None
            skipped.append(f)
    aucs = [a for a in per_auc.values() if a is not None]
    macro = float(np.mean(aucs)) if aucs else float("nan")
    micro = float(skm.roc_auc_score(y_test.ravel(), p_test.ravel())) if _has_both(y_test.ravel()) else float("nan")

    thr = np.array([thresholds[f] for f in findings])
    pred = (p_test >= thr[None, :]).astype(np.float32)
    tp = (pred * y_test).sum(0)
    fp = (pred * (1 - y_test)).sum(0)
    fn = ((1 - pred) * y_test).sum(0)
    evaluable = np.array([f not in skipped for f in findings])
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        rec = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(prec + rec > 0, 2 * prec * rec / (prec + rec), 0.0)
    ev = evaluable if evaluable.any() else np.ones_like(evaluable)
    TP, FP, FN = tp.sum(), fp.sum(), fn.sum()
    p_micro = float(TP / (TP + FP)) if TP + FP > 0 else 0.0
    r_micro = float(TP / (TP + FN)) if TP + FN > 0 else 0.0
    f_micro = float(2 * p_micro * r_micro / (p_micro + r_micro)) if p_micro + r_micro > 0 else 0.0
    acc_per = (pred == y_test).mean(0)
    return EvalResult(
        macro_auc=macro,
        micro_auc=micro,
        per_finding_auc=per_auc,
        skipped_findings=skipped,
        loss=categorical_cross_entropy(y_test, p_test) if kind == "multiclass" else binary_cross_entropy(y_test, p_test),
        thresholds={f: float(t) for f, t in zip(findings, thr)},
        threshold_rule=threshold_rule,
        precision_macro=float(prec[ev].mean()),
        recall_macro=float(rec[ev].mean()),
        f1_macro=float(f1[ev].mean()),
        precision_micro=p_micro,
        recall_micro=r_micro,
        f1_micro=f_micro,
        per_label_accuracy=float((pred == y_test).mean()),
        per_finding_accuracy={f: float(a) for f, a in zip(findings, acc_per)},
        all_negative_accuracy=float((y_test == 0).mean()),
        num_examples=int(len(y_test)),
        **_task_accuracy(y_test, p_test, kind),
    )


def predict_findings(keras_model, x: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    """Findings probabilities ``[N, 14]`` (the first output of a two-output hybrid)."""
    out = keras_model.predict(x, batch_size=batch_size, verbose=0)
    if isinstance(out, (list, tuple)):
        out = out[0]
    return np.asarray(out)


@runtime_checkable
class Evaluator(Protocol):
    """Scores a global model (Keras ``get_weights()`` order) after a round; the runner calls it
    every ``eval.every`` rounds and after the last one."""

    def evaluate(self, weights: Sequence[np.ndarray]) -> EvalResult: ...


__all__ = ["EvalResult", "Evaluator", "binary_cross_entropy", "categorical_cross_entropy", "choose_thresholds", "evaluate_predictions", "predict_findings"]
