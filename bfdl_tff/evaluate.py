"""External validation of a released model: ``bfdl evaluate RUN_DIR --data-root DIR`` (issue 15.4).

What a hospital does before trusting a model trained elsewhere. Paper 3.3 evaluates the global
model on a held-out split of the federation's own data; this evaluates the released model
(``final_model.npz``) on *another* dataset in the NIH layout (or the task layout): every image
under the root that has metadata, or the rows of one manifest file
(:func:`bfdl_tff.data.external.load_external`), decoded at the model's input size (any bit depth /
gray / RGB / RGBA).

The result (one JSON file, written atomically, nothing on error):

- the run's identity: config name, arm, seed, model config, digest of the released weights
  (``bfdl_tff.hashing.weights_digest``, compared with ``summary.json``'s ``final_model_digest``)
  and the file's SHA-256; the task the model was trained on (``RunDir.task()``);
- the data: root, metadata, manifest, task, images, patients, positives per label;
- per-label AUC with bootstrap intervals, macro AUC over the labels with both classes, micro AUC
  (:func:`bfdl_tff.stats.bootstrap_auc`). A label without positives or without negatives has
  **no** AUC (``null`` with the reason), never 0.5, and is not in the macro mean;
- per-label accuracy at the run's decision thresholds (``summary.json``'s ``thresholds``, chosen on
  the run's validation data; else 0.5 — the file says which), the accuracy at 0.5 (what MedMNIST
  reports for binary tasks), and the all-negative baseline beside them (findings are rare: always
  predicting "absent" is already accurate).

Refused in one line (exit 2, nothing written): a run directory without ``config.yaml`` or without a
released model, weights that do not fit the run's model, a dataset whose task differs from the
run's (e.g. a 14-finding model on a binary dataset), image files not in the metadata, an
unreadable image, an output path that is a directory or cannot be written, or that lies in the run
directory outside ``evaluations/`` (the run's own files are never overwritten).
"""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bfdl_tff import stats
from bfdl_tff.errors import BfdlError, RunDirError
from bfdl_tff.hashing import file_digest, weights_digest
from bfdl_tff.io_utils import atomic_write_json
from bfdl_tff.runs import RunDir

FIXED_THRESHOLD = 0.5


class EvaluateError(BfdlError):
    """``bfdl evaluate`` cannot run with these arguments (names the file and the problem)."""


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------


def default_out(run: RunDir, data_root: Path, manifest: Path | None) -> Path:
    """``RUN_DIR/evaluations/<data root name>[-<manifest stem>].json``."""
    name = Path(data_root).resolve().name + (f"-{Path(manifest).stem}" if manifest else "")
    return run.evaluation_file(name)


def check_out_path(out: Path) -> None:
    """Refuse an output path that is a directory or cannot be written, before any work is done.

    Probes the nearest existing directory with a temporary file (removed at once): permission
    bits alone do not tell (root, read-only mounts)."""
    out = Path(out)
    if out.is_dir():
        raise EvaluateError(f"{out}: is a directory; --out takes a file name (e.g. {out / 'evaluation.json'})")
    anc = out.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise EvaluateError(f"{out}: cannot write here: {anc} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".bfdl-evaluate-probe.", dir=anc)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise EvaluateError(f"{out}: cannot write: creating a file in {anc} failed ({e.strerror or e})") from None


def _refuse_run_files(run: RunDir, out: Path) -> None:
    """Inside the run directory only ``evaluations/`` may be written (never the run's own files)."""
    o, rp, ev = out.resolve(), run.path.resolve(), run.evaluations_dir.resolve()
    if (o == rp or rp in o.parents) and ev not in o.parents:
        raise EvaluateError(f"{out}: inside the run directory only {run.evaluations_dir}/ may be written "
                            "(the run's own files are never overwritten)")


# --------------------------------------------------------------------------------------------
# The run's model, task and thresholds
# --------------------------------------------------------------------------------------------


def run_model_config(run: RunDir, num_outputs: int, kind: str = "multilabel") -> Any:
    """The run's model config (registry name + overrides from ``config.yaml``) with its head
    derived from the run's task as the runner derived it (``registry.for_task``: one output per
    label, softmax for a multiclass task), unless the overrides fixed it."""
    from bfdl_tff.errors import ConfigError
    from bfdl_tff.models import registry

    overrides = dict(run.config.model.overrides)
    mcfg = registry.load_model_config(run.config.model.config, **overrides)
    try:
        return registry.for_task(mcfg, kind=kind, num_outputs=num_outputs, fixed=overrides, source=str(run.config_file))
    except ConfigError as e:
        raise RunDirError(str(e)) from None


def load_released_model(run: RunDir, mcfg: Any, weights: list[np.ndarray]) -> Any:
    """The run's Keras model with the released weights (a clear error if they do not fit)."""
    from bfdl_tff.models import registry

    model = registry.build_model(mcfg)
    want = model.get_weights()
    if len(weights) != len(want):
        raise RunDirError(f"{run.final_model_file}: {len(weights)} arrays, but the run's model "
                          f"({mcfg.name}, {mcfg.num_findings} outputs) has {len(want)} weights")
    bad = [i for i, (a, b) in enumerate(zip(weights, want)) if a.shape != b.shape]
    if bad:
        i = bad[0]
        raise RunDirError(f"{run.final_model_file}: array {i} has shape {weights[i].shape}, the run's model "
                          f"({mcfg.name}, {mcfg.num_findings} outputs) expects {want[i].shape}")
    model.set_weights(weights)
    return model


def run_thresholds(run: RunDir, labels: tuple[str, ...]) -> tuple[dict[str, float], str]:
    """Decision thresholds per label and where they came from (``summary.json`` or fixed 0.5)."""
    if not run.summary_file.is_file():
        return {lab: FIXED_THRESHOLD for lab in labels}, f"fixed {FIXED_THRESHOLD} (no summary.json in the run)"
    thr = run.summary().get("thresholds")
    missing = [lab for lab in labels if not isinstance(thr, dict) or not isinstance(thr.get(lab), (int, float))]
    if missing:
        why = "has no thresholds" if not isinstance(thr, dict) else f"has no threshold for {', '.join(missing[:3])}"
        return {lab: FIXED_THRESHOLD for lab in labels}, f"fixed {FIXED_THRESHOLD} (summary.json {why})"
    rule = run.summary().get("threshold_rule") or "rule not recorded"
    return {lab: float(thr[lab]) for lab in labels}, f"summary.json ({rule}, chosen on the run's validation data)"


def run_identity(run: RunDir, weights: list[np.ndarray], mcfg: Any) -> dict[str, Any]:
    """Which model was evaluated: config name, arm, seed, model, digests of the released weights."""
    digest = weights_digest(weights)
    summary = run.summary() if run.summary_file.is_file() else {}
    recorded = summary.get("final_model_digest")
    return {
        "run_dir": str(run.path.resolve()), "name": run.config.name, "arm": run.config.arm, "seed": run.config.seed,
        "model": run.config.model.config, "model_overrides": dict(run.config.model.overrides),
        "input_size": mcfg.input_size, "channels": mcfg.channels, "outputs": mcfg.num_findings,
        "final_model_digest": digest, "final_model_sha256": file_digest(str(run.final_model_file)),
        "summary_final_model_digest": recorded,
        "digest_matches_summary": None if recorded is None else recorded == digest,
        "synthetic_training_data": summary.get("synthetic"),
        "own_test_macro_auc": summary.get("final_macro_auc"),
    }


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def accuracy_record(y: np.ndarray, scores: np.ndarray, labels: tuple[str, ...], thresholds: dict[str, float],
                    source: str, kind: str) -> dict[str, Any]:
    """Per-label accuracy at the thresholds and at 0.5 beside the all-negative baseline."""
    thr = np.array([thresholds[lab] for lab in labels])
    at_thr = ((scores >= thr[None, :]) == (y > 0.5)).mean(axis=0)
    at_half = ((scores >= FIXED_THRESHOLD) == (y > 0.5)).mean(axis=0)
    all_neg = (y < 0.5).mean(axis=0)
    per = {lab: {"threshold": float(thr[j]), "accuracy": float(at_thr[j]), "accuracy_at_0.5": float(at_half[j]),
                 "all_negative_accuracy": float(all_neg[j])} for j, lab in enumerate(labels)}
    out: dict[str, Any] = {"thresholds_source": source, "per_label": per,
                           "mean_accuracy": float(at_thr.mean()), "mean_accuracy_at_0.5": float(at_half.mean()),
                           "mean_all_negative_accuracy": float(all_neg.mean())}
    if kind == "multiclass":
        counts = y.sum(axis=0)
        out["top1_accuracy"] = float((scores.argmax(axis=1) == y.argmax(axis=1)).mean())
        out["majority_class_accuracy"] = float(counts.max() / max(1, len(y)))
    return out


def predict(model: Any, x: np.ndarray, *, channels: int, batch_size: int) -> np.ndarray:
    """Scores ``[N, outputs]`` (the classification output of a two-output hybrid), float32."""
    from bfdl_tff.federated.evaluation import predict_findings

    if channels > 1 and x.shape[-1] == 1:
        x = np.repeat(x, channels, axis=-1)  # gray replicated into the model's channels
    return np.asarray(predict_findings(model, x, batch_size=batch_size), dtype=np.float32)


def evaluate_external(run_dir: str | Path, *, data_root: str | Path, manifest: str | Path | None = None,
                      out: str | Path | None = None, n_boot: int = 1000, seed: int = 0,
                      batch_size: int = 64) -> tuple[dict[str, Any], Path]:
    """Evaluate ``run_dir``'s released model on the dataset at ``data_root`` (module docstring);
    write the JSON result to ``out`` (default :func:`default_out`) and return ``(record, path)``."""
    from bfdl_tff.data.external import load_external
    from bfdl_tff.data.tasks import Task

    if n_boot < 1:
        raise EvaluateError(f"--bootstrap must be >= 1, got {n_boot}")
    if batch_size < 1:
        raise EvaluateError(f"--batch-size must be >= 1, got {batch_size}")
    run = RunDir.open(run_dir)
    out_path = Path(out) if out is not None else default_out(run, Path(data_root), Path(manifest) if manifest else None)
    check_out_path(out_path)
    _refuse_run_files(run, out_path)
    weights = run.load_model()
    task = Task.from_record(run.task(), source=f"{run.data_file}: task")
    mcfg = run_model_config(run, task.num_outputs, task.kind)
    ext = load_external(data_root, image_size=mcfg.input_size, manifest=manifest, task=task)
    model = load_released_model(run, mcfg, weights)
    scores = predict(model, ext.images.x, channels=mcfg.channels, batch_size=batch_size)
    y = ext.images.y.astype(np.float32)
    if scores.shape != y.shape:
        raise RunDirError(f"{run.final_model_file}: the model outputs {scores.shape[1:]} per image, "
                          f"the {task.describe()} task needs ({task.num_outputs},)")
    boot = stats.bootstrap_auc(y, scores, labels=task.labels, n_boot=n_boot, seed=seed)
    thresholds, source = run_thresholds(run, task.labels)
    record = {
        "kind": "bfdl-evaluate", "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run": run_identity(run, weights, mcfg), "task": task.to_record(), "task_description": task.describe(),
        "data": {**ext.record(), "root": str(Path(data_root).resolve()),
                 "manifest": str(Path(manifest).resolve()) if manifest else None, "image_size": mcfg.input_size},
        "n_images": len(y), "positives": ext.positives(),
        "negatives": {lab: int(len(y) - v) for lab, v in ext.positives().items()},
        "auc": boot.to_record(), "accuracy": accuracy_record(y, scores, task.labels, thresholds, source, task.kind),
        "note": "labels without positives or without negatives have no AUC (null, with the reason) and are "
                "not in the macro mean; they are never counted as 0.5",
    }
    try:
        atomic_write_json(out_path, record)
    except OSError as e:
        raise EvaluateError(f"{out_path}: cannot write ({e.strerror or e})") from None
    return record, out_path


def _fmt(v: float | None, nd: int = 3) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def format_table(record: dict[str, Any]) -> str:
    """A short plain-text table of the result (printed by ``bfdl evaluate``)."""
    run, data, auc, acc = record["run"], record["data"], record["auc"], record["accuracy"]
    lines = [f"run {run['name']} (arm {run['arm']}, seed {run['seed']}, model {run['model']}) "
             f"on {data['root']}{' manifest ' + data['manifest'] if data.get('manifest') else ''}",
             f"{record['n_images']} images, {data['patients']} patients, task {record['task_description']}, "
             f"{data['image_size']} px; bootstrap {auc['n_boot']} resamples (seed {auc['seed']})",
             f"{'label':<20} {'pos':>5} {'neg':>5} {'AUC':>6}  {'95% CI':<15} {'acc':>6} {'acc@0.5':>7} {'all-neg':>7}"]
    for lab, la in auc["per_label"].items():
        a = acc["per_label"][lab]
        ci = f"[{_fmt(la['low'], 2)}, {_fmt(la['high'], 2)}]" if la["auc"] is not None else f"({la['reason']})"
        lines.append(f"{lab[:20]:<20} {la['positives']:>5} {la['negatives']:>5} {_fmt(la['auc']):>6}  {ci:<15} "
                     f"{a['accuracy']:>6.3f} {a['accuracy_at_0.5']:>7.3f} {a['all_negative_accuracy']:>7.3f}")
    m, mi = auc["macro"], auc["micro"]
    dropped = f"; {m['resamples_with_dropped_labels']} resamples left a label out" if m["resamples_with_dropped_labels"] else ""
    lines.append(f"macro AUC over {m['n_labels']} label(s) with both classes: {_fmt(m['estimate'])} "
                 f"[{_fmt(m['low'])}, {_fmt(m['high'])}]{dropped}")
    lines.append(f"micro AUC: {_fmt(mi['estimate'])} [{_fmt(mi['low'])}, {_fmt(mi['high'])}]")
    if run.get("digest_matches_summary") is False:
        lines.append("WARNING: final_model.npz differs from the final_model_digest in the run's summary.json")
    if auc["undefined_labels"]:
        lines.append("no AUC (undefined): " + ", ".join(f"{k} ({v})" for k, v in auc["undefined_labels"].items()))
    lines.append(f"accuracy: mean {acc['mean_accuracy']:.3f} at thresholds from {acc['thresholds_source']}; "
                 f"all-negative baseline {acc['mean_all_negative_accuracy']:.3f}")
    if "top1_accuracy" in acc:
        lines.append(f"top-1 accuracy {acc['top1_accuracy']:.3f} (majority class {acc['majority_class_accuracy']:.3f})")
    return "\n".join(lines)


__all__ = ["EvaluateError", "accuracy_record", "check_out_path", "default_out", "evaluate_external", "format_table",
           "load_released_model", "run_identity", "run_model_config", "run_thresholds"]
