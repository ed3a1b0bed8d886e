"""Figure 2 of the paper ("Performance comparison", sections 3.2-3.3, claims C1-C2).

Panel (a): per arm, mean ± sd over seeds of macro AUC, micro AUC, macro precision and recall (at
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
    return df, sources


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
        for i, arm in enumerate(arms):
            sub = a[a["arm"] == arm].set_index("metric")
            means = [sub["mean"].get(m, np.nan) for m, _ in PANEL_A]
            sds = [sub["sd"].get(m, np.nan) for m, _ in PANEL_A]
            n = int(sub["n"].max()) if len(sub) else 0
            ax_a.bar(x + (i - (len(arms) - 1) / 2) * width, means, width, yerr=np.nan_to_num(sds),
                     capsize=2, color=arm_color(arm, i), label=f"{arm_label(arm)} (n={n})")
        ax_a.set_xticks(x, [lbl for _, lbl in PANEL_A])
        ax_a.set_ylim(0, 1.05)
        ax_a.set_ylabel("score (mean ± sd over seeds)")
        ax_a.set_title("(a) Diagnostic performance per arm")
        ax_a.legend(loc="lower right", ncol=len(arms))
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
