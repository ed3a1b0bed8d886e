"""``bfdl figures --runs runs/ --out results/``: Table 3.3 and Figures 2-5 plus the ledger,
communication and privacy-budget tables, regenerated from result files only.

The figures are drawn by the ``paper_figures`` package, which reads result files and never
imports training code; ``bfdl_tff`` never imports it either (dependencies point one way: results
-> figures). This command and the reproduction's figures/report stages run it as a subprocess,
``python -m paper_figures figures|report --runs R --out O`` (:func:`run_paper_figures`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from bfdl_tff.config import REPO_ROOT


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("figures", help="regenerate Table 3.3, Figures 2-5 and the tables from result files")
    p.add_argument("--runs", default="runs", help="runs root (default: runs)")
    p.add_argument("--out", default="results", help="output directory (default: results)")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="only this figure/table (repeatable; `python -m paper_figures figures --help` lists them)")
    p.set_defaults(func=run)


def paper_figures_argv(action: str, *, runs: Path, out: Path, options: Sequence[str] = ()) -> list[str]:
    """The command line of ``python -m paper_figures ACTION`` (paths made absolute)."""
    return [sys.executable, "-m", "paper_figures", action, "--runs", str(Path(runs).resolve()),
            "--out", str(Path(out).resolve()), *options]


def run_paper_figures(action: str, *, runs: Path, out: Path, options: Sequence[str] = (),
                      capture: bool = False) -> subprocess.CompletedProcess:
    """Run ``python -m paper_figures ACTION`` from the repository root (where the package lives).

    Its output goes to this process's stdout/stderr, or is returned with ``capture=True``
    (``paper_figures`` imports no TensorFlow, so a pipe is safe)."""
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run(paper_figures_argv(action, runs=runs, out=out, options=options), cwd=REPO_ROOT, env=env,
                          stdin=subprocess.DEVNULL, capture_output=capture, text=True, check=False)


def run(args: argparse.Namespace) -> int:
    options = [x for name in args.only for x in ("--only", name)]
    return run_paper_figures("figures", runs=Path(args.runs), out=Path(args.out), options=options).returncode


__all__ = ["paper_figures_argv", "register", "run", "run_paper_figures"]
