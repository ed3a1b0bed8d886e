"""The report's shared state: the runs, the Table 3.3 cells, and the "not measured (missing
FILE)" bookkeeping (``results/REPORT.md``, claims C1-C14 of ``docs/CLAIMS.md``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bfdl_tff.config import ARMS
from paper_figures import results as R
from paper_figures import table33 as T
from paper_figures.style import arm_label, fmt


class ReportContext:
    """The runs root and output directory of one report, with the missing-file bookkeeping."""

    def __init__(self, runs_root: Path, out_dir: Path) -> None:
        self.runs = Path(runs_root)
        self.out = Path(out_dir)
        self.base = self.runs.resolve().parent
        self.arm_runs = R.by_arm(R.load_group(self.runs, R.ARMS_DIR))
        self.cells = {(c.metric, c.arm): c for c in T.compute(self.runs)}
        self.missing: list[str] = []

    def rel(self, p: Path | str) -> str:
        try:
            return str(Path(p).resolve().relative_to(self.base))
        except ValueError:
            return str(p)

    def src(self, paths: list[Path]) -> str:
        return R.describe_sources([Path(p).resolve() for p in paths], self.base)

    def missing_text(self, what: str) -> str:
        what_rel = self.rel(what) if not any(ch in what for ch in "*{") else what
        if what_rel not in self.missing:
            self.missing.append(what_rel)
        return f"not measured (missing {what_rel})"

    def pattern(self, group: str, tail: str) -> str:
        return f"{self.rel(self.runs)}/{group}/{tail}"


def measured_text(m: R.Measured, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
    if not m.n:
        return ""
    s = fmt(m.mean * scale, digits) + unit
    if m.n > 1 and m.sd is not None:
        s += f" ± {fmt(m.sd * scale, digits)}{unit}"
    return s + f" (n={m.n})"


def cell(ctx: ReportContext, metric: str, arm: str, need: str, **kw: Any) -> tuple[str, list[Path]]:
    c = ctx.cells.get((metric, arm))
    if c is None or not c.measured.n:
        if c is not None and c.note and arm == "centralized" and metric == "inversion_rate":
            return c.note, []
        return ctx.missing_text(need), []
    return measured_text(c.measured, **kw), list(c.measured.sources)


def arms_line(ctx: ReportContext, metric: str, need_tail: str = "*/summary.json", **kw: Any) -> tuple[str, list[Path]]:
    parts, srcs = [], []
    for arm in ARMS:
        txt, s = cell(ctx, metric, arm, ctx.pattern(R.ARMS_DIR, f"{arm}-s*/" + need_tail.split("/", 1)[-1]), **kw)
        parts.append(f"{arm_label(arm)}: {txt}")
        srcs += s
    return "; ".join(parts), srcs


def all_synthetic(ctx: ReportContext) -> bool:
    runs = [r for a in ARMS for r in ctx.arm_runs.get(a, [])]
    return bool(runs) and all(bool(r.get("synthetic")) or R._dig(r.config, "data.source") == "synthetic" for r in runs)


__all__ = ["ReportContext", "all_synthetic", "arms_line", "cell", "measured_text"]
