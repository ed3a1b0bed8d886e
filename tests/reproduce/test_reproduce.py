"""bfdl_tff.reproduce: profiles build valid configs, stage skipping, per-run skip/resume rules,
missing producers fail clearly, and the orchestrator records stages.json (the figures and
report stages are run for real on FIXTURE result files)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from bfdl_tff import reproduce as RP
from bfdl_tff.config import dump_yaml
from bfdl_tff.errors import RunDirError

FIXTURES = Path(__file__).parent / "fixtures" / "results" / "runs"


def _ctx(tmp_path: Path, profile: str = "default", force: bool = False) -> RP.Context:
    return RP.Context(profile=RP.PROFILES[profile], runs=tmp_path / "runs", out=tmp_path / "results",
                      data_root=None, force=force)


def test_profiles_build_valid_arm_configs(tmp_path):
    ctx = _ctx(tmp_path)
    assert len(ctx.profile.seeds) >= 3
    c = ctx.config("centralized", 1, name="x")
    f = ctx.config("federated", 1, name="x")
    b = ctx.config("bfdl", 1, name="x")
    assert (c.arm, c.privacy.mode, c.ledger.enabled) == ("centralized", "none", False)
    assert (f.arm, f.privacy.mode, f.ledger.enabled, f.privacy.secure_sum) == ("federated", "none", False, False)
    assert (b.arm, b.privacy.mode, b.ledger.enabled, b.privacy.secure_sum) == ("bfdl", "sample", True, True)
    assert b.privacy.target_epsilon == 1.0 and b.seed == 1 and b.data.source == "synthetic"
    off = ctx.config("bfdl", 0, name="x", extra={"ledger": {"enabled": False}})
    assert off.ledger.enabled is False and off.privacy.mode == "sample"
    assert ctx.config("bfdl", 0, name="x", extra={"privacy": {"mode": "client"}}).privacy.mode == "client"
    assert ctx.profile.scalability_ks == list(range(3, 11))
    assert RP.PROFILES["paper"].base["model"]["config"] == "resnet50_unet"
    assert RP.PROFILES["paper"].base["data"]["image_size"] == 224


def test_should_skip_rules(tmp_path):
    (tmp_path / "o.json").write_text("{}")
    rec = {"status": "done", "config_hash": "h", "outputs": ["o.json"]}
    assert RP.should_skip(rec, cfg_hash="h", force=False, always=False, base=tmp_path)
    assert not RP.should_skip(rec, cfg_hash="h", force=True, always=False, base=tmp_path)
    assert not RP.should_skip(rec, cfg_hash="other", force=False, always=False, base=tmp_path)
    assert not RP.should_skip(rec, cfg_hash="h", force=False, always=True, base=tmp_path)
    assert not RP.should_skip({**rec, "status": "failed"}, cfg_hash="h", force=False, always=False, base=tmp_path)
    assert not RP.should_skip({**rec, "outputs": ["gone.json"]}, cfg_hash="h", force=False, always=False, base=tmp_path)
    assert not RP.should_skip(None, cfg_hash="h", force=False, always=False, base=tmp_path)
    ctx = _ctx(tmp_path)
    assert RP.config_hash(RP.stage_config(ctx, "arms")) != RP.config_hash(RP.stage_config(_ctx(tmp_path, "quick"), "arms"))


def test_run_one_skips_finished_and_refuses_changed_config(tmp_path):
    ctx = _ctx(tmp_path)
    cfg = ctx.config("federated", 0, name="federated-s0")
    run = tmp_path / "runs" / "arms" / "federated-s0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(dump_yaml(cfg))
    (run / "summary.json").write_text("{}")
    assert RP.run_one(ctx, cfg, run) == run  # skipped: no runner needed
    other = ctx.config("federated", 1, name="federated-s0")
    with pytest.raises(RunDirError, match="different config"):
        RP.run_one(ctx, other, run)


def test_missing_producer_is_reported(tmp_path):
    with pytest.raises(RP.ProducerMissing, match="no_such_module"):
        RP._import("bfdl_tff.no_such_module", "run", what="x")
    with pytest.raises(RP.ProducerMissing, match="nothing_here"):
        RP._import("bfdl_tff.reproduce", "nothing_here", what="x")


def test_orchestrator_records_stages_and_skips(tmp_path, capsys):
    shutil.copytree(FIXTURES, tmp_path / "runs")
    argv = ["--profile", "quick", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "results")]
    assert RP.main(argv + ["--stage", "figures", "--stage", "report"]) == 0
    state = json.loads((tmp_path / "results" / "stages.json").read_text())
    assert state["profile"] == "quick"
    for name in ("figures", "report"):
        rec = state["stages"][name]
        assert rec["status"] == "done" and rec["seconds"] > 0 and rec["config"]["profile"] == "quick"
        assert (tmp_path / rec["log"]).is_file()
    assert state["stages"]["report"]["outputs"] == ["results/REPORT.md", "results/expected_results.md"]
    exp = (tmp_path / "results" / "expected_results.md").read_text()
    assert "figures " in exp and "arms not measured" in exp and "![Figure 2" in exp
    report = (tmp_path / "results" / "REPORT.md").read_text()
    assert "results/stages.json" in report  # runtime read from stages.json
    out = capsys.readouterr().out
    assert "reproduce: summary" in out and "REPORT.md" in out
    # a finished non-"always" stage is skipped on the next invocation unless --force
    state["stages"]["privacy_budget"] = {"status": "done", "seconds": 1.0, "outputs": ["results/REPORT.md"],
                                         "config_hash": RP.config_hash(RP.stage_config(_ctx(tmp_path, "quick"), "privacy_budget"))}
    (tmp_path / "results" / "stages.json").write_text(json.dumps(state))
    assert RP.main(argv + ["--stage", "privacy_budget"]) == 0
    assert "privacy_budget: done earlier" in capsys.readouterr().out


def test_unknown_stage_and_paper_without_data_root(tmp_path, capsys):
    assert RP.main(["--stage", "nope", "--runs", str(tmp_path / "r"), "--out", str(tmp_path / "o")]) == 2
    assert RP.main(["--profile", "paper", "--runs", str(tmp_path / "r"), "--out", str(tmp_path / "o")]) == 2
    assert "--data-root" in capsys.readouterr().err


def test_script_exists_and_is_executable():
    script = Path(RP.REPO_ROOT) / "scripts" / "reproduce_all.sh"
    assert script.is_file() and script.stat().st_mode & 0o111
    assert "bfdl_tff.reproduce" in script.read_text()
    assert sys.executable  # the tests run in the project venv


def test_privacy_budget_stage_calibrates_with_the_accountant(tmp_path):
    ctx = _ctx(tmp_path, "quick")
    (out,) = RP.stage_privacy_budget(ctx)
    doc = json.loads(out.read_text())
    assert (doc["target_epsilon"], doc["delta"], doc["accountant"]) == (1.0, 1e-5, "rdp")
    by = {s["name"]: s for s in doc["settings"]}
    client50 = by["client_level_3_hospitals_50_rounds"]
    assert 26 <= client50["noise_multiplier"] <= 30  # CLAIMS note 2: about 26-29
    assert client50["epsilon_at_noise"] <= 1.0 + 1e-9
    sample = next(s for s in doc["settings"] if s["level"] == "sample")
    assert 1.0 < sample["noise_multiplier"] < 2.0 and sample["epsilon_at_noise"] <= 1.0 + 1e-9
    assert by["client_level_3_hospitals_2_rounds"]["noise_multiplier"] < client50["noise_multiplier"]
