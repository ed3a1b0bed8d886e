"""Figure 3 of the paper ("Privacy leakage reduction", sections 3.3 and 3.5, claim C3).

Panel (a): gradient-inversion success rate per arm, per target (what the server could see:
``plain_update``, ``secure_sum``, ``dp_update``) and per attacked setting (batch size B, local
steps s), pooled over the runs (seeds) that have
``attacks/inversion.json``, with a 95 % Wilson score interval on the pooled count
(successes = success_rate × n_targets). Centralized training has no update channel and no bar.
Panel (b): membership-inference TPR at FPR = 0.1 % and 1 % on the released model per arm and
attack (loss threshold, LiRA), mean over runs; for a DP arm the TPR upper bound implied by
(epsilon, delta) is drawn as a marker (``dp_bound`` in ``membership.json``).

Writes ``fig3_privacy.{png,pdf,csv}``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from paper_figures import results as R
from paper_figures.common import Output
from paper_figures.style import arm_color, arm_short, new_figure, no_data, save_figure, write_csv

NAME = "fig3_privacy"
TARGETS = ("plain_update", "secure_sum", "dp_update")
FPRS = ("0.001", "0.01")


def compute(runs_root: Path) -> tuple[pd.DataFrame, list[Path]]:
    arms = R.by_arm(R.load_group(Path(runs_root), R.ARMS_DIR))
    recs, sources = [], []
    for arm in R.ordered_arms(arms):
        pooled: dict[tuple[str, int, int], list[float]] = {}
        for run in arms[arm]:
            p = run.attack_file("inversion.json")
            if not p.is_file():
                continue
            sources.append(p)
            for row in R.read_json(p).get("rows", []):
                key = (str(row.get("target")), int(row.get("batch_size") or 0), int(row.get("local_steps") or 0))
                n = int(row.get("n_targets", 0))
                acc = pooled.setdefault(key, [0.0, 0])
                acc[0] += float(row.get("success_rate", 0.0)) * n
                acc[1] += n
        for key in sorted(pooled, key=lambda x: (TARGETS.index(x[0]) if x[0] in TARGETS else 99, x)):
            k, n = pooled[key]
            lo, hi = R.wilson_interval(k, n)
            recs.append({"panel": "a", "arm": arm, "series": key[0], "batch_size": key[1], "local_steps": key[2],
                         "metric": "inversion_success_rate", "value": k / n if n else np.nan,
                         "ci_low": lo, "ci_high": hi, "n": n})
        mia: dict[tuple[str, str], list[float]] = {}
        bound: dict[str, list[float]] = {}
        n_runs = 0
        for run in arms[arm]:
            p = run.attack_file("membership.json")
            if not p.is_file():
                continue
            sources.append(p)
            n_runs += 1
            doc = R.read_json(p)
            for attack in ("loss_threshold", "lira"):
                d = doc.get(attack)
                if isinstance(d, dict):
                    for fpr in FPRS:
                        v = d.get(f"tpr_at_fpr_{fpr}")
                        if v is not None:
                            mia.setdefault((attack, fpr), []).append(float(v))
            db = doc.get("dp_bound")
            if isinstance(db, dict):
                for fpr in FPRS:
                    v = db.get(f"tpr_bound_at_fpr_{fpr}")
                    if v is not None:
                        bound.setdefault(fpr, []).append(float(v))
        for (attack, fpr), vals in sorted(mia.items()):
            recs.append({"panel": "b", "arm": arm, "series": attack, "batch_size": None, "local_steps": None,
                         "metric": f"tpr_at_fpr_{fpr}",
                         "value": float(np.mean(vals)), "ci_low": float(np.min(vals)), "ci_high": float(np.max(vals)),
                         "n": len(vals)})
        for fpr, vals in sorted(bound.items()):
            recs.append({"panel": "b", "arm": arm, "series": "dp_bound", "batch_size": None, "local_steps": None,
                         "metric": f"tpr_at_fpr_{fpr}",
                         "value": float(np.max(vals)), "ci_low": np.nan, "ci_high": np.nan, "n": len(vals)})
    cols = ["panel", "arm", "series", "batch_size", "local_steps", "metric", "value", "ci_low", "ci_high", "n"]
    return pd.DataFrame.from_records(recs, columns=cols), sources


def generate(runs_root: Path, out_dir: Path) -> Output:
    out = Output(NAME)
    df, sources = compute(runs_root)
    out.read(*sources)
    fig, axes = new_figure(2, 1, width=7.2, height=3.8)
    ax_a, ax_b = axes[0]
    a = df[df["panel"] == "a"]
    if a.empty:
        out.miss(f"{Path(runs_root) / R.ARMS_DIR}/*/attacks/inversion.json")
        no_data(ax_a, "not measured:\nno attacks/inversion.json")
    else:
        labels, xs = [], []
        for i, (_, row) in enumerate(a.iterrows()):
            ax_a.bar(i, row["value"], color=arm_color(row["arm"]), width=0.7)
            ax_a.errorbar(i, row["value"], yerr=[[max(0.0, row["value"] - row["ci_low"])],
                                                 [max(0.0, row["ci_high"] - row["value"])]],
                          color="black", capsize=3, lw=1)
            labels.append(f"{arm_short(row['arm'])}\n{row['series'].replace('_', ' ')}\nB={int(row['batch_size'])} s={int(row['local_steps'])}\n(n={int(row['n'])})")
            xs.append(i)
        ax_a.set_xticks(xs, labels, fontsize=6.5)
        ax_a.set_ylim(0, 1.0)
        ax_a.set_ylabel("reconstruction success rate")
        ax_a.set_title("(a) Gradient inversion success\n(95% Wilson CI)")
    b = df[(df["panel"] == "b") & (df["series"] != "dp_bound")]
    if b.empty:
        out.miss(f"{Path(runs_root) / R.ARMS_DIR}/*/attacks/membership.json")
        no_data(ax_b, "not measured:\nno attacks/membership.json")
    else:
        series = [(arm, s) for arm in R.ordered_arms(b["arm"].unique()) for s in ("loss_threshold", "lira")
                  if len(b[(b["arm"] == arm) & (b["series"] == s)])]
        width = 0.8 / len(FPRS)
        for j, fpr in enumerate(FPRS):
            vals = []
            for arm, s in series:
                hit = b[(b["arm"] == arm) & (b["series"] == s) & (b["metric"] == f"tpr_at_fpr_{fpr}")]
                vals.append(float(hit["value"].iloc[0]) if len(hit) else np.nan)
            ax_b.bar(np.arange(len(series)) + (j - 0.5) * width, vals, width,
                     color=[arm_color(arm) for arm, _ in series], alpha=0.55 + 0.45 * j,
                     label=f"TPR @ FPR={float(fpr) * 100:g}%")
            for i, (arm, _) in enumerate(series):
                bd = df[(df["panel"] == "b") & (df["arm"] == arm) & (df["series"] == "dp_bound")
                        & (df["metric"] == f"tpr_at_fpr_{fpr}")]
                if len(bd):
                    ax_b.plot([i + (j - 0.5) * width], [float(bd["value"].iloc[0])], marker="_", ms=14,
                              mew=2, color="black")
            ax_b.axhline(float(fpr), color="grey", lw=0.6, ls=":")
        ax_b.set_xticks(np.arange(len(series)), [f"{arm_short(a_)}\n{s.replace('_', ' ')}" for a_, s in series], fontsize=6.5)
        ax_b.set_ylabel("true-positive rate")
        ax_b.set_title("(b) Membership inference TPR\n(black bar: DP bound; dotted: TPR = FPR)")
        ax_b.legend(loc="upper right")
    out.files += save_figure(fig, Path(out_dir) / NAME)
    out.files.append(write_csv(df, Path(out_dir) / f"{NAME}.csv"))
    return out
