"""Confidence intervals of the arms' test macro AUC (issue 14.4), read from
``runs/statistics/arms_ci.json`` (written by the reproduction's ``statistics`` stage with
``bfdl_tff.stats``; this module computes nothing statistical, it formats). Used by Table 3.3,
Figure 2 and the report.

Per arm: mean and 95 % Student-t interval over seeds, each seed's bootstrap interval over test
images, the number of test images, the positives per finding (min / median over the findings of
the macro, across seeds) and the number of seeds; the findings averaged (the same for every seed
and arm) and the excluded ones; paired differences over seeds (centralized - federated,
federated - B-FDL) with their t intervals.
"""

from __future__ import annotations

import math
import statistics as st
from pathlib import Path
from typing import Any

import pandas as pd

from paper_figures import results as R
from paper_figures.style import arm_label, markdown_table

STATS_FILE = "statistics/arms_ci.json"
CSV_COLUMNS = ["kind", "name", "n_seeds", "mean", "ci_low", "ci_high", "per_seed", "n_test_images",
               "positives_min", "positives_median", "n_findings"]


def load(runs_root: Path) -> tuple[dict[str, Any] | None, Path]:
    path = Path(runs_root) / STATS_FILE
    return (R.read_json(path) if path.is_file() else None), path


def _f(v: Any, digits: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.{digits}f}"


def interval_text(mean: Any, low: Any, high: Any, digits: int = 3) -> str:
    if mean is None:
        return "not measured"
    return _f(mean, digits) if low is None or high is None else f"{_f(mean, digits)} [{_f(low, digits)}, {_f(high, digits)}]"


def _range(vals: list[Any]) -> str:
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    return f"{min(vals)}" if min(vals) == max(vals) else f"{min(vals)}-{max(vals)}"


def frame(doc: dict[str, Any]) -> pd.DataFrame:
    """One row per arm and per paired difference (what Table 3.3's interval section shows)."""
    rows = []
    n_find = len(doc.get("macro_labels", []))
    arms = doc.get("arms", {})
    for arm in R.ordered_arms(arms):
        d = arms[arm]
        s, runs = d["over_seeds"], d["runs"]
        pos = [r["positives"] for r in runs if r.get("positives")]
        per_seed = "; ".join(
            f"s{r['seed']} {interval_text(r['macro_auc'], (r.get('bootstrap') or {}).get('low'), (r.get('bootstrap') or {}).get('high'))}"
            for r in runs)
        rows.append({"kind": "arm", "name": arm, "n_seeds": s["n"], "mean": s["mean"], "ci_low": s["low"],
                     "ci_high": s["high"], "per_seed": per_seed,
                     "n_test_images": _range([r.get("n_test_images") for r in runs]),
                     "positives_min": min(p["min"] for p in pos) if pos else None,
                     "positives_median": st.median(p["median"] for p in pos) if pos else None,
                     "n_findings": n_find})
    for name, d in doc.get("paired", {}).items():
        rows.append({"kind": "paired", "name": name, "n_seeds": d["n"], "mean": d["mean"], "ci_low": d["low"],
                     "ci_high": d["high"], "per_seed": "; ".join(f"s{k} {v:+.4f}" for k, v in zip(d["paired_on"], d["differences"])),
                     "n_test_images": "", "positives_min": None, "positives_median": None, "n_findings": n_find})
    return pd.DataFrame.from_records(rows, columns=CSV_COLUMNS)


def markdown(doc: dict[str, Any], source: str) -> str:
    """The two tables (per arm, paired differences) with the finding set stated."""
    df = frame(doc)
    arms = df[df["kind"] == "arm"]
    rows = [[arm_label(r["name"]), interval_text(r["mean"], r["ci_low"], r["ci_high"]), int(r["n_seeds"]),
             r["per_seed"], r["n_test_images"], f"{_f(r['positives_min'], 0)} / {_f(r['positives_median'], 1)}"]
            for _, r in arms.iterrows()]
    excl = doc.get("excluded_labels") or {}
    labels = doc.get("macro_labels", [])
    text = (f"Test macro AUC over the same {len(labels)} findings for every seed and arm"
            + (f"; excluded (no test positives or negatives in some run, so undefined, never 0.5): "
               + "; ".join(f"{k} ({', '.join(v)})" for k, v in excl.items()) if excl else "; no finding excluded")
            + f". Mean and 95 % Student-t interval over seeds; per seed: 95 % percentile bootstrap over test images "
              f"({doc.get('n_boot')} resamples); positives per finding: min / median over the averaged findings "
              f"and seeds. Source: `{source}`.\n\n")
    text += markdown_table(["Arm", "macro AUC [95 % CI over seeds]", "seeds", "per seed [bootstrap 95 % CI]",
                            "test images", "positives per finding (min / median)"], rows)
    paired = df[df["kind"] == "paired"]
    if len(paired):
        prow = [[r["name"].replace("bfdl", "B-FDL"), interval_text(r["mean"], r["ci_low"], r["ci_high"], 4),
                 int(r["n_seeds"]), r["per_seed"]] for _, r in paired.iterrows()]
        text += "\nPaired differences over seeds (same seed = same partition and initialisation):\n\n" + markdown_table(
            ["Difference", "mean [95 % t-CI]", "seeds", "per seed"], prow)
    return text


__all__ = ["CSV_COLUMNS", "STATS_FILE", "frame", "interval_text", "load", "markdown"]
