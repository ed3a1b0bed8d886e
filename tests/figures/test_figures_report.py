"""results/REPORT.md on FIXTURE result files (made-up numbers in the documented schema): every
claim C1-C14 has a row, every number names the file it came from, missing files read
"not measured (missing FILE)", and the two doubtful claims are settled from the numbers."""

from __future__ import annotations

import glob
import json
import re
import shutil
import statistics
from pathlib import Path

import pytest

import paper_figures
from paper_figures.report import build_report
from paper_figures.style import fmt

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "results" / "runs"


def _claim_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^\| (C\d+) \|", line)
        if m:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[m.group(1)] = cells
    return rows


def _expand(pattern: str, base: Path) -> list[Path]:
    # runs/arms/bfdl-s{0,1,2}/summary.json -> the three files
    m = re.match(r"^(.*)\{([^}]*)\}(.*)$", pattern)
    names = [m.group(1) + x + m.group(3) for x in m.group(2).split(",")] if m else [pattern]
    return [base / n for n in names]


@pytest.fixture()
def tree(tmp_path) -> Path:
    shutil.copytree(FIXTURES, tmp_path / "runs")
    return tmp_path


def _report(tree: Path, *, all_figures: bool = False) -> str:
    # the report reads figures_manifest.json for C13 only; the full set is exercised once
    paper_figures.generate_all(tree / "runs", tree / "results", only=() if all_figures else ("table33",))
    return build_report(tree / "runs", tree / "results").read_text()


def test_every_claim_has_a_row_with_existing_sources(tree):
    text = _report(tree, all_figures=True)
    rows = _claim_rows(text)
    assert sorted(rows, key=lambda c: int(c[1:])) == [f"C{i}" for i in range(1, 15)]
    for cid in [f"C{i}" for i in range(1, 12) if i != 8]:
        cells = rows[cid]
        assert len(cells) == 5, cid
        assert "not measured" not in cells[2], (cid, cells[2])
        assert cells[4], f"{cid} names no source file"
        for pat in cells[4].split(", "):
            for p in _expand(pat, tree):
                assert p.is_file(), f"{cid}: source {p} does not exist"
    assert "SYNTHETIC" in text
    assert "fixture-platform, 2 CPUs" in text  # read from environment.json
    assert "fig4_scalability.png" in rows["C13"][2]


def test_numbers_are_the_measured_ones(tree):
    text = _report(tree)
    rows = _claim_rows(text)
    vals = [json.loads((tree / "runs" / "arms" / f"bfdl-s{s}" / "summary.json").read_text())["final_macro_auc"] for s in range(3)]
    expect = f"B-FDL: {statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f} (n=3)"
    assert expect in rows["C1"][2]
    bench = json.loads((tree / "runs" / "ledger_bench" / "bench.json").read_text())
    assert f"{fmt(bench['tx_per_s'], 1)} tx/s" in rows["C6"][2]
    assert "runs/ledger_bench/bench.json" in rows["C6"][4]
    # doubtful claims: the three quantities side by side, and the client-DP verdict from its AUC
    assert "## Doubtful claim 1" in text and "All-negative baseline accuracy" in text
    cdp = json.loads((tree / "runs" / "client_dp" / "bfdl-s0" / "summary.json").read_text())["final_macro_auc"]
    assert f"reaches macro AUC {cdp:.3f}" in text
    assert "does not learn usefully" in text  # fixture client-DP AUC is within 0.05 of chance
    # accounting: accountant and delta beside every epsilon
    acc = text.split("## Privacy accounting")[1].split("##")[0]
    assert acc.count("| rdp |") == 13 and "1e-05" in acc


def test_missing_files_say_not_measured(tree):
    (tree / "runs" / "ledger_bench" / "bench.json").unlink()
    shutil.rmtree(tree / "runs" / "client_dp")
    for p in (tree / "runs").glob("arms/*/attacks"):
        shutil.rmtree(p)
    text = _report(tree)
    rows = _claim_rows(text)
    assert "not measured (missing runs/ledger_bench/bench.json)" in rows["C6"][2]
    assert "tx/s" not in rows["C6"][2]
    assert "not measured (missing runs/arms/bfdl-s*/attacks/inversion.json)" in rows["C3"][2]
    assert "not measured (missing runs/client_dp/*/summary.json)" in text
    assert "## Missing result files" in text
    assert "- runs/ledger_bench/bench.json" in text


def test_no_runs_at_all(tmp_path):
    (tmp_path / "runs").mkdir()
    text = build_report(tmp_path / "runs", tmp_path / "results").read_text()
    rows = _claim_rows(text)
    assert "not measured (missing runs/arms/bfdl-s*/summary.json)" in rows["C1"][2]
    for cells in rows.values():  # no measured number in any "This repo" cell
        assert not re.search(r"\d\.\d{3}", cells[2]), cells
    assert glob.glob(str(tmp_path / "results" / "REPORT.md"))
