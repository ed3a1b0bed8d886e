"""Privacy budget (paper section 3.5, claim C9, and CLAIMS note 2).

Panel (a): epsilon after each round (``metrics.csv`` ``epsilon``) for the B-FDL runs (sample-level
DP-SGD) and the client-level DP demonstration (``runs/client_dp/``), with the target epsilon = 1;
the accountant and delta come from each run's ``summary.json``.
Panel (b): the noise multiplier an accountant needs for epsilon = 1 at client level and at sample
level, from ``runs/privacy_budget/noise_for_eps1.json`` (written by the reproduction's
privacy-budget stage, which calibrates with ``dp_accounting``).

Writes ``privacy_budget.{png,pdf,csv,md}``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bfdl_tff.io_utils import atomic_write_text
from paper_figures import results as R
from paper_figures.common import Output
from paper_figures.style import fmt, markdown_table, new_figure, no_data, save_figure, write_csv

NAME = "privacy_budget"


def _short(r: object) -> str:
    """Tick label: level, rounds and sampling rate (the full setting name is in the CSV)."""
    level = getattr(r, "level", "")
    rounds = getattr(r, "rounds", "")
    q = getattr(r, "sampling_rate", None)
    return f"{level}-level\n{rounds} rounds\nq={fmt(q, 3)}"


def compute(runs_root: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[Path]]:
    runs_root = Path(runs_root)
    recs, sources = [], []
    groups = (("sample-level (B-FDL arm)", [r for r in R.load_group(runs_root, R.ARMS_DIR) if r.arm == "bfdl"]),
              ("client-level demo", R.load_group(runs_root, R.CLIENT_DP_DIR)))
    for label, runs in groups:
        for run in runs:
            df = run.metrics()
            if df is None or "epsilon" not in df.columns:
                continue
            eps = pd.to_numeric(df["epsilon"], errors="coerce")
            if eps.notna().sum() == 0:
                continue
            sources += [run.metrics_file, run.summary_file]
            for rnd, e in zip(df["round"], eps):
                if e == e:
                    recs.append({"series": label, "run": run.name, "round": int(rnd), "epsilon": float(e),
                                 "delta": R.as_float(run.get("delta")), "accountant": run.get("accountant"),
                                 "noise_multiplier": R.as_float(run.get("noise_multiplier")),
                                 "mode": run.get("privacy_mode") or (run.config.get("privacy") or {}).get("mode")})
    per_round = pd.DataFrame.from_records(
        recs, columns=["series", "run", "round", "epsilon", "delta", "accountant", "noise_multiplier", "mode"])
    nm = []
    p = runs_root / R.PRIVACY_BUDGET_FILE
    if p.is_file():
        doc = R.read_json(p)
        sources.append(p)
        for s in doc.get("settings", []):
            nm.append({"setting": s.get("name"), "level": s.get("level"), "rounds": s.get("rounds"),
                       "sampling_rate": s.get("sampling_rate"), "steps": s.get("steps"),
                       "noise_multiplier": s.get("noise_multiplier"), "target_epsilon": doc.get("target_epsilon"),
                       "delta": doc.get("delta"), "accountant": doc.get("accountant")})
    noise = pd.DataFrame.from_records(nm, columns=["setting", "level", "rounds", "sampling_rate", "steps",
                                                   "noise_multiplier", "target_epsilon", "delta", "accountant"])
    return per_round, noise, sources


def generate(runs_root: Path, out_dir: Path) -> Output:
    out = Output(NAME)
    runs_root, out_dir = Path(runs_root), Path(out_dir)
    per_round, noise, sources = compute(runs_root)
    out.read(*sources)
    fig, axes = new_figure(2, 1, width=7.2, height=3.2)
    ax_a, ax_b = axes[0]
    if per_round.empty:
        out.miss(f"{runs_root / R.ARMS_DIR}/bfdl-s*/metrics.csv (epsilon column)")
        no_data(ax_a, "not measured:\nno epsilon in metrics.csv")
    else:
        colors = {"sample-level (B-FDL arm)": "#55A868", "client-level demo": "#C44E52"}
        for run in dict.fromkeys(per_round["run"] + "|" + per_round["series"]):
            name, series = run.split("|", 1)
            s = per_round[(per_round["run"] == name) & (per_round["series"] == series)]
            ax_a.plot(s["round"], s["epsilon"], "o-", ms=3, color=colors.get(series), label=f"{series}: {name}")
        ax_a.axhline(1.0, color="black", ls="--", lw=0.8, label="target epsilon = 1")
        ax_a.set_xlabel("round")
        ax_a.xaxis.get_major_locator().set_params(integer=True)
        ax_a.set_ylabel("epsilon spent")
        ax_a.set_title("(a) Cumulative epsilon per round")
        ax_a.legend(fontsize=6)
    if noise.empty:
        out.miss(str(runs_root / R.PRIVACY_BUDGET_FILE))
        no_data(ax_b, "not measured:\nno noise_for_eps1.json")
    else:
        xs = np.arange(len(noise))
        ax_b.bar(xs, noise["noise_multiplier"].astype(float), color=["#C44E52" if lv == "client" else "#55A868"
                                                                      for lv in noise["level"]])
        ax_b.set_yscale("log")
        ax_b.set_xticks(xs, [_short(r) for r in noise.itertuples()], fontsize=6.5)
        ax_b.set_ylabel("noise multiplier for epsilon = 1")
        ax_b.set_title("(b) Noise needed for epsilon = 1")
        for x, z in zip(xs, noise["noise_multiplier"].astype(float)):
            ax_b.annotate(f"{z:.2f}", (x, z), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=7)
    out.files += save_figure(fig, out_dir / NAME)
    out.files.append(write_csv(per_round, out_dir / f"{NAME}.csv"))
    out.files.append(write_csv(noise, out_dir / f"{NAME}_noise.csv"))
    lines = ["# Privacy budget (claim C9)\n"]
    if not per_round.empty:
        last = per_round.sort_values(["series", "run", "round"], kind="stable").groupby(["series", "run"]).tail(1)
        lines.append(markdown_table(
            ["Run", "Level", "Rounds", "Final epsilon", "delta", "Accountant", "Noise multiplier"],
            [[r.run, r.series, r.round, fmt(r.epsilon), fmt(r.delta, 2), r.accountant, fmt(r.noise_multiplier)]
             for r in last.itertuples()]))
    if not noise.empty:
        lines.append("\n" + markdown_table(
            ["Setting", "Level", "Rounds", "Sampling rate", "Steps", "Noise multiplier for eps=1", "delta", "Accountant"],
            [[r.setting, r.level, r.rounds, fmt(r.sampling_rate, 4), r.steps, fmt(r.noise_multiplier), fmt(r.delta, 2),
              r.accountant] for r in noise.itertuples()]))
    if out.missing:
        lines.append("\nnot measured (missing " + ", ".join(out.missing) + ")\n")
    atomic_write_text(out_dir / f"{NAME}.md", "\n".join(lines))
    out.files.append(out_dir / f"{NAME}.md")
    return out
