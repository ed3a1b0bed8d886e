"""Figure 2 of the paper ("Performance comparison", sections 3.2-3.3, claims C1-C2).

Panel (a): per arm, mean ± sd over seeds of macro AUC (its bar and 95 % t-interval from
``runs/statistics/arms_ci.json`` when present, over one finding set for every run, with the test
images, positives per finding and seeds written under the panel), micro AUC, macro precision and recall (at
the run's threshold rule), mean per-label accuracy and the all-negative baseline's per-label
accuracy (the baseline shows why a ~0.95 "accuracy" says little on ChestX-ray14: CLAIMS note 1).
Panel (b): per-finding AUC per arm (mean over seeds).

Reads ``runs/arms/*/summary.json`` (per-finding AUC falls back to the last ``metrics.csv`` row);
writes ``fig2_performance.{png,pdf,csv}``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from paper_figures import intervals as I
from paper_figures import results as R
from paper_figures.common import Output
from paper_figures.style import arm_color, arm_label, new_figure, no_data, save_figure, write_csv
from paper_figures.table33 import mean_label_accuracy

NAME = "fig2_performance"

PANEL_A = (
    ("macro_auc", "Macro AUC"),
    ("micro_auc", "Micro AUC"),
    ("precision_macro", "Precision\n(macro)"),
    ("recall_macro", "Recall\n(macro)"),
    ("mean_label_accuracy", "Per-label\naccuracy"),
    ("all_negative_accuracy", "All-negative\nbaseline acc."),
)


def compute(runs_root: Path) -> tuple[pd.DataFrame, list[Path]]:
    arms = R.by_arm(R.load_group(Path(runs_root), R.ARMS_DIR))
    recs, sources = [], []
    for arm in R.ordered_arms(arms):
        runs = arms[arm]
        for metric, _ in PANEL_A:
            m = R.Measured()
            for run in runs:
                v = mean_label_accuracy(run) if metric == "mean_label_accuracy" else R.as_float(run.get(metric))
                m.add(v, run.summary_file)
            sources += m.sources
            if m.n:
                recs.append({"panel": "a", "arm": arm, "metric": metric, "mean": m.mean, "sd": m.sd if m.sd is not None else np.nan, "n": m.n})
        per: dict[str, R.Measured] = {}
        for run in runs:
            got = run.per_finding_auc()
            if got is None:
                continue
            values, src = got
            for f in R.FINDINGS:
                if f in values:
                    per.setdefault(f, R.Measured()).add(values[f], src)
        for f in R.FINDINGS:
            if f in per:
                m = per[f]
                sources += m.sources
                recs.append({"panel": "b", "arm": arm, "metric": f"auc_{f}", "mean": m.mean, "sd": m.sd if m.sd is not None else np.nan, "n": m.n})
    df = pd.DataFrame.from_records(recs, columns=["panel", "arm", "metric", "mean", "sd", "n"])
    return _with_intervals(df, Path(runs_root), sources), sources


def _with_intervals(df: pd.DataFrame, runs_root: Path, sources: list[Path]) -> pd.DataFrame:
    """Columns ``ci_low``/``ci_high``: the 95 % t-interval over seeds of the macro AUC (from
    ``statistics/arms_ci.json``; there the macro is over the same findings for every run)."""
    doc, path = I.load(runs_root)
    df["ci_low"], df["ci_high"] = np.nan, np.nan
    if doc is None:
        return df
    sources.append(path)
    for arm, d in doc.get("arms", {}).items():
        s = d["over_seeds"]
        sel = (df["panel"] == "a") & (df["arm"] == arm) & (df["metric"] == "macro_auc")
        if s["mean"] is not None:  # bar and interval over the same findings (arms_ci.json)
            df.loc[sel, "mean"] = s["mean"]
        if s["low"] is not None:
            df.loc[sel, ["ci_low", "ci_high"]] = [s["low"], s["high"]]
    return df


def _yerr(sub: pd.DataFrame) -> np.ndarray:
    """Error bars: the macro AUC's 95 % interval where known, else ± sd."""
    lo, hi = [], []
    for m, _ in PANEL_A:
        mean, sd = sub["mean"].get(m, np.nan), sub["sd"].get(m, np.nan)
        cl, ch = sub["ci_low"].get(m, np.nan), sub["ci_high"].get(m, np.nan)
        if not np.isnan(cl):
            lo.append(mean - cl)
            hi.append(ch - mean)
        else:
            lo.append(0.0 if np.isnan(sd) else sd)
            hi.append(0.0 if np.isnan(sd) else sd)
    return np.array([lo, hi])


def _macro_notes(doc: dict) -> tuple[dict[str, str], str]:
    """Beside each arm's macro AUC: test images, positives per finding (min / median), and the
    findings averaged (the same for every run; the excluded ones are undefined, not 0.5)."""
    f = I.frame(doc)
    notes = {r["name"]: f" seeds; {r['n_test_images']} test images, positives/finding "
                        f"{I._f(r['positives_min'], 0)}/{I._f(r['positives_median'], 0)} min/median"
             for _, r in f[f["kind"] == "arm"].iterrows() if r["positives_min"] is not None}
    excl = sorted(doc.get("excluded_labels") or {})
    return notes, (f"macro AUC over {len(doc.get('macro_labels', []))} findings"
                   + (f", excluded (no test positives): {', '.join(excl)}" if excl else ""))


def generate(runs_root: Path, out_dir: Path) -> Output:
    out = Output(NAME)
    df, sources = compute(runs_root)
    out.read(*sources)
    fig, axes = new_figure(1, 2, width=7.2, height=6.4)
    ax_a, ax_b = axes[0][0], axes[1][0]
    if df.empty:
        out.miss(f"{Path(runs_root) / R.ARMS_DIR}/*/summary.json")
        no_data(ax_a, "not measured: no runs/arms/*/summary.json")
        no_data(ax_b, "not measured: no runs/arms/*/summary.json")
    else:
        arms = R.ordered_arms(df["arm"].unique())
        width = 0.8 / max(len(arms), 1)
        a = df[df["panel"] == "a"]
        x = np.arange(len(PANEL_A))
        doc, _ = I.load(Path(runs_root))
        notes, findings = _macro_notes(doc) if doc is not None else ({}, "")
        for i, arm in enumerate(arms):
            sub = a[a["arm"] == arm].set_index("metric")
            means = [sub["mean"].get(m, np.nan) for m, _ in PANEL_A]
            n = int(sub["n"].max()) if len(sub) else 0
            ax_a.bar(x + (i - (len(arms) - 1) / 2) * width, means, width, yerr=_yerr(sub),
                     capsize=2, color=arm_color(arm, i), label=f"{arm_label(arm)} (n={n}{notes.get(arm, '')})")
        ax_a.set_xticks(x, [lbl for _, lbl in PANEL_A])
        ax_a.set_ylim(0, 1.05)
        ax_a.set_ylabel("score (mean ± sd over seeds;\nmacro AUC: 95 % t-CI)" if a["ci_low"].notna().any()
                        else "score (mean ± sd over seeds)")

        ax_a.set_title("(a) Diagnostic performance per arm" + (f"\n{findings}" if findings else ""))
        ax_a.legend(loc="lower right", ncol=1 if notes else len(arms), fontsize=6 if notes else None)
        b = df[df["panel"] == "b"]
        fx = np.arange(len(R.FINDINGS))
        for i, arm in enumerate(arms):
            sub = b[b["arm"] == arm].set_index("metric")
            means = [sub["mean"].get(f"auc_{f}", np.nan) for f in R.FINDINGS]
            ax_b.bar(fx + (i - (len(arms) - 1) / 2) * width, means, width, color=arm_color(arm, i), label=arm_label(arm))
        ax_b.axhline(0.5, color="black", lw=0.8, ls="--")
        ax_b.set_xticks(fx, [f.replace("_", " ") for f in R.FINDINGS], rotation=45, ha="right")
        ax_b.set_ylim(0, 1.0)
        ax_b.set_ylabel("AUC (mean over seeds)")
        ax_b.set_title("(b) Per-finding AUC (dashed: chance)")
    out.files += save_figure(fig, Path(out_dir) / NAME)
    out.files.append(write_csv(df, Path(out_dir) / f"{NAME}.csv"))
    return out
