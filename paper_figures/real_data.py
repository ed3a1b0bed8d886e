"""The "Real data" section (issue 15): the three arms on real chest X-rays, from result files only.

    python -m paper_figures real-data --set "LABEL=RUNS_DIR" [--set ...] [--published FILE] --out DIR

Each ``--set`` names one real-data experiment (e.g. ``"real NIH images, 621-image sample=runs/
nih_sample"``); every ``summary.json`` under ``RUNS_DIR/arms/`` (the reproduction's layout; else
anywhere under ``RUNS_DIR``) is one run. Per arm: the seeds, the test macro AUC (and, for a binary
task, the accuracy at 0.5 as MedMNIST reports it and the accuracy at the validation-chosen
threshold) as mean and 95 % confidence interval over seeds (Student t, n - 1 degrees of freedom),
the test images and positives, and the mean wall time per run. For a PneumoniaMNIST set the
published MedMNIST v2 rows (``data/medmnist_published.json``, Yang et al., Sci Data 2023, Table 3)
are printed beside ours. Writes ``real_data.md`` and ``real_data.json`` (atomically).

Paper context: the B-FDL paper (3.1) evaluates on NIH ChestX-ray14; everything else in this
repository is measured on synthetic stand-ins, so these are the project's only real-image numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bfdl_tff.errors import RunDirError
from bfdl_tff.io_utils import atomic_write_json, atomic_write_text

PUBLISHED_FILE = Path(__file__).with_name("data") / "medmnist_published.json"
ARM_ORDER = ("centralized", "federated", "bfdl")


def mean_ci(values: Sequence[float]) -> dict[str, Any]:
    """Mean and two-sided 95 % Student-t interval over seeds (``None`` bounds for one value)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return {"n": 0, "mean": None, "lo": None, "hi": None}
    if len(v) == 1:
        return {"n": 1, "mean": float(v[0]), "lo": None, "hi": None}
    from scipy import stats as sst

    half = float(sst.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return {"n": int(len(v)), "mean": float(v.mean()), "lo": float(v.mean() - half), "hi": float(v.mean() + half)}


def find_summaries(runs_dir: Path) -> list[dict[str, Any]]:
    """Every run summary under ``runs_dir/arms`` (else under ``runs_dir``), with its path."""
    base = runs_dir / "arms" if (runs_dir / "arms").is_dir() else runs_dir
    out = []
    for p in sorted(base.rglob("summary.json")):
        try:
            s = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise RunDirError(f"{p}: unreadable run summary ({e})") from None
        if not isinstance(s, dict) or "arm" not in s or "final_macro_auc" not in s:
            raise RunDirError(f"{p}: not a run summary (no arm / final_macro_auc)")
        out.append({**s, "_path": str(p)})
    if not out:
        raise RunDirError(f"{runs_dir}: no run summaries (summary.json) found; train the profile first")
    return out


def arm_rows(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per arm: seeds, AUC / accuracy mean and CI, data counts, runtimes."""
    rows = []
    for arm in [a for a in ARM_ORDER if any(s["arm"] == a for s in summaries)]:
        runs = sorted((s for s in summaries if s["arm"] == arm), key=lambda s: s.get("seed", 0))
        first = runs[0]
        rows.append({
            "arm": arm, "seeds": [r.get("seed") for r in runs],
            "test_macro_auc": mean_ci([r.get("final_macro_auc") for r in runs]),
            "accuracy_at_0.5": mean_ci([r.get("accuracy_at_0.5") for r in runs]),
            "accuracy_at_val_threshold": mean_ci([r.get("per_label_accuracy") for r in runs]),
            "all_negative_accuracy": first.get("all_negative_accuracy"),
            "epsilon": first.get("epsilon"),
            "task": first.get("task"),
            "n_test": first.get("num_test_examples"),
            "test_positives": first.get("num_positives_test"),
            "n_train": int(sum((first.get("num_examples") or {}).values())),
            "wall_s_mean": float(np.mean([r.get("wall_s") or 0.0 for r in runs])),
            "runs": [r["_path"] for r in runs],
        })
    return rows


def _ci(d: dict[str, Any]) -> str:
    if d["mean"] is None:
        return "-"
    if d["lo"] is None:
        return f"{d['mean']:.3f} (1 seed)"
    return f"{d['mean']:.3f} [{d['lo']:.3f}, {d['hi']:.3f}]"


def _num(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "-"


def _positives(p: dict[str, int] | None) -> str:
    if not p:
        return "-"
    if len(p) == 1:
        return str(next(iter(p.values())))
    return ", ".join(f"{k} {v}" for k, v in p.items())


def set_markdown(label: str, rows: list[dict[str, Any]], published: dict[str, Any] | None) -> list[str]:
    """The markdown of one real-data set (ours, then the published rows if given)."""
    r0 = rows[0]
    binary = (r0.get("task") or {}).get("kind") == "binary"
    lines = [f"### {label}", "",
             f"Test split: {r0['n_test']} images; positives: {_positives(r0['test_positives'])}; "
             f"training images (all hospitals): {r0['n_train']}. Mean and 95 % CI over seeds (Student t).", ""]
    head = "| arm | seeds | test macro AUC | "
    head += "ACC at 0.5 | ACC at val threshold | " if binary else "per-label ACC at val threshold | all-negative ACC | "
    lines += [head + "epsilon | wall s / run |", "|" + "---|" * (head.count("|") + 1)]
    for r in rows:
        accs = (f"{_ci(r['accuracy_at_0.5'])} | {_ci(r['accuracy_at_val_threshold'])} | " if binary
                else f"{_ci(r['accuracy_at_val_threshold'])} | {_num(r.get('all_negative_accuracy'))} | ")
        eps = f"{r['epsilon']:.2f}" if isinstance(r.get("epsilon"), (int, float)) else "-"
        lines.append(f"| {r['arm']} | {','.join(str(s) for s in r['seeds'])} | {_ci(r['test_macro_auc'])} | "
                     f"{accs}{eps} | {r['wall_s_mean']:.1f} |")
    if published:
        lines += ["", f"Published (MedMNIST v2, same {published['dataset']} test split; {published['citation']}):", "",
                  "| method | image size | AUC | ACC |", "|---|---|---|---|"]
        lines += [f"| {p['method']} | {p['image_size']} | {p['auc']:.3f} | {p['acc']:.3f} |" for p in published["rows"]]
        lines += ["", f"Note: {published['metric_notes']}"]
    return lines + [""]


def load_published(path: Path = PUBLISHED_FILE) -> dict[str, Any]:
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RunDirError(f"{path}: unreadable published table ({e})") from None
    if not isinstance(d, dict) or not isinstance(d.get("rows"), list) or "citation" not in d:
        raise RunDirError(f"{path}: a published table needs 'citation' and 'rows'")
    return d


def build_real_data(sets: Sequence[tuple[str, Path]], out: Path, *, published: Path = PUBLISHED_FILE) -> Path:
    """Write ``out/real_data.md`` and ``out/real_data.json`` for ``sets`` (label, runs dir)."""
    pub = load_published(published)
    record: dict[str, Any] = {"sets": [], "published": pub}
    lines = ["## Real data", "",
             "Measured on real chest X-rays (not synthetic stand-ins); every number is read from the runs' "
             "summary.json files.", ""]
    for label, runs_dir in sets:
        rows = arm_rows(find_summaries(Path(runs_dir)))
        is_pm = any("pneumonia" in ((r.get("task") or {}).get("labels") or []) and (r.get("task") or {}).get("kind") == "binary"
                    for r in rows)
        lines += set_markdown(label, rows, pub if is_pm else None)
        record["sets"].append({"label": label, "runs_dir": str(runs_dir), "arms": rows})
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "real_data.json", record)
    path = out / "real_data.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def parse_set(spec: str) -> tuple[str, Path]:
    """``"LABEL=DIR"`` -> (label, dir)."""
    label, sep, d = spec.rpartition("=")
    if not sep or not label.strip() or not d.strip():
        raise RunDirError(f"--set {spec!r}: expected LABEL=RUNS_DIR")
    if not Path(d).is_dir():
        raise RunDirError(f"--set {spec!r}: {d} is not a directory")
    return label.strip(), Path(d)


__all__ = ["arm_rows", "build_real_data", "find_summaries", "load_published", "mean_ci", "parse_set", "set_markdown"]
