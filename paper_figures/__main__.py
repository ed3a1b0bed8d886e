"""``python -m paper_figures figures|report --runs R --out O`` (and ``real-data --set LABEL=RUNS --out O``,
issue 15: :mod:`paper_figures.real_data`): the paper's figures, tables and
``REPORT.md`` from result files only (what ``bfdl figures`` / ``bfdl report`` and the reproduction
run as a subprocess; ``bfdl_tff`` never imports this package).

``figures [--only NAME ...]`` writes Table 3.3, Figures 2-5 and the ledger / communication /
privacy-budget tables and ``figures_manifest.json``; ``report [--no-figures]`` regenerates the
figures (unless ``--no-figures``), then writes ``REPORT.md`` (claims C1-C14, paper vs measured)
and ``expected_results.md``. Bad input: one line ``paper_figures: error: ...``, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from bfdl_tff.errors import BfdlError, RunDirError


def build_parser() -> argparse.ArgumentParser:
    import paper_figures

    p = argparse.ArgumentParser(prog="python -m paper_figures", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, what in (("figures", "Table 3.3, Figures 2-5 and the tables"),
                       ("report", "REPORT.md (claims C1-C14) and expected_results.md")):
        a = sub.add_parser(name, help=what)
        a.add_argument("--runs", default="runs", help="runs root (default: runs)")
        a.add_argument("--out", default="results", help="output directory (default: results)")
        if name == "figures":
            a.add_argument("--only", action="append", default=[], metavar="NAME",
                           help="only this figure/table (repeatable): " + ", ".join(paper_figures.MODULES))
        else:
            a.add_argument("--no-figures", action="store_true", help="do not regenerate the figures first")
    rd = sub.add_parser("real-data", help="the 'Real data' section (issue 15): arms on real X-rays beside MedMNIST's table")
    rd.add_argument("--set", action="append", default=[], metavar="LABEL=RUNS_DIR",
                    help="one real-data experiment: its label and runs directory (repeatable)")
    rd.add_argument("--runs", default="", help="with --label: one experiment's runs root (the reproduction's form)")
    rd.add_argument("--label", default="", help="with --runs: that experiment's label")
    rd.add_argument("--out", default="results", help="output directory (default: results)")
    return p


def real_data(specs: Sequence[str], out: Path) -> int:
    from paper_figures.real_data import build_real_data, parse_set

    path = build_real_data([parse_set(s) for s in specs], out)
    print(f"real-data: wrote {path} and {path.with_suffix('.json')}")
    return 0


def figures(runs: Path, out: Path, only: Sequence[str] = ()) -> int:
    import paper_figures

    unknown = [n for n in only if n not in paper_figures.MODULES]
    if unknown:
        raise RunDirError(f"--only {', '.join(unknown)}: unknown figure (known: {', '.join(paper_figures.MODULES)})")
    manifest = paper_figures.generate_all(runs, out, only=tuple(only))
    for name, d in manifest.items():
        line = f"{name}: {', '.join(d['files'])}"
        if d["missing"]:
            line += f"  [not measured: missing {', '.join(d['missing'])}]"
        print(line)
    print(f"figures: wrote {out / 'figures_manifest.json'}")
    return 0


def report(runs: Path, out: Path, *, with_figures: bool) -> int:
    import paper_figures
    from paper_figures.expected_results import build_expected_results
    from paper_figures.report import build_report

    if with_figures:
        paper_figures.generate_all(runs, out)
    path = build_report(runs, out)
    n_missing = path.read_text(encoding="utf-8").count("not measured (missing")
    print(f"report: wrote {path} ({n_missing} 'not measured' entries)")
    print(f"report: wrote {build_expected_results(runs, out)} (README 'Expected results' section)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.action == "real-data":
        try:
            specs = list(args.set) + ([f"{args.label}={args.runs}"] if args.label or args.runs else [])
            if not specs:
                raise RunDirError("real-data: give --set LABEL=RUNS_DIR or --label LABEL --runs RUNS_DIR")
            return real_data(specs, Path(args.out))
        except BfdlError as e:
            print(f"paper_figures: error: {e}", file=sys.stderr)
            return e.exit_code
    runs, out = Path(args.runs), Path(args.out)
    try:
        if not runs.is_dir():
            raise RunDirError(f"{runs}: runs directory not found (run scripts/reproduce_all.sh or bfdl train first)")
        if args.action == "figures":
            return figures(runs, out, args.only)
        return report(runs, out, with_figures=not args.no_figures)
    except BfdlError as e:
        print(f"paper_figures: error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
