"""paper_figures on FIXTURE result files (tests/fixtures/results/runs: made-up numbers in the
documented schema, not results): every module writes PNG + PDF + CSV, reruns are byte-identical,
plotted numbers equal the ones recomputed here from the fixture files, and missing inputs give
"not measured" instead of invented data."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pandas as pd
import pytest

import paper_figures
from paper_figures import results as R

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "results" / "runs"

EXPECTED = {
    "table33": ["table33.csv", "table33_ci.csv", "table33.md"],
    "fig2_performance": ["fig2_performance.png", "fig2_performance.pdf", "fig2_performance.csv"],
    "fig3_privacy": ["fig3_privacy.png", "fig3_privacy.pdf", "fig3_privacy.csv"],
    "fig4_scalability": ["fig4_scalability.png", "fig4_scalability.pdf", "fig4_scalability.csv", "scalability.csv"],
    "fig5_convergence": ["fig5_convergence.png", "fig5_convergence.pdf", "fig5_convergence.csv"],
    "ledger_tables": ["ledger_tables.png", "ledger_tables.pdf", "ledger_tables.csv", "ledger_tables.md"],
    "ledger_latency": ["ledger_latency.png", "ledger_latency.pdf", "ledger_latency.csv", "ledger_latency.md"],
    "communication": ["communication.png", "communication.pdf", "communication.csv", "communication.md"],
    "privacy_budget": ["privacy_budget.png", "privacy_budget.pdf", "privacy_budget.csv", "privacy_budget.md"],
    "privacy_utility": ["privacy_utility.png", "privacy_utility.pdf", "privacy_utility.csv"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fx") / "runs"
    shutil.copytree(FIXTURES, root)
    return root


@pytest.fixture(scope="module")
def generated(runs: Path, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("results1")
    return out, paper_figures.generate_all(runs, out)


def _summaries(runs: Path, arm: str) -> list[dict]:
    return [json.loads((runs / "arms" / f"{arm}-s{s}" / "summary.json").read_text()) for s in range(3)]


def test_every_module_writes_its_files(generated):
    out, manifest = generated
    assert set(manifest) == set(paper_figures.MODULES) == set(EXPECTED)
    for name, files in EXPECTED.items():
        for f in files:
            p = out / f
            assert p.is_file() and p.stat().st_size > 0, f"{name}: {f} missing"
        assert manifest[name]["missing"] == [], name
        assert manifest[name]["sources"], name
    assert (out / "fig2_performance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "fig2_performance.pdf").read_bytes()[:5] == b"%PDF-"
    assert b"CreationDate" not in (out / "fig2_performance.pdf").read_bytes()
    assert b"matplotlib" not in (out / "fig3_privacy.png").read_bytes()


def test_rerun_is_byte_identical(runs, generated, tmp_path):
    out1, _ = generated
    paper_figures.generate_all(runs, tmp_path)
    for files in EXPECTED.values():
        for f in files:
            assert (out1 / f).read_bytes() == (tmp_path / f).read_bytes(), f


def test_table33_numbers_come_from_the_summaries(runs, generated):
    out, _ = generated
    df = pd.read_csv(out / "table33.csv")
    for arm in ("centralized", "federated", "bfdl"):
        vals = [s["final_macro_auc"] for s in _summaries(runs, arm)]
        row = df[(df.metric == "macro_auc") & (df.arm == arm)].iloc[0]
        assert row["mean"] == pytest.approx(statistics.mean(vals), rel=1e-5)
        assert row["sd"] == pytest.approx(statistics.stdev(vals), rel=1e-4)
        assert row["n"] == 3
        assert row["source"] == f"runs/arms/{arm}-s{{0,1,2}}/summary.json"
        acc = [s["per_label_accuracy"] for s in _summaries(runs, arm)]
        row = df[(df.metric == "mean_label_accuracy") & (df.arm == arm)].iloc[0]
        assert row["mean"] == pytest.approx(statistics.mean(acc), rel=1e-5)
    paper = df[(df.metric == "macro_auc") & (df.arm == "bfdl")]["paper"].iloc[0]
    assert paper == pytest.approx(0.948)
    md = (out / "table33.md").read_text()
    assert "no update channel" in md  # centralized inversion cell is not a number


def test_fig2_per_finding_auc_matches_fixture(runs, generated):
    out, _ = generated
    df = pd.read_csv(out / "fig2_performance.csv")
    b = df[(df.panel == "b") & (df.arm == "federated") & (df.metric == "auc_Hernia")].iloc[0]
    expect = statistics.mean(s["per_finding_auc"]["Hernia"] for s in _summaries(runs, "federated"))
    assert b["mean"] == pytest.approx(expect, rel=1e-5)
    assert len(df[(df.panel == "b") & (df.arm == "bfdl")]) == 14


def test_wilson_interval_known_value():
    lo, hi = R.wilson_interval(12, 20)
    assert lo == pytest.approx(0.38659, abs=1e-4) and hi == pytest.approx(0.78121, abs=1e-4)
    assert R.wilson_interval(0, 20)[0] == 0.0


def test_fig3_pools_targets_with_wilson(generated):
    out, _ = generated
    df = pd.read_csv(out / "fig3_privacy.csv")
    row = df[(df.panel == "a") & (df.arm == "federated") & (df.series == "plain_update")].iloc[0]
    assert row["value"] == pytest.approx(0.6) and row["n"] == 20
    assert row["ci_low"] == pytest.approx(0.38659, abs=1e-4)
    bound = df[(df.arm == "bfdl") & (df.series == "dp_bound") & (df.metric == "tpr_at_fpr_0.01")]
    assert bound["value"].iloc[0] == pytest.approx(0.0272)
    assert df[(df.arm == "centralized") & (df.panel == "a")].empty  # no update channel


def test_fig4_scalability_csv(runs, generated):
    out, _ = generated
    df = pd.read_csv(out / "scalability.csv")
    assert list(df.columns) == ["hospitals", "round_sync_s", "ledger_overhead_s", "end_to_end_s", "relative_to_k3"]
    assert list(df.hospitals) == list(range(3, 11))
    assert df.loc[df.hospitals == 3, "relative_to_k3"].iloc[0] == pytest.approx(1.0)
    ls = json.loads((runs / "scalability" / "k7" / "ledger" / "ledger_summary.json").read_text())
    assert df.loc[df.hospitals == 7, "ledger_overhead_s"].iloc[0] == pytest.approx(statistics.mean(ls["ledger_seconds"]), rel=1e-5)
    s10 = json.loads((runs / "scalability" / "k10" / "summary.json").read_text())["wall_s"]
    s3 = json.loads((runs / "scalability" / "k3" / "summary.json").read_text())["wall_s"]
    assert df.loc[df.hospitals == 10, "relative_to_k3"].iloc[0] == pytest.approx(s10 / s3, rel=1e-5)


def test_fig5_and_ledger_and_budget(runs, generated):
    out, _ = generated
    df = pd.read_csv(out / "fig5_convergence.csv")
    assert set(df[df.panel == "c"].series) == {"bfdl_with_ledger", "bfdl_without_ledger"}
    a = df[(df.panel == "a") & (df.series == "centralized") & (df["round"] == 5)].iloc[0]
    vals = [pd.read_csv(runs / "arms" / f"centralized-s{s}" / "metrics.csv")["test_macro_auc"].iloc[-1] for s in range(3)]
    assert a["mean"] == pytest.approx(statistics.mean(vals), rel=1e-5) and a["n"] == 3
    # (b) the server-side test loss, for every arm: the bfdl arm's train_loss is empty by design
    b = df[df.panel == "b"]
    assert set(b.metric) == {"test_loss"} and set(b.series) == {"centralized", "federated", "bfdl"}
    assert pd.read_csv(runs / "arms" / "bfdl-s0" / "metrics.csv")["train_loss"].isna().all()
    for arm in ("bfdl", "federated"):
        row = b[(b.series == arm) & (b["round"] == 3)].iloc[0]
        vals = [pd.read_csv(runs / "arms" / f"{arm}-s{s}" / "metrics.csv")["test_loss"].iloc[2] for s in range(3)]
        assert row["mean"] == pytest.approx(statistics.mean(vals), rel=1e-5) and row["n"] == 3
        assert row["ci_low"] < row["mean"] < row["ci_high"]
    lt = pd.read_csv(out / "ledger_tables.csv").set_index("quantity")
    assert lt.loc["tx_per_s", "mean"] == pytest.approx(850.0)
    assert lt.loc["tx_per_round", "mean"] == pytest.approx(11.0)  # 2K + 5 with K = 3
    ls = json.loads((runs / "arms" / "bfdl-s1" / "ledger" / "ledger_summary.json").read_text())
    assert lt.loc["ledger_ms_per_tx", "max"] >= 1000 * sum(ls["ledger_seconds"]) / sum(ls["tx_per_round"]) - 1e-9
    assert lt.loc["mb_on_chain_per_100_rounds", "mean"] == pytest.approx(9000 * 5 / 5 * 100 / 1e6)
    curve = pd.read_csv(out / "ledger_latency.csv")
    fx = json.loads((runs / "ledger_bench" / "bench.json").read_text())["latency_curve"]
    assert list(curve.tx_per_s) == [c["tx_per_s"] for c in fx]
    assert list(curve.latency_ms_p50) == [c["latency_ms_p50"] for c in fx]
    assert "lowest p50 at >= 2110 tx/s: 24 ms" in (out / "ledger_latency.md").read_text()
    noise = pd.read_csv(out / "privacy_budget_noise.csv")
    assert set(noise.level) == {"client", "sample"}
    comm = pd.read_csv(out / "communication.csv").set_index("arm")
    assert comm.loc["bfdl", "reduction_vs_centralized"] == pytest.approx(1 - 900_000 / 1_200_000)


def test_missing_inputs_are_not_invented(tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(FIXTURES, runs)
    (runs / "ledger_bench" / "bench.json").unlink()
    shutil.rmtree(runs / "scalability")
    for p in runs.glob("arms/*/attacks"):
        shutil.rmtree(p)
    out = tmp_path / "results"
    manifest = paper_figures.generate_all(runs, out, only=("table33", "fig3_privacy", "fig4_scalability", "ledger_tables",
                                                           "ledger_latency"))
    assert any("bench.json" in m for m in manifest["ledger_tables"]["missing"])
    assert any("bench.json" in m for m in manifest["ledger_latency"]["missing"])
    assert pd.read_csv(out / "ledger_latency.csv").empty
    assert manifest["fig4_scalability"]["missing"]
    assert manifest["fig3_privacy"]["missing"]
    assert pd.read_csv(out / "scalability.csv").empty
    assert pd.read_csv(out / "fig3_privacy.csv").empty
    lt = pd.read_csv(out / "ledger_tables.csv")
    assert "tx_per_s" not in set(lt.quantity)
    t = pd.read_csv(out / "table33.csv")
    inv = t[(t.metric == "inversion_rate") & (t.arm == "bfdl")].iloc[0]
    assert inv["n"] == 0 and pd.isna(inv["mean"])
    for f in ("fig3_privacy.png", "fig4_scalability.png"):
        assert (out / f).stat().st_size > 0


def test_empty_runs_root(tmp_path):
    (tmp_path / "runs").mkdir()
    manifest = paper_figures.generate_all(tmp_path / "runs", tmp_path / "out",
                                          only=("table33", "fig2_performance", "fig5_convergence"))
    assert all(manifest[n]["missing"] for n in ("table33", "fig2_performance", "fig5_convergence"))
    assert (tmp_path / "out" / "fig2_performance.png").is_file()


def test_a_failing_module_does_not_stop_the_others(tmp_path, monkeypatch):
    from bfdl_tff.errors import BfdlError
    from paper_figures import fig3_privacy

    def boom(runs_root, out_dir):
        raise RuntimeError("broken")

    monkeypatch.setattr(fig3_privacy, "generate", boom)
    with pytest.raises(BfdlError, match="fig3_privacy: RuntimeError: broken"):
        paper_figures.generate_all(FIXTURES, tmp_path, only=("table33", "fig3_privacy", "communication"))
    manifest = json.loads((tmp_path / "figures_manifest.json").read_text())
    assert manifest["fig3_privacy"]["error"] and (tmp_path / "communication.csv").is_file()


def test_summary_key_aliases():
    s = {"final": {"macro_auc": 0.7}, "precision": {"macro": 0.3}, "all_negative_baseline": [0.9, 1.0]}
    assert R.lookup(s, "macro_auc") == 0.7
    assert R.lookup(s, "precision_macro") == 0.3
    assert R.as_float(R.lookup(s, "all_negative_accuracy")) == pytest.approx(0.95)
    assert R.lookup(s, "recall_macro") is None


def test_single_seed_runs(tmp_path):
    """One seed per arm (the quick profile): sd is undefined, figures still draw."""
    runs = tmp_path / "runs"
    shutil.copytree(FIXTURES, runs)
    for arm in ("centralized", "federated", "bfdl"):
        for s in (1, 2):
            shutil.rmtree(runs / "arms" / f"{arm}-s{s}")
    manifest = paper_figures.generate_all(runs, tmp_path / "out", only=("table33", "fig2_performance", "communication"))
    assert manifest["fig2_performance"]["missing"] == []
    df = pd.read_csv(tmp_path / "out" / "fig2_performance.csv")
    assert set(df["n"]) == {1} and df["sd"].isna().all()
    t = pd.read_csv(tmp_path / "out" / "table33.csv")
    assert "(n=1)" in (tmp_path / "out" / "table33.md").read_text() and t[t.metric == "macro_auc"]["sd"].isna().all()


def test_partial_rerun_keeps_the_manifest(tmp_path):
    paper_figures.generate_all(FIXTURES, tmp_path, only=("table33", "communication"))
    m = paper_figures.generate_all(FIXTURES, tmp_path, only=("communication",))
    assert list(m) == ["table33", "communication"]
    assert json.loads((tmp_path / "figures_manifest.json").read_text())["table33"]["files"] == ["table33.csv", "table33_ci.csv", "table33.md"]
