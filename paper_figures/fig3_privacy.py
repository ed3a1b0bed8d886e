"""Figure 3 of the paper ("Privacy leakage reduction", sections 3.3 and 3.5, claim C3; issue 16.6).

Panel (a): gradient-inversion success rate per arm and attacked setting: target (what the server
could see: ``plain_update``, ``secure_sum``, ``dp_update``), batch size B, local steps s and round
(``first``: the initial model, ``final``: the released model; files without ``round`` are
``final``), pooled over the runs (seeds) that have ``attacks/inversion.json``, with a 95 % Wilson
score interval on the pooled count (successes = success_rate x n_targets). Centralized training
has no update channel and no bar.

Panel (b): membership-inference TPR at FPR = 0.1 % and 1 % on the released model per arm and
attack (loss threshold, LiRA), pooled over runs from the counts in ``low_fpr`` (``tp`` of
``n_members``) with an exact Clopper-Pearson 95 % interval (no interval for files without counts),
on a log FPR axis; for each DP arm the largest TPR any test can reach against its (epsilon, delta)
(``dp_bound`` in ``membership.json``: ``min(e^eps FPR + delta, 1 - e^-eps (1 - delta - FPR))``) is
drawn as a line, and the chance line TPR = FPR dotted. The DP audit's verdict (``dp_audit``) is in
the CSV (``note``) and the title.

Writes ``fig3_privacy.{png,pdf,csv}``; the CSV carries ``ci_low``, ``ci_high``, ``ci_method`` and
the counts ``successes`` / ``n``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from paper_figures import results as R
from paper_figures.common import Output
from paper_figures.style import arm_color, arm_short, new_figure, no_data, save_figure, write_csv

NAME = "fig3_privacy"
TARGETS = ("plain_update", "secure_sum", "dp_update")
ROUND_ORDER = ("first", "final")
FPRS = ("0.001", "0.01")
TARGET_COLOR = {"plain_update": "#c0504d", "secure_sum": "#4f81bd", "dp_update": "#9bbb59"}
ATTACK_MARKER = {"loss_threshold": "s", "lira": "o"}
COLS = ["panel", "arm", "series", "batch_size", "local_steps", "round", "metric", "value", "ci_low", "ci_high",
        "ci_method", "successes", "n", "note"]


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval (Clopper-Pearson); (nan, nan) without trials."""
    from scipy.stats import beta

    if n <= 0:
        return (math.nan, math.nan)
    a = 1.0 - confidence
    lo = 0.0 if k <= 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k >= n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return (lo, hi)


def dp_curve(epsilon: float, delta: float, fpr: np.ndarray) -> np.ndarray:
    """The DP ceiling on TPR at each FPR (Kairouz et al. 2015)."""
    a = math.exp(epsilon) * fpr + delta
    b = 1.0 - math.exp(-epsilon) * (1.0 - delta - fpr)
    return np.clip(np.minimum(a, b), 0.0, 1.0)


def _inversion_records(arm: str, runs: list[R.Run], sources: list[Path]) -> list[dict]:
    pooled: dict[tuple[str, int, int, str], list[float]] = {}
    for run in runs:
        p = run.attack_file("inversion.json")
        if not p.is_file():
            continue
        sources.append(p)
        for row in R.read_json(p).get("rows", []):
            key = (str(row.get("target")), int(row.get("batch_size") or 0), int(row.get("local_steps") or 0),
                   str(row.get("round") or "final"))
            n = int(row.get("n_targets", 0))
            k = row.get("successes")
            acc = pooled.setdefault(key, [0.0, 0])
            acc[0] += float(k) if k is not None else float(row.get("success_rate", 0.0)) * n
            acc[1] += n

    def order(key: tuple[str, int, int, str]) -> tuple:
        t, b, s, r = key
        return (TARGETS.index(t) if t in TARGETS else 99, ROUND_ORDER.index(r) if r in ROUND_ORDER else 9, b, s, t)

    recs = []
    for key in sorted(pooled, key=order):
        k, n = pooled[key]
        lo, hi = R.wilson_interval(k, n)
        recs.append({"panel": "a", "arm": arm, "series": key[0], "batch_size": key[1], "local_steps": key[2],
                     "round": key[3], "metric": "inversion_success_rate", "value": k / n if n else np.nan,
                     "ci_low": lo, "ci_high": hi, "ci_method": "wilson", "successes": int(round(k)), "n": n,
                     "note": ""})
    return recs


def _membership_records(arm: str, runs: list[R.Run], sources: list[Path]) -> list[dict]:
    counts: dict[tuple[str, str], list] = {}  # (attack, fpr) -> [tp, n, values, counted]
    bound: dict[str, list[float]] = {}
    eps: list[tuple[float, float]] = []
    audit: dict[str, list[bool]] = {}
    for run in runs:
        p = run.attack_file("membership.json")
        if not p.is_file():
            continue
        sources.append(p)
        doc = R.read_json(p)
        for attack in ("loss_threshold", "lira"):
            d = doc.get(attack)
            if not isinstance(d, dict):
                continue
            for fpr in FPRS:
                v = d.get(f"tpr_at_fpr_{fpr}")
                if v is None:
                    continue
                acc = counts.setdefault((attack, fpr), [0, 0, [], True])
                pt = (d.get("low_fpr") or {}).get(fpr)
                acc[2].append(float(v))
                if isinstance(pt, dict) and "tp" in pt and "n_members" in pt:
                    acc[0] += int(pt["tp"])
                    acc[1] += int(pt["n_members"])
                else:
                    acc[3] = False
        db = doc.get("dp_bound")
        if isinstance(db, dict):
            if db.get("epsilon") is not None:
                eps.append((float(db["epsilon"]), float(db.get("delta") or 0.0)))
            for fpr in FPRS:
                v = db.get(f"tpr_bound_at_fpr_{fpr}")
                if v is not None:
                    bound.setdefault(fpr, []).append(float(v))
        for fpr, e in (doc.get("dp_audit") or {}).items():
            if isinstance(e, dict) and "violated" in e:
                audit.setdefault(fpr, []).append(bool(e["violated"]))
    recs = []
    for (attack, fpr), (tp, n, vals, counted) in sorted(counts.items()):
        lo, hi = clopper_pearson(tp, n) if counted and n else (math.nan, math.nan)
        value = tp / n if counted and n else float(np.mean(vals))
        recs.append({"panel": "b", "arm": arm, "series": attack, "batch_size": None, "local_steps": None,
                     "round": "final", "metric": f"tpr_at_fpr_{fpr}", "value": value, "ci_low": lo, "ci_high": hi,
                     "ci_method": "clopper_pearson" if counted and n else "", "successes": tp if counted else None,
                     "n": n if counted else len(vals), "note": ""})
    eps_max = max(eps) if eps else None
    for fpr, vals in sorted(bound.items()):
        note = ""
        if fpr in audit:
            note = "dp_audit: violated" if any(audit[fpr]) else "dp_audit: no violation"
        recs.append({"panel": "b", "arm": arm, "series": "dp_bound", "batch_size": None, "local_steps": None,
                     "round": "final", "metric": f"tpr_at_fpr_{fpr}", "value": float(np.max(vals)),
                     "ci_low": np.nan, "ci_high": np.nan, "ci_method": "", "successes": None, "n": len(vals),
                     "note": note + (f"; epsilon {eps_max[0]:.4g}, delta {eps_max[1]:.2g}" if eps_max else "")})
    return recs


def compute(runs_root: Path) -> tuple[pd.DataFrame, list[Path]]:
    arms = R.by_arm(R.load_group(Path(runs_root), R.ARMS_DIR))
    recs: list[dict] = []
    sources: list[Path] = []
    for arm in R.ordered_arms(arms):
        recs += _inversion_records(arm, arms[arm], sources)
        recs += _membership_records(arm, arms[arm], sources)
    return pd.DataFrame.from_records(recs, columns=COLS), sources


def _panel_a(ax: object, a: pd.DataFrame) -> None:
    ys, labels = [], []
    for i, (_, row) in enumerate(a.iloc[::-1].iterrows()):
        hatch = "" if row["round"] == "final" else "//"
        ax.barh(i, row["value"], color=TARGET_COLOR.get(row["series"], "grey"), height=0.75, hatch=hatch,
                edgecolor="white")
        ax.errorbar(row["value"], i, xerr=[[max(0.0, row["value"] - row["ci_low"])],
                                           [max(0.0, row["ci_high"] - row["value"])]], color="black", capsize=2, lw=0.8)
        ys.append(i)
        labels.append(f"{arm_short(row['arm'])} {row['series'].replace('_update', '').replace('_', ' ')} "
                      f"B{int(row['batch_size'])} s{int(row['local_steps'])} {row['round']} "
                      f"({int(row['successes'])}/{int(row['n'])})")
    ax.set_yticks(ys, labels, fontsize=6)
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("reconstruction success rate (SSIM >= 0.5 and re-identified)")
    ax.set_title("(a) Gradient inversion (95% Wilson CI; hatched: first round)", fontsize=8)


def _panel_b(ax: object, df: pd.DataFrame, b: pd.DataFrame) -> None:
    series = [(arm, s) for arm in R.ordered_arms(b["arm"].unique()) for s in ("loss_threshold", "lira")
              if len(b[(b["arm"] == arm) & (b["series"] == s)])]
    top = 0.0
    for j, (arm, s) in enumerate(series):
        hit = b[(b["arm"] == arm) & (b["series"] == s)]
        xs = np.array([float(m.rsplit("_", 1)[1]) for m in hit["metric"]]) * (1.0 + 0.06 * (j - len(series) / 2))
        v = hit["value"].to_numpy(float)
        lo = np.nan_to_num(v - hit["ci_low"].to_numpy(float), nan=0.0)
        hi = np.nan_to_num(hit["ci_high"].to_numpy(float) - v, nan=0.0)
        ax.errorbar(xs, v, yerr=[lo, hi], fmt=ATTACK_MARKER[s], color=arm_color(arm), ms=4, capsize=2, lw=0.8,
                    label=f"{arm_short(arm)} {s.replace('_', ' ')}")
        top = max(top, float(np.nanmax(v + hi)))
    grid = np.logspace(-3.3, -1.7, 50)
    for arm in R.ordered_arms(df["arm"].unique()):
        bd = df[(df["panel"] == "b") & (df["arm"] == arm) & (df["series"] == "dp_bound")]
        note = str(bd["note"].iloc[0]) if len(bd) else ""
        if "epsilon" in note:
            eps = float(note.split("epsilon ")[1].split(",")[0])
            dlt = float(note.split("delta ")[1])
            ax.plot(grid, dp_curve(eps, dlt, grid), color=arm_color(arm), lw=1.2, ls="--",
                    label=f"{arm_short(arm)} DP bound (eps {eps:.3g})")
            top = max(top, float(dp_curve(eps, dlt, grid)[-1]))
    ax.plot(grid, grid, color="grey", lw=0.6, ls=":", label="chance (TPR = FPR)")
    ax.set_xscale("log")
    ax.set_xlim(grid[0], grid[-1])
    ax.set_ylim(0, max(0.03, 1.15 * top))
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    audit = df[(df["series"] == "dp_bound")]["note"].astype(str)
    verdict = ("DP audit: VIOLATED" if audit.str.startswith("dp_audit: violated").any()
               else "DP audit: no violation" if audit.str.startswith("dp_audit: no violation").any() else "")
    ax.set_title(f"(b) Membership inference TPR (95% Clopper-Pearson)\n{verdict}", fontsize=8)
    ax.legend(loc="upper left", fontsize=6)


def generate(runs_root: Path, out_dir: Path) -> Output:
    out = Output(NAME)
    df, sources = compute(runs_root)
    out.read(*sources)
    a = df[df["panel"] == "a"]
    fig, axes = new_figure(2, 1, width=9.0, height=max(3.8, 0.16 * len(a) + 1.2))
    ax_a, ax_b = axes[0]
    if a.empty:
        out.miss(f"{Path(runs_root) / R.ARMS_DIR}/*/attacks/inversion.json")
        no_data(ax_a, "not measured:\nno attacks/inversion.json")
    else:
        _panel_a(ax_a, a)
    b = df[(df["panel"] == "b") & (df["series"] != "dp_bound")]
    if b.empty:
        out.miss(f"{Path(runs_root) / R.ARMS_DIR}/*/attacks/membership.json")
        no_data(ax_b, "not measured:\nno attacks/membership.json")
    else:
        _panel_b(ax_b, df, b)
    out.files += save_figure(fig, Path(out_dir) / NAME)
    out.files.append(write_csv(df, Path(out_dir) / f"{NAME}.csv"))
    return out
