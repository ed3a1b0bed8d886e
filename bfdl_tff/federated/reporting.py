"""What a run reports: ``metrics.csv`` rows, ``summary.json`` and the privacy record of a round
(paper 3.2/3.3: AUC, accuracy, precision, recall, F1, communication; 3.5: epsilon).

``metrics.csv`` has one row per round, columns :data:`BASE_COLUMNS`, ``auc_<label>`` for each
label of the data's task (NIH: the 14 findings; a binary task: its one label), then :data:`EXTRA_COLUMNS`; empty cells for values that do not apply (e.g.
``epsilon`` without DP, test metrics in rounds without evaluation). :class:`MetricsLog` keeps the
rows, rewrites ``metrics.csv`` atomically after every round and mirrors the rows into TensorBoard
event files (:mod:`bfdl_tff.federated.tensorboard`).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bfdl_tff.config import ExperimentConfig
from bfdl_tff.federated.accounting import PrivacySchedule
from bfdl_tff.federated.inputs import FederationData
from bfdl_tff.federated.results import EvalResult, RoundResult
from bfdl_tff.hashing import weights_digest
from bfdl_tff.io_utils import atomic_write_text

BASE_COLUMNS = [
    "round",
    "wall_s",
    "train_loss",
    "test_loss",
    "test_macro_auc",
    "test_micro_auc",
    "epsilon",
    "bytes_broadcast",
    "bytes_uploaded",
    "cum_bytes",
]
#: Masked secure aggregation (issue 18): 1 if the round aborted (model unchanged), survivors,
#: dropped hospitals, coordinates clipped to the range, the largest bytes one hospital sent, the
#: slowest hospital's and the server's protocol time (ms).
SECAGG_COLUMNS = ["secagg_aborted", "secagg_survivors", "secagg_dropped", "secagg_clipped", "secagg_bytes_sent_max",
                  "secagg_client_ms_max", "secagg_server_ms"]
EXTRA_COLUMNS = [
    "train_s",
    "eval_s",
    "f1_macro",
    "f1_micro",
    "per_label_accuracy",
    "all_negative_accuracy",
    "participants",
    "rejected",
    "update_non_finite",
    "secure_sum_rel_error",
    "clipped_fraction",
    *SECAGG_COLUMNS,
]

def metrics_columns(findings: Sequence[str]) -> list[str]:
    return BASE_COLUMNS + [f"auc_{f}" for f in findings] + EXTRA_COLUMNS


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return repr(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    return str(v)


def write_metrics_csv(path: Path, rows: list[dict[str, Any]], findings: Sequence[str]) -> None:
    """Write ``rows`` as ``metrics.csv`` (atomic)."""
    cols = metrics_columns(findings)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: _fmt(r.get(c)) for c in cols})
    atomic_write_text(path, buf.getvalue())


def finite_or_none(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with non-finite floats replaced by ``None``."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def round_row(
    round_num: int,
    rr: RoundResult,
    ev: EvalResult | None,
    *,
    train_s: float,
    eval_s: float,
    epsilon: float,
    cum_bytes: int,
    findings: Sequence[str],
) -> dict[str, Any]:
    """The ``metrics.csv`` row of one round (``epsilon``: ``inf`` for arms without DP -> empty)."""
    row: dict[str, Any] = {
        "round": round_num,
        "wall_s": train_s + eval_s,
        "train_s": train_s,
        "eval_s": eval_s,
        "train_loss": rr.train_loss,
        "test_loss": ev.loss if ev else None,
        "test_macro_auc": ev.macro_auc if ev else None,
        "test_micro_auc": ev.micro_auc if ev else None,
        "epsilon": epsilon if math.isfinite(epsilon) else None,  # empty for arms without DP
        "bytes_broadcast": rr.bytes_broadcast,
        "bytes_uploaded": rr.bytes_uploaded,
        "cum_bytes": cum_bytes,
        "f1_macro": ev.f1_macro if ev else None,
        "f1_micro": ev.f1_micro if ev else None,
        "per_label_accuracy": ev.per_label_accuracy if ev else None,
        "all_negative_accuracy": ev.all_negative_accuracy if ev else None,
        "participants": ";".join(rr.participants),
        "rejected": ";".join(f"{n}: {why}" for n, why in rr.rejected.items()),
        "update_non_finite": int(rr.update_non_finite),
        "secure_sum_rel_error": rr.secure_sum_rel_error,
        "clipped_fraction": rr.clipped_fraction,
        **{c: rr.secagg.get(c) for c in SECAGG_COLUMNS},
    }
    if ev:
        for fnd in findings:
            row[f"auc_{fnd}"] = ev.per_finding_auc.get(fnd)
    return row


def privacy_record(cfg: ExperimentConfig, sched: PrivacySchedule) -> dict[str, Any]:
    """The privacy facts of the run handed to hooks (``epsilon`` is added per round)."""
    dp = sched.mode != "none"
    return {
        "mode": sched.mode,
        "delta": sched.delta if dp else None,
        "accountant": sched.accountant if dp else None,
        "noise_multiplier": sched.noise_multiplier if dp else 0.0,
        "l2_clip": cfg.privacy.l2_clip if dp else None,
    }


def build_summary(
    cfg: ExperimentConfig,
    *,
    rows: list[dict[str, Any]],
    evaluation: dict[str, Any],
    sched: PrivacySchedule,
    data: FederationData,
    final_weights: Sequence[np.ndarray],
    wall_s: float,
    num_params: int,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """``summary.json``: the final evaluation, privacy, communication and run facts."""
    ev, dp = evaluation, sched.mode != "none"
    last = rows[-1] if rows else {}
    out = {
        "arm": cfg.arm,
        "name": cfg.name,
        "seed": cfg.seed,
        "seeds": cfg.recorded_seeds(),  # dp_noise "system" in deployment mode (issue 16.5)
        "rounds": len(rows),
        "hospitals": list(data.names),
        "num_examples": {n: int(len(data.train[n])) for n in data.names},
        "num_test_examples": int(len(data.test)),
        "num_params": num_params,
        "model": cfg.model.config,
        "final_macro_auc": ev["macro_auc"],
        "final_micro_auc": ev["micro_auc"],
        "per_finding_auc": ev["per_finding_auc"],
        "skipped_findings": ev["skipped_findings"],
        "auc_note": "macro AUC = mean over findings with both classes in the test split; skipped_findings have no test positives/negatives",
        **{k: ev[k] for k in ("threshold_rule", "thresholds", "precision_macro", "recall_macro", "f1_macro",
                              "precision_micro", "recall_micro", "f1_micro", "per_label_accuracy",
                              "per_finding_accuracy", "all_negative_accuracy")},
        "test_loss": ev["loss"],
        # issue 15.1: the task, accuracy at 0.5 (MedMNIST's binary ACC), multiclass top-1
        "task": data.resolved_task().to_record(),
        "accuracy_at_0.5": ev.get("accuracy_at_half"),
        "top1_accuracy": ev.get("top1_accuracy"),
        "majority_class_accuracy": ev.get("majority_class_accuracy"),
        "num_positives_test": {lab: int(v) for lab, v in zip(data.resolved_task().labels, np.asarray(data.test.y).sum(axis=0))},
        "privacy_mode": sched.mode,
        "epsilon": sched.epsilon_after(len(rows)) if dp and rows else None,
        "delta": sched.delta if dp else None,
        "accountant": sched.accountant if dp else None,
        "noise_multiplier": sched.noise_multiplier if dp else 0.0,
        "l2_clip": cfg.privacy.l2_clip if dp else None,
        "secure_aggregation": cfg.privacy.aggregation if cfg.arm == "bfdl" else "none",
        "secure_sum": bool(cfg.arm == "bfdl" and cfg.privacy.aggregation != "none"),  # old key: any secure aggregation
        "privacy_note": sched.note(),
        "bytes_broadcast_total": int(sum(r.get("bytes_broadcast") or 0 for r in rows)),
        "bytes_uploaded_total": int(sum(r.get("bytes_uploaded") or 0 for r in rows)),
        "cum_bytes": int(last.get("cum_bytes") or 0),
        "wall_s": wall_s,
        "round_wall_s_mean": float(np.mean([r["wall_s"] for r in rows])) if rows else None,
        "synthetic": bool(data.synthetic),
        "final_model_digest": weights_digest(final_weights),
        **extra,
    }
    errs = [r.get("secure_sum_rel_error") for r in rows if r.get("secure_sum_rel_error") is not None]
    if errs:
        out["secure_sum_rel_error_max"] = float(max(errs))
    if any(r.get("secagg_aborted") is not None for r in rows):
        out["secagg_aborted_rounds"] = [int(r["round"]) for r in rows if r.get("secagg_aborted")]
        out["secagg_dropped_total"] = int(sum(r.get("secagg_dropped") or 0 for r in rows))
    return out


class MetricsLog:
    """The run's metrics rows: ``metrics.csv`` rewritten atomically after every round, and the
    same rows as TensorBoard scalars (one step per round) when ``tensorboard_dir`` is given."""

    def __init__(self, metrics_file: Path, findings: Sequence[str], *, tensorboard_dir: Path | None = None) -> None:
        self.metrics_file = metrics_file
        self.findings = list(findings)
        self.rows: list[dict[str, Any]] = []
        self._tb: Any = None
        if tensorboard_dir is not None:
            from bfdl_tff.federated.tensorboard import TensorBoardLog

            self._tb = TensorBoardLog(tensorboard_dir)

    def restore(self, rows: list[dict[str, Any]]) -> None:
        """Start from ``rows`` (a checkpoint's rows; empty for a fresh run) and write both logs."""
        self.rows = list(rows)
        write_metrics_csv(self.metrics_file, self.rows, self.findings)
        if self._tb is not None:
            self._tb.reset(self.rows)

    def append(self, row: dict[str, Any]) -> dict[str, Any]:
        """Add a round's row (non-finite values as ``None``); rewrite both logs; return the row."""
        clean = finite_or_none(row)
        self.rows.append(clean)
        write_metrics_csv(self.metrics_file, self.rows, self.findings)
        if self._tb is not None:
            self._tb.write(clean)
        return clean

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


__all__ = [
    "BASE_COLUMNS",
    "EXTRA_COLUMNS",
    "SECAGG_COLUMNS",
    "MetricsLog",
    "build_summary",
    "finite_or_none",
    "metrics_columns",
    "privacy_record",
    "round_row",
    "write_metrics_csv",
]
