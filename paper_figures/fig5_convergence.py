"""Figure 5 of the paper ("Convergence behaviour", sections 3.2-3.3, claims C1 and C4).

Panels: (a) test macro AUC per round for the three arms and (b) test loss per round - the
server-side BCE of the global model on the central benchmark test split (``metrics.csv``
``test_loss``), present for every arm. Training loss is not plotted: for the ``bfdl`` arm it is a
hospital-side statistic, empty in ``metrics.csv`` by design (docs/privacy.md "What the server
sees"). Mean and 95 % Student-t band over seeds, ``bfdl_tff.stats.t_quantile``; no band from one
seed; a centralized "round" is one epoch over the pooled data. (c) B-FDL macro AUC
per round with and without the ledger hook (``runs/ledger_off/``) and (d) round wall time with and
without the ledger — the paper's "the ledger does not slow convergence" as numbers.

Reads ``metrics.csv`` of ``runs/arms/*`` and ``runs/ledger_off/*``; writes
``fig5_convergence.{png,pdf,csv}``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from bfdl_tff.stats import t_quantile

from paper_figures import results as R
from paper_figures.common import Output
from paper_figures.style import arm_color, arm_label, new_figure, no_data, save_figure, write_csv

NAME = "fig5_convergence"


def _per_round(runs: list[R.Run], column: str, sources: list[Path]) -> pd.DataFrame:
    frames = []
    for run in runs:
        df = run.metrics()
        if df is None or column not in df.columns or "round" not in df.columns:
            continue
        sources.append(run.metrics_file)
        frames.append(df[["round", column]].dropna().rename(columns={column: "value"}))
    if not frames:
        return pd.DataFrame(columns=["round", "mean", "sd", "n", "ci_low", "ci_high"])
    cat = pd.concat(frames)
    g = cat.groupby("round")["value"]
    out = pd.DataFrame({"mean": g.mean(), "sd": g.std(ddof=1), "n": g.count()}).reset_index()
    half = [t_quantile(0.975, n - 1) * sd / math.sqrt(n) if n >= 2 and not math.isnan(sd) else math.nan
            for n, sd in zip(out["n"], out["sd"])]
    out["ci_low"], out["ci_high"] = out["mean"] - half, out["mean"] + half
    return out


def compute(runs_root: Path) -> tuple[pd.DataFrame, list[Path]]:
    runs_root = Path(runs_root)
    arms = R.by_arm(R.load_group(runs_root, R.ARMS_DIR))
    off = R.load_group(runs_root, R.LEDGER_OFF_DIR)
    sources: list[Path] = []
    parts = []
    for panel, column in (("a", "test_macro_auc"), ("b", "test_loss")):
        for arm in R.ordered_arms(arms):
            d = _per_round(arms[arm], column, sources)
            d.insert(0, "series", arm)
            d.insert(0, "metric", column)
            d.insert(0, "panel", panel)
            parts.append(d)
    for panel, column in (("c", "test_macro_auc"), ("d", "wall_s")):
        for series, runs in (("bfdl_with_ledger", arms.get("bfdl", [])), ("bfdl_without_ledger", off)):
            d = _per_round(runs, column, sources)
            d.insert(0, "series", series)
            d.insert(0, "metric", column)
            d.insert(0, "panel", panel)
            parts.append(d)
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    cols = ["panel", "metric", "series", "round", "mean", "sd", "n", "ci_low", "ci_high"]
    df = df.reindex(columns=cols)
    df["round"] = df["round"].astype("int64") if len(df) else df["round"]
    return df, sources


SERIES_STYLE = {"bfdl_with_ledger": ("#55A868", "B-FDL with ledger"), "bfdl_without_ledger": ("#8172B3", "B-FDL, ledger off")}


def _plot(ax, df: pd.DataFrame, panel: str, ylabel: str, title: str) -> bool:
    d = df[df["panel"] == panel]
    if d.empty:
        return False
    for i, series in enumerate(dict.fromkeys(d["series"])):
        s = d[d["series"] == series]
        if series in SERIES_STYLE:
            color, label = SERIES_STYLE[series]
        else:
            color, label = arm_color(series, i), arm_label(series)
        n = int(s["n"].max())
        ax.plot(s["round"], s["mean"], "o-", ms=3, color=color, label=f"{label} (n={n})")
        if s["ci_low"].notna().any():  # 95 % t-interval over seeds per round (none from one seed)
            ax.fill_between(s["round"].to_numpy(float), s["ci_low"].to_numpy(float), s["ci_high"].to_numpy(float),
                            color=color, alpha=0.2, lw=0)
    ax.set_xlabel("round")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    return True


def generate(runs_root: Path, out_dir: Path) -> Output:
    out = Output(NAME)
    df, sources = compute(runs_root)
    out.read(*sources)
    fig, axes = new_figure(2, 2, width=7.2, height=5.6)
    arms_need = f"{Path(runs_root) / R.ARMS_DIR}/*/metrics.csv"
    off_need = f"{Path(runs_root) / R.LEDGER_OFF_DIR}/*/metrics.csv"
    spec = (
        (axes[0][0], "a", "test macro AUC", "(a) Macro AUC per round", arms_need),
        (axes[0][1], "b", "test loss (server, benchmark test set)", "(b) Test loss per round", arms_need),
        (axes[1][0], "c", "test macro AUC", "(c) B-FDL with / without ledger", off_need),
        (axes[1][1], "d", "round wall time (s)", "(d) Round time with / without ledger", off_need),
    )
    for ax, panel, ylabel, title, need in spec:
        if not _plot(ax, df, panel, ylabel, title):
            out.miss(need)
            no_data(ax, f"not measured:\nno {Path(need).parent.parent.name}/*/metrics.csv")
        elif panel in ("c", "d") and set(df[df["panel"] == panel]["series"]) != set(SERIES_STYLE):
            out.miss(need)
    out.files += save_figure(fig, Path(out_dir) / NAME)
    out.files.append(write_csv(df, Path(out_dir) / f"{NAME}.csv"))
    return out
