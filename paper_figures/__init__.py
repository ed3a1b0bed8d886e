"""Figures and tables of the paper, regenerated from the run's own result files (issue 9).

One module per figure/table; each exposes ``NAME`` and ``generate(runs_root, out_dir) -> Output``
and reads only result files (see :mod:`paper_figures.results`). :func:`generate_all` runs every
module and writes ``figures_manifest.json`` (files written, files read, files missing).
The report: :mod:`paper_figures.report`. Command line: ``python -m paper_figures``.

Dependencies point one way (results -> figures): this package imports only the base layer of
``bfdl_tff`` (``runs``, ``config``, ``io_utils``, ``errors``), never training code or TensorFlow,
and ``bfdl_tff`` never imports it (``tests/test_architecture.py``).
"""

from __future__ import annotations

import importlib
import json
import traceback
from pathlib import Path

from bfdl_tff.errors import BfdlError
from bfdl_tff.io_utils import atomic_write_json

MODULES: tuple[str, ...] = (
    "table33",
    "fig2_performance",
    "fig3_privacy",
    "fig4_scalability",
    "fig5_convergence",
    "ledger_tables",
    "ledger_latency",
    "communication",
    "privacy_budget",
    "privacy_utility",
)


def generate_all(runs_root: str | Path, out_dir: str | Path, *, only: tuple[str, ...] = ()) -> dict:
    runs_root, out_dir = Path(runs_root), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict = {}
    mfile = out_dir / "figures_manifest.json"
    if only and mfile.is_file():  # a partial rerun updates its entries, keeps the others
        try:
            manifest = {k: v for k, v in json.loads(mfile.read_text(encoding="utf-8")).items() if k in MODULES}
        except ValueError:
            manifest = {}
    base = runs_root.resolve().parent
    errors = []
    for name in MODULES:
        if only and name not in only:
            continue
        try:
            mod = importlib.import_module(f"paper_figures.{name}")
            res = mod.generate(runs_root, out_dir)
        except Exception as e:  # one broken figure must not stop the others
            traceback.print_exc()
            errors.append(f"{name}: {type(e).__name__}: {e}")
            manifest[name] = {"name": name, "files": [], "sources": [], "missing": [], "error": errors[-1]}
            continue
        d = res.as_dict(None)
        d["files"] = [str(Path(p).name) for p in res.files]
        d["sources"] = sorted({_rel(p, base) for p in res.sources})
        manifest[name] = d
    manifest = {k: manifest[k] for k in MODULES if k in manifest}
    atomic_write_json(mfile, manifest)
    if errors:
        raise BfdlError(f"figures failed ({out_dir / 'figures_manifest.json'}): " + "; ".join(errors))
    return manifest


def _rel(p: Path, base: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(base))
    except ValueError:
        return str(p)
