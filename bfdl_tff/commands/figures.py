"""``bfdl figures --runs runs/ --out results/``: Table 3.3 and Figures 2-5 plus the ledger,
communication and privacy-budget tables, regenerated from result files only (``paper_figures``).

Prints one line per figure/table with the files written and the result files that were missing
(a missing input gives a "not measured" panel, never invented data). No TensorFlow import.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bfdl_tff.errors import RunDirError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("figures", help="regenerate Table 3.3, Figures 2-5 and the tables from result files")
    p.add_argument("--runs", default="runs", help="runs root (default: runs)")
    p.add_argument("--out", default="results", help="output directory (default: results)")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="only this figure/table module (repeatable): " + ", ".join(_modules()))
    p.set_defaults(func=run)


def import_paper_figures():  # noqa: ANN201 - returns the package module
    """``paper_figures`` lives at the repository root beside ``bfdl_tff``. An editable install made
    before the package existed does not map it (rerun ``scripts/setup.sh --force``); fall back to
    the repository root on ``sys.path`` so the command works either way."""
    import importlib
    import sys

    try:
        return importlib.import_module("paper_figures")
    except ModuleNotFoundError as e:
        if e.name != "paper_figures":
            raise
        from bfdl_tff.config import REPO_ROOT

        sys.path.insert(0, str(REPO_ROOT))
        return importlib.import_module("paper_figures")


def _modules() -> tuple[str, ...]:
    return import_paper_figures().MODULES


def run(args: argparse.Namespace) -> int:
    paper_figures = import_paper_figures()
    runs = Path(args.runs)
    if not runs.is_dir():
        raise RunDirError(f"{runs}: runs directory not found (run scripts/reproduce_all.sh or bfdl train first)")
    unknown = [n for n in args.only if n not in paper_figures.MODULES]
    if unknown:
        raise RunDirError(f"--only {', '.join(unknown)}: unknown figure (known: {', '.join(paper_figures.MODULES)})")
    manifest = paper_figures.generate_all(runs, Path(args.out), only=tuple(args.only))
    for name, d in manifest.items():
        line = f"{name}: {', '.join(d['files'])}"
        if d["missing"]:
            line += f"  [not measured: missing {', '.join(d['missing'])}]"
        print(line)
    print(f"figures: wrote {Path(args.out) / 'figures_manifest.json'}")
    return 0
