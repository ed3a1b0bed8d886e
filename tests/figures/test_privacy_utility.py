"""paper_figures.privacy_utility on FIXTURE result files (made-up numbers, not results): the CSV holds
what is plotted (one row per epsilon, the no-noise point last, the reference arms), means and
t-intervals over seeds recomputed here from the fixture summaries, intervals only where a point has
more than one seed, and a missing index gives "not measured"."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pandas as pd
import pytest

from paper_figures import privacy_utility as PU
from paper_figures.report import build_report

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "results" / "runs"
T_975_DF2 = 4.302652729911275  # Student t quantile, 2 degrees of freedom


@pytest.fixture()
def runs(tmp_path) -> Path:
    root = tmp_path / "runs"
    shutil.copytree(FIXTURES, root)
    return root


def _macro(run: Path) -> float:
    s = json.loads((run / "summary.json").read_text())
    return float(s.get("macro_auc", s.get("final_macro_auc")))


def test_csv_is_what_is_plotted(runs, tmp_path):
    out = PU.generate(runs, tmp_path / "out")
    assert {p.name for p in out.files} == {"privacy_utility.png", "privacy_utility.pdf", "privacy_utility.csv"}
    assert not out.missing
    df = pd.read_csv(tmp_path / "out" / "privacy_utility.csv")
    pts = df[df["kind"] == "point"]
    assert list(pts["epsilon"].fillna(-1)) == [0.5, 1.0, 8.0, -1]  # sorted, no-noise last
    assert list(pts["no_noise"]) == [False, False, False, True]
    eps1 = pts[pts["epsilon"] == 1.0].iloc[0]
    vals = [_macro(runs / "arms" / f"bfdl-s{s}") for s in (0, 1, 2)]
    m, sd = statistics.mean(vals), statistics.stdev(vals)
    assert eps1["n_seeds"] == 3 and eps1["mean"] == pytest.approx(m, abs=1e-5)
    assert eps1["ci_low"] == pytest.approx(m - T_975_DF2 * sd / 3 ** 0.5, abs=1e-5)
    assert eps1["ci_high"] == pytest.approx(m + T_975_DF2 * sd / 3 ** 0.5, abs=1e-5)
    single = pts[pts["n_seeds"] == 1]
    assert len(single) == 3 and single["ci_low"].isna().all()  # no interval from one seed
    assert single.iloc[0]["mean"] == pytest.approx(_macro(runs / "privacy_utility" / "eps0.5-s0"), abs=1e-6)
    arms = df[df["kind"] == "arm"].set_index("label")
    assert set(arms.index) == {"federated", "centralized"}
    fed = [_macro(runs / "arms" / f"federated-s{s}") for s in (0, 1, 2)]
    assert arms.loc["federated", "mean"] == pytest.approx(statistics.mean(fed), abs=1e-5)
    assert arms.loc["federated", "ci_low"] < arms.loc["federated", "mean"] < arms.loc["federated", "ci_high"]


def test_missing_index_is_not_measured(runs, tmp_path):
    (runs / "privacy_utility" / "points.json").unlink()
    out = PU.generate(runs, tmp_path / "out")
    assert any("points.json" in m for m in out.missing)
    df = pd.read_csv(tmp_path / "out" / "privacy_utility.csv")
    assert not (df["kind"] == "point").any()  # nothing invented; the arms' lines are still listed
    report = build_report(runs, tmp_path / "out").read_text()
    assert "## Privacy-utility curve" in report and "not measured" in report.split("## Privacy-utility curve")[1][:400]


def test_unfinished_point_is_reported_missing(runs, tmp_path):
    (runs / "privacy_utility" / "eps8-s0" / "summary.json").unlink()
    out = PU.generate(runs, tmp_path / "out")
    assert any("eps8-s0" in m for m in out.missing)
    df = pd.read_csv(tmp_path / "out" / "privacy_utility.csv")
    assert 8.0 not in set(df["epsilon"].dropna())


def test_report_section_lists_every_point(runs, tmp_path):
    report = build_report(runs, tmp_path / "out").read_text()
    sec = report.split("## Privacy-utility curve")[1].split("\n## ")[0]
    assert "B-FDL, epsilon 0.5" in sec and "B-FDL, no noise" in sec and "federated arm (no DP)" in sec
    assert "privacy_utility/eps8-s0/summary.json" in sec
