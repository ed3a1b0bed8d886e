"""Communication cost per arm (paper section 3.3, claim C5: 46 % / 43 % reduction vs centralized).

Bytes moved per arm, mean over seeds, from each run's ``summary.json`` (communication totals) or
the last ``cum_bytes`` of ``metrics.csv``. For the centralized arm that is the raw training images
sent to one site; for the federated arms the model broadcasts plus the client updates (secure
sum: 32 bits per value). Reduction = ``1 - bytes(arm) / bytes(centralized)``; a negative value
means the federated arm moved *more* bytes than shipping the images once.

Writes ``communication.{png,pdf,csv,md}``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bfdl_tff.io_utils import atomic_write_text
from paper_figures import results as R
from paper_figures.common import Output
from paper_figures.style import arm_color, arm_label, fmt, markdown_table, new_figure, no_data, save_figure, write_csv

NAME = "communication"
PAPER_REDUCTION = {"federated": 0.46, "bfdl": 0.43}


def compute(runs_root: Path) -> tuple[pd.DataFrame, list[Path]]:
    arms = R.by_arm(R.load_group(Path(runs_root), R.ARMS_DIR))
    recs, sources = [], []
    for arm in R.ordered_arms(arms):
        m = R.Measured()
        for run in arms[arm]:
            got = run.communication_bytes()
            if got is not None:
                m.add(*got)
        if m.n:
            sources += m.sources
            recs.append({"arm": arm, "bytes_mean": m.mean, "bytes_sd": m.sd if m.sd is not None else np.nan, "n": m.n})
    df = pd.DataFrame.from_records(recs, columns=["arm", "bytes_mean", "bytes_sd", "n"])
    cen = df.loc[df["arm"] == "centralized", "bytes_mean"]
    c = float(cen.iloc[0]) if len(cen) else np.nan
    df["reduction_vs_centralized"] = 1.0 - df["bytes_mean"] / c if c and c == c else np.nan
    df["paper_reduction"] = [PAPER_REDUCTION.get(a, np.nan) for a in df["arm"]]
    return df, sources


def generate(runs_root: Path, out_dir: Path) -> Output:
    out = Output(NAME)
    runs_root, out_dir = Path(runs_root), Path(out_dir)
    df, sources = compute(runs_root)
    out.read(*sources)
    fig, axes = new_figure(1, 1, width=4.8, height=3.2)
    ax = axes[0][0]
    if df.empty:
        out.miss(f"{runs_root / R.ARMS_DIR}/*/summary.json")
        no_data(ax, "not measured: no runs/arms/*/summary.json")
        md_body = "not measured (missing " + ", ".join(out.missing) + ")\n"
    else:
        xs = np.arange(len(df))
        ax.bar(xs, df["bytes_mean"] / 1e6, yerr=np.nan_to_num(df["bytes_sd"].to_numpy(float)) / 1e6, capsize=3,
               color=[arm_color(a, i) for i, a in enumerate(df["arm"])])
        for x, red in zip(xs, df["reduction_vs_centralized"]):
            if red == red and x > 0:
                ax.annotate(f"{red * 100:+.0f}% vs central", (x, 0), xytext=(0, 3), textcoords="offset points",
                            ha="center", fontsize=7)
        ax.set_xticks(xs, [arm_label(a) for a in df["arm"]])
        ax.set_ylabel("MB moved per training run")
        ax.set_title("Communication per arm (mean ± sd over seeds)")
        rows = [[arm_label(r.arm), fmt(r.bytes_mean / 1e6), int(r.n),
                 "—" if r.paper_reduction != r.paper_reduction else f"{r.paper_reduction * 100:.0f}%",
                 "—" if r.arm == "centralized" or r.reduction_vs_centralized != r.reduction_vs_centralized
                 else f"{r.reduction_vs_centralized * 100:.1f}%"] for r in df.itertuples()]
        md_body = markdown_table(["Arm", "MB moved (mean)", "n", "Paper reduction", "Measured reduction"], rows)
        md_body += "\nSource files: " + R.describe_sources(sources, runs_root.parent) + "\n"
    atomic_write_text(out_dir / f"{NAME}.md", "# Communication cost (claim C5)\n\n" + md_body)
    out.files += save_figure(fig, out_dir / NAME)
    out.files.append(write_csv(df, out_dir / f"{NAME}.csv"))
    out.files.append(out_dir / f"{NAME}.md")
    return out
