"""Figure 4 of the paper ("Scalability impact", section 3.6, claim C10): K = 3..10 hospitals.

Per scalability run ``runs/scalability/k<K>/`` (B-FDL with K hospitals, the same rounds):

* ``round_sync_s``: mean federated round time (``ledger/ledger_summary.json`` ``round_seconds``,
  else ``metrics.csv`` ``wall_s``);
* ``ledger_overhead_s``: mean ledger processing time per round (``ledger_seconds``: hashing,
  off-chain storage, signing and PBFT commit, done on the hook's background thread; falls back to
  ``hook_seconds`` for summaries without it);
* ``end_to_end_s``: the run's wall time (``summary.json``; else the sum of ``metrics.csv`` wall_s);
* ``relative_to_k3``: ``end_to_end_s / end_to_end_s(K=3)``.

Shape claims are settled by fits rather than by eye: the least-squares line of sync time over K
(R²) and the log-log slope of the ledger overhead (< 1 = sub-linear). Paper: +27 % at K = 10.

Writes ``fig4_scalability.{png,pdf,csv}`` and ``scalability.csv`` (the INTERFACES.md columns).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from paper_figures import results as R
from paper_figures.common import Output
from paper_figures.style import new_figure, no_data, save_figure, write_csv
from paper_figures.table33 import ledger_seconds

NAME = "fig4_scalability"
COLUMNS = ["hospitals", "round_sync_s", "ledger_overhead_s", "end_to_end_s", "relative_to_k3"]


def _hospitals(run: R.Run) -> int | None:
    h = (run.config.get("data") or {}).get("hospitals")
    if h is not None:
        return int(h)
    m = re.match(r"k(\d+)$", run.name)
    return int(m.group(1)) if m else None


def compute(runs_root: Path) -> tuple[pd.DataFrame, list[Path]]:
    recs, sources = [], []
    for run in R.load_group(Path(runs_root), R.SCALABILITY_DIR):
        k = _hospitals(run)
        if k is None:
            continue
        ls = run.ledger_summary()
        sync = overhead = None
        if ls and ls.get("round_seconds"):
            sync = float(np.mean(ls["round_seconds"]))
            sources.append(run.ledger_summary_file)
        else:
            df = run.metrics()
            if df is not None and "wall_s" in df.columns:
                sync = float(df["wall_s"].mean())
                sources.append(run.metrics_file)
        if ls and ledger_seconds(ls):
            overhead = float(np.mean(ledger_seconds(ls)))
            sources.append(run.ledger_summary_file)
        wall = run.wall_seconds()
        if wall is not None:
            sources.append(wall[1])
        recs.append({"hospitals": k, "round_sync_s": sync, "ledger_overhead_s": overhead,
                     "end_to_end_s": wall[0] if wall else None})
    df = pd.DataFrame.from_records(recs, columns=COLUMNS[:-1]).sort_values("hospitals", kind="stable")
    base = df.loc[df["hospitals"] == 3, "end_to_end_s"]
    df["relative_to_k3"] = df["end_to_end_s"] / float(base.iloc[0]) if len(base) and base.iloc[0] else np.nan
    return df.reset_index(drop=True)[COLUMNS], sources


def fits(df: pd.DataFrame) -> dict[str, float | None]:
    """Linear fit of sync time (slope, R²) and log-log slope of the ledger overhead."""
    out: dict[str, float | None] = {"sync_slope_s_per_node": None, "sync_r2": None, "overhead_loglog_slope": None}
    d = df.dropna(subset=["round_sync_s"])
    if len(d) >= 3:
        x, y = d["hospitals"].to_numpy(float), d["round_sync_s"].to_numpy(float)
        slope, icpt = np.polyfit(x, y, 1)
        ss_res = float(np.sum((y - (slope * x + icpt)) ** 2))
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        out["sync_slope_s_per_node"] = float(slope)
        out["sync_r2"] = 1.0 - ss_res / ss_tot if ss_tot > 0 else None
    d = df.dropna(subset=["ledger_overhead_s"])
    d = d[d["ledger_overhead_s"] > 0]
    if len(d) >= 3:
        out["overhead_loglog_slope"] = float(np.polyfit(np.log(d["hospitals"].to_numpy(float)),
                                                        np.log(d["ledger_overhead_s"].to_numpy(float)), 1)[0])
    return out


def generate(runs_root: Path, out_dir: Path) -> Output:
    out = Output(NAME)
    df, sources = compute(runs_root)
    out.read(*sources)
    fig, axes = new_figure(2, 1, width=7.2, height=3.2)
    ax_a, ax_b = axes[0]
    if df.empty:
        out.miss(f"{Path(runs_root) / R.SCALABILITY_DIR}/k*/summary.json")
        no_data(ax_a, "not measured:\nno runs/scalability/k*/")
        no_data(ax_b, "not measured:\nno runs/scalability/k*/")
    else:
        f = fits(df)
        ax_a.plot(df["hospitals"], df["round_sync_s"], "o-", label="round sync time")
        ax_a.plot(df["hospitals"], df["ledger_overhead_s"], "s-", label="ledger overhead per round")
        if f["sync_r2"] is not None:
            ax_a.set_title(f"(a) Per-round time (sync fit R²={f['sync_r2']:.2f})")
        else:
            ax_a.set_title("(a) Per-round time")
        ax_a.set_xlabel("hospitals K")
        ax_a.set_ylabel("seconds per round")
        ax_a.legend()
        rel = (df["relative_to_k3"] - 1.0) * 100.0
        ax_b.plot(df["hospitals"], rel, "o-", color="#55A868", label="this repo")
        ax_b.plot([10], [27.0], marker="*", ms=10, color="#C44E52", ls="none", label="paper: +27% at K=10")
        ax_b.axhline(0, color="black", lw=0.6)
        ax_b.set_xlabel("hospitals K")
        ax_b.set_ylabel("end-to-end time vs K=3 (%)")
        ax_b.set_title("(b) End-to-end training time")
        ax_b.legend()
        ks = sorted(set(int(k) for k in df["hospitals"]))
        ax_a.set_xticks(ks)
        ax_b.set_xticks(sorted(set(ks) | {10}))
    out.files += save_figure(fig, Path(out_dir) / NAME)
    out.files.append(write_csv(df, Path(out_dir) / f"{NAME}.csv"))
    out.files.append(write_csv(df, Path(out_dir) / "scalability.csv"))
    return out


__all__ = ["compute", "fits", "generate"]
