"""``python -m paper_figures figures|report`` and the ``bfdl figures`` / ``bfdl report`` wrappers that
run it as a subprocess (bfdl_tff never imports paper_figures), on FIXTURE result files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bfdl_tff import cli
from bfdl_tff.config import REPO_ROOT

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "results" / "runs"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "runs"
    shutil.copytree(FIXTURES, root)
    return root


def test_bfdl_figures_and_report_run_paper_figures(runs, tmp_path, capfd):
    out = tmp_path / "results"
    assert cli.main(["figures", "--runs", str(runs), "--out", str(out), "--only", "table33"]) == 0
    assert (out / "table33.md").is_file() and not (out / "fig2_performance.png").exists()
    assert "table33: table33.csv, table33_ci.csv, table33.md" in capfd.readouterr().out
    assert cli.main(["report", "--runs", str(runs), "--out", str(out), "--no-figures"]) == 0
    text = capfd.readouterr().out
    assert "report: wrote" in text and (out / "REPORT.md").is_file() and (out / "expected_results.md").is_file()
    assert "| C1 |" in (out / "REPORT.md").read_text()


def test_bad_input_is_one_line_and_exit_2(runs, tmp_path, capfd):
    assert cli.main(["figures", "--runs", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "runs directory not found" in err[0] and str(tmp_path / "none") in err[0]
    assert cli.main(["figures", "--runs", str(runs), "--out", str(tmp_path / "o"), "--only", "fig9"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown figure" in err[0] and "table33" in err[0]
    assert not (tmp_path / "o" / "figures_manifest.json").exists()


def test_paper_figures_runs_without_tensorflow_or_training_code(runs, tmp_path):
    """The one-way rule at run time (the AST rule is in tests/test_architecture.py): generating
    every figure and the report loads no TensorFlow and nothing of bfdl_tff above the base layer."""
    probe = ("import sys, runpy; sys.argv = ['paper_figures', 'report', '--runs', sys.argv[1], '--out', sys.argv[2]]\n"
             "try:\n    runpy.run_module('paper_figures', run_name='__main__')\nexcept SystemExit as e:\n"
             "    assert not e.code, e.code\n"
             "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_federated', 'keras')\n"
             "             or (m.startswith('bfdl_tff.') and m not in ('bfdl_tff.runs', 'bfdl_tff.config',\n"
             "                 'bfdl_tff.io_utils', 'bfdl_tff.errors', 'bfdl_tff.stats')))\n"
             "print('LOADED', bad)\n")
    log = tmp_path / "probe.log"
    with open(log, "w") as fh:
        rc = subprocess.run([sys.executable, "-c", probe, str(runs), str(tmp_path / "out")], cwd=REPO_ROOT,
                            stdout=fh, stderr=subprocess.STDOUT, timeout=300).returncode
    text = log.read_text()
    assert rc == 0, text[-2000:]
    assert "LOADED []" in text
    assert (tmp_path / "out" / "REPORT.md").is_file()
