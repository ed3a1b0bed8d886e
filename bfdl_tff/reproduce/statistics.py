"""The statistics stage (issue 14.4; the paper 3.3 reports single AUCs without intervals):
per arm, test macro AUC with a 95 % Student-t interval over seeds, a bootstrap interval over test
images per run (from ``predictions/test.npz``), the paired differences between arms over seeds
(centralized - federated, federated - B-FDL), and beside every macro AUC the number of test
images, the positives per finding (min / median) and the number of seeds. Written with
:mod:`bfdl_tff.stats` to ``<runs>/statistics/arms_ci.json``; ``paper_figures`` only reads it.

**One set of findings for every run.** A finding without test positives (or negatives) in a
run has no AUC (undefined, never 0.5). The macro AUC of every run of every arm is the mean over
the findings defined in *all* runs' test sets (``macro_labels``); the others are listed with
the runs that lack a class (``excluded_labels``). So seeds and arms always average the same
findings. A run without ``predictions/test.npz`` falls back to its ``summary.json`` macro AUC
(marked ``"source": "summary.json"``: its own finding set, no bootstrap interval).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bfdl_tff import stats
from bfdl_tff.config import ARMS
from bfdl_tff.errors import RunDirError
from bfdl_tff.runs import RunDir

STATS_FILE = "statistics/arms_ci.json"
PAIRS = (("centralized", "federated"), ("federated", "bfdl"))


def _arm_runs(runs_root: Path) -> list[RunDir]:
    d = runs_root / "arms"
    out = []
    for p in sorted(d.iterdir()) if d.is_dir() else []:
        if ".old-" not in p.name and (p / "config.yaml").is_file() and (p / "summary.json").is_file():
            out.append(RunDir.open(p))
    return out


def _common_labels(preds: dict[str, Any]) -> tuple[list[str], dict[str, list[str]]]:
    """Labels with both classes in every run's test set, and the excluded ones with their runs."""
    labels: list[str] = []
    excluded: dict[str, list[str]] = {}
    for name, p in preds.items():
        for j, lab in enumerate(p.labels):
            if lab not in labels:
                labels.append(lab)
            reason = stats.undefined_reason(p.y_true[:, j])
            if reason:
                excluded.setdefault(lab, []).append(f"{name}: {reason}")
        for lab in labels:
            if lab not in p.labels:
                excluded.setdefault(lab, []).append(f"{name}: not a label of this run")
    return [lab for lab in labels if lab not in excluded], excluded


def _run_record(run: RunDir, pred: Any, common: list[str], *, n_boot: int, seed: int) -> dict[str, Any]:
    summary = run.summary()
    rec: dict[str, Any] = {"run": f"arms/{run.path.name}", "arm": summary.get("arm") or run.config.arm,
                           "seed": int(summary.get("seed", run.config.seed))}
    if pred is None:
        auc = summary.get("macro_auc", summary.get("final_macro_auc"))
        return {**rec, "source": "summary.json", "macro_auc": None if auc is None else float(auc),
                "bootstrap": None, "n_test_images": None, "positives": None}
    idx = [pred.labels.index(lab) for lab in common]
    y, s = pred.y_true[:, idx], pred.scores[:, idx]
    boot = stats.bootstrap_auc(y, s, labels=common, n_boot=n_boot, seed=seed)
    pos = y.sum(axis=0)
    return {**rec, "source": "predictions/test.npz", "macro_auc": boot.macro.estimate,
            "bootstrap": {"low": boot.macro.low, "high": boot.macro.high, "n_boot": n_boot, "level": boot.macro.level,
                          "resamples_with_dropped_labels": boot.resamples_with_dropped_labels},
            "n_test_images": int(len(y)),
            "positives": {"min": int(pos.min()), "median": float(np.median(pos)),
                          "per_label": {lab: int(v) for lab, v in zip(common, pos)}}}


def arms_statistics(runs_root: Path, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """The content of ``arms_ci.json`` for the finished runs under ``runs_root/arms``."""
    runs = _arm_runs(Path(runs_root))
    if not runs:
        raise RunDirError(f"{Path(runs_root) / 'arms'}: no finished arm runs; run the arms stage first")
    preds = {}
    for run in runs:
        if run.predictions_file("test").is_file():
            preds[run.path.name] = run.load_predictions("test")
    common, excluded = _common_labels(preds)
    records = [_run_record(r, preds.get(r.path.name), common, n_boot=n_boot, seed=seed) for r in runs]
    per_arm: dict[str, Any] = {}
    for arm in [a for a in ARMS if any(r["arm"] == a for r in records)]:
        mine = sorted((r for r in records if r["arm"] == arm and r["macro_auc"] is not None), key=lambda r: r["seed"])
        s = stats.mean_ci([r["macro_auc"] for r in mine], level=level)
        per_arm[arm] = {"seeds": [r["seed"] for r in mine], "over_seeds": s.to_record(), "runs": mine}
    paired = {}
    for a, b in PAIRS:
        if a in per_arm and b in per_arm:
            va = {r["seed"]: r["macro_auc"] for r in per_arm[a]["runs"]}
            vb = {r["seed"]: r["macro_auc"] for r in per_arm[b]["runs"]}
            paired[f"{a} - {b}"] = stats.paired_difference(va, vb, level=level).to_record()
    return {"level": level, "metric": "test macro AUC", "macro_labels": common,
            "excluded_labels": excluded, "n_boot": n_boot, "bootstrap_seed": seed,
            "method": {"over_seeds": "Student-t interval of the per-seed macro AUCs (bfdl_tff.stats.mean_ci)",
                       "over_images": "percentile bootstrap over test images (bfdl_tff.stats.bootstrap_auc)",
                       "paired": "per-seed differences a - b, mean and t interval (bfdl_tff.stats.paired_difference)"},
            "arms": per_arm, "paired": paired}


__all__ = ["PAIRS", "STATS_FILE", "arms_statistics"]
