"""``bfdl report --runs runs/ --out results/``: ``results/REPORT.md``, claims C1-C14 (paper vs
this repository, with the result file behind every number; ``paper_figures.report``).

Regenerates the figures first unless ``--no-figures`` (the report lists them). No TF import.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bfdl_tff.errors import RunDirError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write results/REPORT.md (paper vs measured, claims C1-C14)")
    p.add_argument("--runs", default="runs", help="runs root (default: runs)")
    p.add_argument("--out", default="results", help="output directory (default: results)")
    p.add_argument("--no-figures", action="store_true", help="do not regenerate the figures first")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bfdl_tff.commands.figures import import_paper_figures

    paper_figures = import_paper_figures()
    from paper_figures.report import build_expected_results, build_report

    runs = Path(args.runs)
    if not runs.is_dir():
        raise RunDirError(f"{runs}: runs directory not found (run scripts/reproduce_all.sh or bfdl train first)")
    out = Path(args.out)
    if not args.no_figures:
        paper_figures.generate_all(runs, out)
    path = build_report(runs, out)
    text = path.read_text(encoding="utf-8")
    n_missing = text.count("not measured (missing")
    print(f"report: wrote {path} ({n_missing} 'not measured' entries)")
    print(f"report: wrote {build_expected_results(runs, out)} (README 'Expected results' section)")
    return 0
