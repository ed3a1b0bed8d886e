"""``bfdl report --runs runs/ --out results/``: ``results/REPORT.md``, claims C1-C14 (paper vs
this repository, with the result file behind every number) and ``expected_results.md``.

Runs ``python -m paper_figures report`` as a subprocess (see :mod:`bfdl_tff.commands.figures`);
it regenerates the figures first unless ``--no-figures``. No TensorFlow import.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bfdl_tff.commands.figures import run_paper_figures


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write results/REPORT.md (paper vs measured, claims C1-C14)")
    p.add_argument("--runs", default="runs", help="runs root (default: runs)")
    p.add_argument("--out", default="results", help="output directory (default: results)")
    p.add_argument("--no-figures", action="store_true", help="do not regenerate the figures first")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options = ["--no-figures"] if args.no_figures else []
    return run_paper_figures("report", runs=Path(args.runs), out=Path(args.out), options=options).returncode


__all__ = ["register", "run"]
