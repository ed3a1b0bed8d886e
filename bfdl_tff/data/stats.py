"""Statistics of a partition (paper 3.1: how non-IID the simulated hospitals are): per-manifest
counts, patients, positives and prevalence per label, acquisition view (AP fraction) and site,
and the measured non-IID-ness (Jensen-Shannon divergence of each hospital's label distribution
from the pooled one; coefficient of variation of hospital sizes).

Labels follow the partition's task (:mod:`bfdl_tff.data.tasks`): the label distribution is over
the task's labels plus "none" (rows without a positive: NIH's "No Finding", a binary task's
negatives).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from bfdl_tff.data.labels import FINDINGS, NO_FINDING
from bfdl_tff.data.manifest import TEST_NAME, display_name
from bfdl_tff.data.tasks import NIH_TASK, Task


def frame_task(df: pd.DataFrame, task: Task | None = None) -> Task:
    """``task``, else the frame's ``attrs['task']``, else the NIH task."""
    return task or df.attrs.get("task") or NIH_TASK


def label_distribution(df: pd.DataFrame, labels: Sequence[str] | None = None) -> np.ndarray:
    """Normalised counts over the labels + "none" (NIH: 14 findings + No Finding, length 15)."""
    labels = list(labels or frame_task(df).labels)
    y = df[labels].to_numpy()
    c = np.concatenate([y.sum(axis=0), [(y.sum(axis=1) == 0).sum()]]).astype(np.float64)
    return c / c.sum() if c.sum() > 0 else c


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (0 = identical, 1 = disjoint support)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / b[nz])))

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def non_iid_stats(parts: Mapping[str, pd.DataFrame], *, task: Task | None = None) -> dict[str, Any]:
    """Label skew (JSD of each hospital vs pooled hospitals) and quantity skew (CV of sizes)."""
    hosp = {n: df for n, df in parts.items() if n != TEST_NAME}
    labels = frame_task(next(iter(parts.values())), task).labels if parts else FINDINGS
    pooled = label_distribution(pd.concat(list(hosp.values())), labels) if hosp else np.zeros(len(labels) + 1)
    jsd = {n: jensen_shannon(label_distribution(df, labels), pooled) for n, df in hosp.items()}
    sizes = np.array([len(df) for df in hosp.values()], dtype=np.float64)
    return {
        "jsd": jsd,
        "mean_jsd": float(np.mean(list(jsd.values()))) if jsd else 0.0,
        "max_jsd": float(np.max(list(jsd.values()))) if jsd else 0.0,
        "size_cv": float(sizes.std() / sizes.mean()) if len(sizes) and sizes.mean() > 0 else 0.0,
    }


def _manifest_row(df: pd.DataFrame, labels: Sequence[str], *, site_of: pd.Series | None,
                  view_of: pd.Series | None) -> dict[str, Any]:
    y = df[list(labels)].to_numpy()
    row: dict[str, Any] = {
        "images": int(len(df)),
        "patients": int(df["patient_id"].nunique()),
        "train": int((df["split"] == "train").sum()),
        "val": int((df["split"] == "val").sum()),
        "test": int((df["split"] == "test").sum()),
        "positives": {f: int(v) for f, v in zip(labels, y.sum(axis=0) if len(y) else np.zeros(len(labels)))},
        "prevalence": {f: float(v) for f, v in zip(labels, y.mean(axis=0) if len(y) else np.zeros(len(labels)))},
        "no_finding": float((y.sum(axis=1) == 0).mean()) if len(y) else 0.0,
    }
    if len(df) and set(df["split"]) <= {"train", "val"}:  # a hospital: positives per split
        for sp in ("train", "val"):
            sel = (df["split"] == sp).to_numpy()
            row[f"positives_{sp}"] = {f: int(v) for f, v in zip(labels, y[sel].sum(axis=0))}
    if site_of is not None:
        s = site_of.reindex(df["image"]).dropna().astype(int)
        row["sites"] = {str(k): int(v) for k, v in s.value_counts().sort_index().items()}
    if view_of is not None:
        v = view_of.reindex(df["image"]).dropna()
        row["views"] = {str(k): int(n) for k, n in v.value_counts().sort_index().items()}
        row["ap_fraction"] = float((v == "AP").mean()) if len(v) else 0.0
    return row


def summarize(parts: Mapping[str, pd.DataFrame], *, meta: pd.DataFrame | None = None,
              task: Task | None = None) -> dict[str, Any]:
    """Per-manifest counts, patients, positives and prevalence per label (also per train / val
    split of a hospital), sites and views when ``meta`` has them, and :func:`non_iid_stats`."""
    task = frame_task(next(iter(parts.values())), task) if parts else (task or NIH_TASK)
    site_of = meta.set_index("image")["site"] if meta is not None and "site" in meta else None
    view_of = meta.set_index("image")["view"] if meta is not None and "view" in meta else None
    rows = {name: _manifest_row(df, task.labels, site_of=site_of, view_of=view_of) for name, df in parts.items()}
    return {"task": task.to_record(), "manifests": rows, "non_iid": non_iid_stats(parts, task=task)}


_ABBR = {"Atelectasis": "Atel", "Cardiomegaly": "Card", "Effusion": "Effu", "Infiltration": "Infi", "Mass": "Mass",
         "Nodule": "Nodu", "Pneumonia": "Pna", "Pneumothorax": "Ptx", "Consolidation": "Cons", "Edema": "Edem",
         "Emphysema": "Emph", "Fibrosis": "Fibr", "Pleural_Thickening": "PlTh", "Hernia": "Hern"}


def _abbr(label: str) -> str:
    return _ABBR.get(label) or label.replace(" ", "")[:5]


def format_summary(summary: Mapping[str, Any]) -> str:
    """Human-readable table of :func:`summarize` output: prevalence, then positives per label."""
    task = Task.from_record(summary["task"]) if "task" in summary else NIH_TASK
    labels = task.labels
    none = NO_FINDING if task == NIH_TASK else "none"
    cols = " ".join(f"{_abbr(f):>5}" for f in labels)
    lines = [f"task: {task.describe()}",
             f"{'manifest':<12} {'images':>7} {'patients':>8} {'train':>6} {'val':>5} {'test':>6}  {'none':>5} " + cols]
    for name, r in summary["manifests"].items():
        lines.append(
            f"{display_name(name):<12} {r['images']:>7} {r['patients']:>8} {r['train']:>6} {r['val']:>5} {r['test']:>6}  "
            f"{r['no_finding']:>5.3f} " + " ".join(f"{r['prevalence'][f]:>5.3f}" for f in labels)
        )
        if "sites" in r:
            lines.append(f"{'':<12} sites: " + ", ".join(f"{k}: {v}" for k, v in r["sites"].items()))
        if "views" in r:
            lines.append(f"{'':<12} views: " + ", ".join(f"{k}: {v}" for k, v in r["views"].items())
                         + f" (AP fraction {r['ap_fraction']:.3f})")
    lines.append("positives per label (hospital rows: train/val):")
    lines.append(f"{'manifest':<12} " + " ".join(f"{_abbr(f):>7}" for f in labels))
    for name, r in summary["manifests"].items():
        if "positives_train" in r:
            cells = [f"{r['positives_train'][f]}/{r.get('positives_val', {}).get(f, 0)}" for f in labels]
        else:
            cells = [str(r["positives"][f]) for f in labels]
        lines.append(f"{display_name(name):<12} " + " ".join(f"{c:>7}" for c in cells))
    ni = summary["non_iid"]
    lines.append(
        "non-IID: mean JSD(hospital || pooled) = {:.4f} bits, max = {:.4f}; hospital size CV = {:.3f}".format(
            ni["mean_jsd"], ni["max_jsd"], ni["size_cv"])
    )
    lines.append("  per hospital JSD: " + ", ".join(f"{display_name(k)} {v:.4f}" for k, v in ni["jsd"].items()))
    lines.append(f"(label columns: {', '.join(f'{_abbr(f)}={f}' for f in labels)}; none = {none})")
    return "\n".join(lines)
