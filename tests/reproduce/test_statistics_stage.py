"""The statistics stage (issue 14.4) on FIXTURE runs with predictions (made-up numbers): one set of
findings for every seed and arm (a finding without test positives in any run is excluded
everywhere and named, never scored 0.5), macro AUCs recomputed here, t intervals over seeds, the
paired differences over seeds, bootstrap intervals that contain the point estimate, and what
Table 3.3, Figure 2 and the report show of it."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bfdl_tff.errors import RunDirError
from bfdl_tff.reproduce.statistics import arms_statistics
from bfdl_tff.runs import RunDir
from bfdl_tff.stats import roc_auc, t_quantile

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "results" / "runs"


@pytest.fixture(scope="module")
def doc() -> dict:
    return arms_statistics(FIXTURES, n_boot=200, seed=0)


def test_same_findings_for_every_run_and_undefined_never_half(doc):
    assert "Hernia" not in doc["macro_labels"] and len(doc["macro_labels"]) == 13
    assert doc["excluded_labels"]["Hernia"] == [f"{a}-s1: no positives" for a in ("bfdl", "centralized", "federated")]
    run = RunDir.open(FIXTURES / "arms" / "federated-s0")
    p = run.load_predictions()
    idx = [p.labels.index(lab) for lab in doc["macro_labels"]]
    expected = np.mean([roc_auc(p.y_true[:, j], p.scores[:, j]) for j in idx])  # Hernia left out in seed 0 too
    got = next(r for r in doc["arms"]["federated"]["runs"] if r["seed"] == 0)
    assert got["macro_auc"] == pytest.approx(expected, abs=1e-12)
    assert got["n_test_images"] == 120 and got["positives"]["min"] == int(p.y_true[:, idx].sum(0).min())
    b = got["bootstrap"]
    assert b["low"] < got["macro_auc"] < b["high"] and b["n_boot"] == 200


def test_intervals_over_seeds_and_paired_differences(doc):
    aucs = {a: {r["seed"]: r["macro_auc"] for r in d["runs"]} for a, d in doc["arms"].items()}
    for arm, vals in aucs.items():
        s = doc["arms"][arm]["over_seeds"]
        v = list(vals.values())
        half = t_quantile(0.975, 2) * statistics.stdev(v) / 3 ** 0.5
        assert s["n"] == 3 and s["mean"] == pytest.approx(statistics.mean(v))
        assert (s["low"], s["high"]) == pytest.approx((statistics.mean(v) - half, statistics.mean(v) + half))
    d = doc["paired"]["centralized - federated"]
    diffs = [aucs["centralized"][k] - aucs["federated"][k] for k in (0, 1, 2)]
    assert d["differences"] == pytest.approx(diffs) and d["mean"] == pytest.approx(statistics.mean(diffs))
    assert set(doc["paired"]) == {"centralized - federated", "federated - bfdl"}


def test_runs_without_predictions_fall_back_to_their_summary(tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(FIXTURES / "arms", root / "arms")
    shutil.rmtree(root / "arms" / "bfdl-s2" / "predictions")
    d = arms_statistics(root, n_boot=50)
    r = next(x for x in d["arms"]["bfdl"]["runs"] if x["seed"] == 2)
    summary = json.loads((root / "arms" / "bfdl-s2" / "summary.json").read_text())
    assert r["source"] == "summary.json" and r["bootstrap"] is None
    assert r["macro_auc"] == pytest.approx(summary["final_macro_auc"])
    with pytest.raises(RunDirError, match="no finished arm runs"):
        arms_statistics(tmp_path / "empty")


def test_fixture_stats_file_is_current_and_shown(tmp_path, doc):
    """The checked-in fixture arms_ci.json is what the stage writes; Table 3.3, Figure 2 and the
    report show its intervals, the finding set and the positives."""
    fixture = json.loads((FIXTURES / "statistics" / "arms_ci.json").read_text())
    assert fixture["arms"]["bfdl"]["over_seeds"] == pytest.approx(doc["arms"]["bfdl"]["over_seeds"])
    from paper_figures import fig2_performance, table33
    from paper_figures.report import build_report

    out = tmp_path / "out"
    table33.generate(FIXTURES, out)
    md = (out / "table33.md").read_text()
    s = doc["arms"]["centralized"]["over_seeds"]
    assert f"{s['mean']:.3f} [{s['low']:.3f}, {s['high']:.3f}]" in md and "Hernia (bfdl-s1: no positives" in md
    assert "same 13 findings" in md and "centralized - federated" in md
    ci = pd.read_csv(out / "table33_ci.csv")
    assert set(ci["name"]) == {"centralized", "federated", "bfdl", "centralized - federated", "federated - bfdl"}
    fig2_performance.generate(FIXTURES, out)
    f2 = pd.read_csv(out / "fig2_performance.csv")
    row = f2[(f2["metric"] == "macro_auc") & (f2["arm"] == "bfdl")].iloc[0]
    b = doc["arms"]["bfdl"]["over_seeds"]
    assert (row["mean"], row["ci_low"], row["ci_high"]) == pytest.approx((b["mean"], b["low"], b["high"]), abs=1e-5)
    report = build_report(FIXTURES, out).read_text()
    assert "## Confidence intervals" in report and "positives per finding (min / median)" in report
