"""Privacy-utility curve (issue 14.3; paper 3.5 "epsilon = 1.0" and claim C3: does DP at
epsilon = 1 keep accuracy?): test macro AUC of the B-FDL arm against its target epsilon (log x axis),
a no-noise DP-SGD point (clipping only) at the right, and the federated and centralized arms'
means as horizontal lines with their 95 % bands.

Reads ``runs/privacy_utility/points.json`` (written by the reproduction's ``privacy_utility``
stage: epsilon, seed and run directory of every point) and each point's ``summary.json``
(``macro_auc``, ``epsilon``), plus ``runs/arms/{federated,centralized}-s*/summary.json``.
Intervals are Student-t 95 % intervals over seeds (:func:`bfdl_tff.stats.mean_ci`), drawn only
where a point has more than one seed. Writes ``privacy_utility.{png,pdf,csv}`` (the CSV holds
exactly what is plotted).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bfdl_tff.stats import mean_ci
from paper_figures import results as R
from paper_figures.common import Output
from paper_figures.style import arm_color, arm_label, new_figure, no_data, save_figure, write_csv

NAME = "privacy_utility"
GROUP = "privacy_utility"
POINTS_FILE = f"{GROUP}/points.json"
COLUMNS = ["kind", "label", "epsilon", "no_noise", "n_seeds", "seeds", "mean", "ci_low", "ci_high", "sd",
           "values", "achieved_epsilon_max", "sources"]
REFERENCE_ARMS = ("federated", "centralized")


def _row(kind: str, label: str, eps: float | None, values: dict[int, float], sources: list[str],
         achieved: list[float]) -> dict[str, Any]:
    seeds = sorted(values)
    s = mean_ci([values[k] for k in seeds])
    return {"kind": kind, "label": label, "epsilon": np.nan if eps is None else eps,
            "no_noise": kind == "point" and eps is None, "n_seeds": s.n, "seeds": " ".join(map(str, seeds)),
            "mean": s.mean, "ci_low": s.low if s.low is not None else np.nan,
            "ci_high": s.high if s.high is not None else np.nan, "sd": s.sd if s.sd is not None else np.nan,
            "values": " ".join(f"{values[k]:.4f}" for k in seeds),
            "achieved_epsilon_max": max(achieved) if achieved else np.nan,
            "sources": ";".join(sources)}


def _rel(p: Path, root: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(p)


def _points(runs_root: Path, out: Output) -> list[dict[str, Any]]:
    index = runs_root / POINTS_FILE
    if not index.is_file():
        out.miss(str(index))
        return []
    out.read(index)
    groups: dict[Any, tuple[dict[int, float], list[Path], list[float]]] = {}
    for p in R.read_json(index).get("points", []):
        eps = None if p.get("no_noise") or p.get("epsilon") is None else float(p["epsilon"])
        run = R.load_run(runs_root / p["run"])
        if run is None:
            out.miss(str(runs_root / p["run"] / "summary.json"))
            continue
        auc = R.as_float(run.get("macro_auc"))
        if auc is None:
            out.miss(f"{run.summary_file}: macro_auc")
            continue
        vals, srcs, ach = groups.setdefault(eps, ({}, [], []))
        vals[int(p["seed"])] = auc
        srcs.append(run.summary_file)
        got = R.as_float(run.get("epsilon"))
        if got is not None and math.isfinite(got):
            ach.append(got)
    keys = sorted((k for k in groups if k is not None)) + ([None] if None in groups else [])
    rows = []
    for k in keys:
        vals, srcs, ach = groups[k]
        out.read(*srcs)
        rows.append(_row("point", "no noise (clipping only)" if k is None else f"epsilon {k:g}", k, vals,
                         [_rel(p, runs_root) for p in srcs], ach))
    return rows


def compute(runs_root: Path, out: Output | None = None) -> pd.DataFrame:
    """The plotted numbers: one row per curve point and per reference arm."""
    out = out or Output(NAME)
    runs_root = Path(runs_root)
    rows = _points(runs_root, out)
    arms = R.by_arm(R.load_group(runs_root, R.ARMS_DIR))
    for arm in REFERENCE_ARMS:
        vals = {r.seed: R.as_float(r.get("macro_auc")) for r in arms.get(arm, [])}
        vals = {k: v for k, v in vals.items() if v is not None}
        if vals:
            srcs = [r.summary_file for r in arms[arm] if r.seed in vals]
            out.read(*srcs)
            rows.append(_row("arm", arm, None, vals, [_rel(p, runs_root) for p in srcs], []))
    return pd.DataFrame.from_records(rows, columns=COLUMNS)


def _plot(ax: Any, df: pd.DataFrame) -> None:
    pts = df[df["kind"] == "point"]
    curve = pts[~pts["no_noise"].astype(bool)]
    xmax = float(curve["epsilon"].max()) if len(curve) else 1.0
    x_nonoise = xmax * 4.0
    xs = [float(e) for e in curve["epsilon"]] + ([x_nonoise] if pts["no_noise"].astype(bool).any() else [])
    ordered = pd.concat([curve, pts[pts["no_noise"].astype(bool)]])
    means = ordered["mean"].to_numpy(dtype=float)
    lo, hi = ordered["ci_low"].to_numpy(dtype=float), ordered["ci_high"].to_numpy(dtype=float)
    err = np.vstack([np.where(np.isnan(lo), 0, means - lo), np.where(np.isnan(hi), 0, hi - means)])
    color = arm_color("bfdl", 2)
    ax.plot(xs[:len(curve)], means[:len(curve)], "-o", color=color, label="B-FDL (DP-SGD) at target epsilon")
    ax.errorbar(xs, means, yerr=err, fmt="none", ecolor=color, capsize=3)
    if len(xs) > len(curve):
        ax.plot([x_nonoise], [means[-1]], "s", color=color, mfc="white", label="B-FDL, no noise (clipping only)")
    for i, (_, r) in enumerate(ordered.iterrows()):
        ax.annotate(f"n={int(r['n_seeds'])}", (xs[i], means[i]), textcoords="offset points", xytext=(0, -12),
                    ha="center", fontsize=6)
    for i, (_, r) in enumerate(df[df["kind"] == "arm"].iterrows()):
        c = arm_color(r["label"], i)
        ax.axhline(r["mean"], color=c, lw=1.2, ls="--", label=f"{arm_label(r['label'])} (mean of {int(r['n_seeds'])} seed{'s' if int(r['n_seeds']) != 1 else ''})")
        if not np.isnan(r["ci_low"]):
            ax.axhspan(r["ci_low"], r["ci_high"], color=c, alpha=0.15, lw=0)
    ax.axhline(0.5, color="black", lw=0.8, ls=":")
    ax.set_xscale("log")
    ticks = xs
    ax.set_xticks(ticks, [f"{x:g}" for x in xs[:len(curve)]] + (["no\nnoise"] if len(xs) > len(curve) else []))
    ax.minorticks_off()
    ax.set_xlabel("target epsilon (patient level, delta of the run; log scale)")
    ax.set_ylabel("test macro AUC (mean, 95 % t-CI over seeds)")
    ax.set_title("Privacy-utility: B-FDL against epsilon (dotted: chance)")
    ax.legend(loc="upper left", fontsize=7)


def generate(runs_root: Path, out_dir: Path) -> Output:
    out = Output(NAME)
    df = compute(Path(runs_root), out)
    fig, ax = new_figure(1, 1, width=6.4, height=4.2)
    ax = ax[0][0]
    if not (df["kind"] == "point").any():
        no_data(ax, f"not measured: no {POINTS_FILE} (the reproduction's privacy_utility stage)")
    else:
        _plot(ax, df)
    out.files += save_figure(fig, Path(out_dir) / NAME)
    out.files.append(write_csv(df, Path(out_dir) / f"{NAME}.csv"))
    return out


__all__ = ["NAME", "compute", "generate"]
