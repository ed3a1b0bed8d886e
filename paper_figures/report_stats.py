"""REPORT sections with intervals (issue 14.3, 14.4): the privacy-utility curve (B-FDL at each
epsilon against the federated and centralized arms) and the per-arm confidence intervals and
paired differences read from ``runs/statistics/arms_ci.json`` (written by the reproduction's
``statistics`` stage with :mod:`bfdl_tff.stats`; this module only reads it)."""

from __future__ import annotations

import math
from typing import Any

from paper_figures import intervals as I
from paper_figures import privacy_utility as PU
from paper_figures import results as R
from paper_figures.common import Output
from paper_figures.report_context import ReportContext
from paper_figures.style import markdown_table

STATS_FILE = I.STATS_FILE


def _num(v: Any, digits: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.{digits}f}"


def _ci(mean: Any, low: Any, high: Any, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "not measured"
    if low is None or high is None or any(isinstance(x, float) and math.isnan(x) for x in (low, high)):
        return _num(mean, digits)
    return f"{_num(mean, digits)} [{_num(low, digits)}, {_num(high, digits)}]"


def privacy_utility_section(ctx: ReportContext) -> str:
    """``## Privacy-utility curve``: the rows of ``privacy_utility.csv`` as a table."""
    out = Output(PU.NAME)
    df = PU.compute(ctx.runs, out)
    head = "## Privacy-utility curve (B-FDL at each epsilon)\n\n"
    if not (df["kind"] == "point").any():
        return head + ctx.missing_text(str(ctx.runs / PU.POINTS_FILE)) + "\n"
    rows = []
    for _, r in df.iterrows():
        what = f"B-FDL, {r['label']}" if r["kind"] == "point" else f"{r['label']} arm (no DP)"
        rows.append([what, int(r["n_seeds"]), r["seeds"], _ci(r["mean"], r["ci_low"], r["ci_high"]),
                     _num(r["achieved_epsilon_max"], 3) if r["kind"] == "point" and not r["no_noise"] else "-",
                     r["sources"].replace(";", ", ")])
    note = ("Test macro AUC, mean and 95 % Student-t interval over seeds (interval only where a point has more than "
            "one seed). The curve's own runs have the ledger off (it does not change training); the points at the "
            "arms' epsilon are the arms' B-FDL runs. 'no noise' = patient-level DP-SGD with clipping only "
            "(noise multiplier 1e-7): the cost of clipping alone. Figure: `privacy_utility.png` (CSV: "
            "`privacy_utility.csv`).\n\n")
    return head + note + markdown_table(["Setting", "seeds (n)", "seeds", "test macro AUC [95 % CI]",
                                         "epsilon reached (summary.json)", "Source (under runs/)"], rows)


def intervals_section(ctx: ReportContext) -> str:
    """``## Confidence intervals``: Table 3.3's macro AUC with intervals and the paired differences."""
    doc, path = I.load(ctx.runs)
    head = "## Confidence intervals: macro AUC per arm and paired differences (Table 3.3)\n\n"
    if doc is None:
        return head + ctx.missing_text(str(path)) + "\n"
    return head + I.markdown(doc, ctx.rel(path))


__all__ = ["STATS_FILE", "intervals_section", "privacy_utility_section"]
