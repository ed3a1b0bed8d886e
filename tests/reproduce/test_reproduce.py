"""bfdl_tff.reproduce: profiles resolve to their experiment file (one source of configuration),
stage skipping, per-run skip/resume rules, and the orchestrator records stages.json (the figures
and report stages are run for real, as ``python -m paper_figures`` subprocesses, on FIXTURE
result files)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from bfdl_tff.config import ARMS, REPO_ROOT, dump_yaml, load_config, load_yaml_mapping, to_dict
from bfdl_tff.errors import ConfigError, RunDirError
from bfdl_tff.reproduce import orchestrator as O
from bfdl_tff.reproduce import stages as S
from bfdl_tff.reproduce.context import Context, run_one
from bfdl_tff.reproduce.profiles import STAGE_VARIES, load_profile, merge, profile_names
from bfdl_tff.reproduce.records import config_hash, records_base, rel, should_skip

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "results" / "runs"


def _ctx(tmp_path: Path, profile: str = "default", force: bool = False) -> Context:
    """Like the command line: ``--data-root`` only for the profile on real data."""
    prof = load_profile(profile)
    return Context(profile=prof, runs=tmp_path / "runs", out=tmp_path / "results",
                   data_root=None if prof.synthetic else tmp_path / "nih", force=force)


@pytest.mark.parametrize("profile", ["quick", "smoke", "default", "paper"])
def test_profile_and_its_experiment_file_cannot_disagree(tmp_path, profile):
    """Every arm's config = the experiment YAML (+ the profile's overlay) except name, arm, seed,
    data.root; nothing about an arm is rebuilt in Python."""
    ctx = _ctx(tmp_path, profile)
    prof = ctx.profile
    assert profile in profile_names() and prof.name == profile
    yaml_file = prof.experiment_file()
    assert yaml_file == REPO_ROOT / "configs" / "experiments" / f"{prof.experiment}.yaml"
    for arm in ARMS:
        cfg = ctx.config(arm, 1, name=f"{arm}-s1")
        per_run = {"name": f"{arm}-s1", "arm": arm, "seed": 1, "data": {"root": str(ctx.data_dir())}}
        expected = load_config(yaml_file, overrides={})  # the file as written
        expected_dict = merge(merge(to_dict(expected), prof.overlay), per_run)
        assert to_dict(cfg) == expected_dict
    if profile == "paper":
        assert ctx.config("bfdl", 0, name="x").model.overrides["norm"] == "group"
        assert load_yaml_mapping(yaml_file)["model"]["overrides"]["norm"] == "group"
    else:
        assert ctx.base.data.source == "synthetic" and ctx.data_dir() == (tmp_path / "runs" / "data" /
                                                                           f"synthetic-{profile}").resolve()


def test_stages_vary_only_what_they_measure(tmp_path):
    ctx = _ctx(tmp_path, "default")
    arms = to_dict(ctx.config("bfdl", 0, name="x"))
    off = to_dict(ctx.config("bfdl", 0, name="x", stage="ledger_off"))
    cdp = to_dict(ctx.config("bfdl", 0, name="x", stage="client_dp"))
    assert off == merge(arms, {"ledger": {"enabled": False}}) and arms["ledger"]["enabled"] is True
    assert cdp == merge(arms, {"privacy": {"mode": "client"}}) and arms["privacy"]["mode"] == "sample"
    assert set(STAGE_VARIES) <= set(S.STAGE_NAMES)
    assert len(ctx.profile.arms.seeds) >= 3 and ctx.profile.scalability.ks == list(range(3, 11))


def test_arm_semantics_come_from_the_arm(tmp_path):
    """The non-private arms share the experiment's privacy/ledger sections; the training code
    ignores them: no DP schedule and no ledger hook outside the bfdl arm."""
    from bfdl_tff.experiment import build_hooks
    from bfdl_tff.federated.accounting import schedule_for_config
    from bfdl_tff.runs import RunDir

    ctx = _ctx(tmp_path, "quick")
    sizes = {"hospital_a": 300, "hospital_b": 200, "hospital_c": 150}
    for arm in ARMS:
        cfg = ctx.config(arm, 0, name=arm)
        assert cfg.privacy.mode == "sample" and cfg.ledger.enabled
        sched = schedule_for_config(cfg, sizes, source="test", num_patients=sizes)
        assert (sched.mode == "none") == (arm != "bfdl")
        if arm != "bfdl":
            assert build_hooks(cfg, RunDir(tmp_path / arm, cfg)) == []


def test_profile_files_are_strict(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("description: d\nexpected_runtime: r\nexperiment: quick\narms:\n  seedz: [0]\n")
    with pytest.raises(ConfigError, match=r"mine.yaml: arms.seedz: unknown key"):
        load_profile(p)
    p.write_text("description: d\nexpected_runtime: r\nexperiment: nope\n")
    with pytest.raises(ConfigError, match="no such experiment config"):
        load_profile(p)
    p.write_text("description: d\nexpected_runtime: r\nexperiment: quick\nname: other\n")
    with pytest.raises(ConfigError, match="name: set from the file name"):
        load_profile(p)
    p.write_text("description: d\nexpected_runtime: r\nexperiment: quick\nattacks:\n  inversion: {targets: [x]}\n")
    with pytest.raises(ConfigError, match="attacks.inversion.targets: unknown target"):
        load_profile(p)
    p.write_text("description: d\nexpected_runtime: r\nexperiment: quick\noverlay: {federated: {rounds: 1}}\n")
    prof = load_profile(p)
    assert prof.name == "mine" and prof.base_config().federated.rounds == 1
    with pytest.raises(ConfigError, match="no such profile"):
        load_profile("definitely-not-a-profile")


def test_should_skip_rules(tmp_path):
    (tmp_path / "o.json").write_text("{}")
    rec = {"status": "done", "config_hash": "h", "outputs": ["o.json"]}
    assert should_skip(rec, cfg_hash="h", force=False, always=False, base=tmp_path)
    assert not should_skip(rec, cfg_hash="h", force=True, always=False, base=tmp_path)
    assert not should_skip(rec, cfg_hash="other", force=False, always=False, base=tmp_path)
    assert not should_skip(rec, cfg_hash="h", force=False, always=True, base=tmp_path)
    assert not should_skip({**rec, "status": "failed"}, cfg_hash="h", force=False, always=False, base=tmp_path)
    assert not should_skip({**rec, "outputs": ["gone.json"]}, cfg_hash="h", force=False, always=False, base=tmp_path)
    assert not should_skip(None, cfg_hash="h", force=False, always=False, base=tmp_path)
    assert (config_hash(S.stage_config(_ctx(tmp_path), "arms"))
            != config_hash(S.stage_config(_ctx(tmp_path, "quick"), "arms")))


def test_records_base_compares_paths_not_string_prefixes():
    """Issue 17.6: a runs root in a sibling directory whose name starts with the repository's."""
    repo = REPO_ROOT.resolve()
    sibling = Path(str(repo) + "-tmp") / "runs"
    assert records_base(repo / "runs") == repo
    assert records_base(sibling) == sibling.parent
    assert rel(sibling / "x.json", records_base(sibling)) == "runs/x.json"
    assert rel(Path("/elsewhere/x.json"), repo) == "/elsewhere/x.json"


def test_run_one_skips_finished_and_refuses_changed_config(tmp_path):
    ctx = _ctx(tmp_path)
    cfg = ctx.config("federated", 0, name="federated-s0")
    run = tmp_path / "runs" / "arms" / "federated-s0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(dump_yaml(cfg))
    (run / "summary.json").write_text("{}")
    assert run_one(ctx, cfg, run) == run  # skipped: no runner needed
    other = ctx.config("federated", 1, name="federated-s0")
    with pytest.raises(RunDirError, match="different config"):
        run_one(ctx, other, run)


def test_orchestrator_records_stages_and_skips(tmp_path, capsys):
    shutil.copytree(FIXTURES, tmp_path / "runs")
    argv = ["--profile", "quick", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "results")]
    assert O.main(argv + ["--stage", "figures", "--stage", "report"]) == 0
    state = json.loads((tmp_path / "results" / "stages.json").read_text())
    assert state["profile"] == "quick"
    for name in ("figures", "report"):
        rec = state["stages"][name]
        assert rec["status"] == "done" and rec["seconds"] > 0 and rec["config"]["profile"] == "quick"
        assert (tmp_path / rec["log"]).is_file()
    assert state["stages"]["report"]["outputs"] == ["results/REPORT.md", "results/expected_results.md"]
    assert "table33:" in (tmp_path / state["stages"]["figures"]["log"]).read_text()  # paper_figures' output
    exp = (tmp_path / "results" / "expected_results.md").read_text()
    assert "figures " in exp and "arms not measured" in exp and "![Figure 2" in exp
    report = (tmp_path / "results" / "REPORT.md").read_text()
    assert "results/stages.json" in report  # runtime read from stages.json
    out = capsys.readouterr().out
    assert "reproduce: summary" in out and "REPORT.md" in out
    # a finished non-"always" stage is skipped on the next invocation unless --force
    state["stages"]["privacy_budget"] = {"status": "done", "seconds": 1.0, "outputs": ["results/REPORT.md"],
                                         "config_hash": config_hash(S.stage_config(_ctx(tmp_path, "quick"),
                                                                                   "privacy_budget"))}
    (tmp_path / "results" / "stages.json").write_text(json.dumps(state))
    assert O.main(argv + ["--stage", "privacy_budget"]) == 0
    assert "privacy_budget: done earlier" in capsys.readouterr().out


def test_unknown_stage_and_real_data_profile_without_data_root(tmp_path, capsys):
    assert O.main(["--stage", "nope", "--runs", str(tmp_path / "r"), "--out", str(tmp_path / "o")]) == 2
    assert O.main(["--profile", "paper", "--runs", str(tmp_path / "r"), "--out", str(tmp_path / "o")]) == 2
    assert "--data-root" in capsys.readouterr().err
    assert O.main(["--profile", "nope", "--runs", str(tmp_path / "r"), "--out", str(tmp_path / "o")]) == 2
    assert "no such profile" in capsys.readouterr().err


def test_script_exists_and_is_executable():
    script = REPO_ROOT / "scripts" / "reproduce_all.sh"
    assert script.is_file() and script.stat().st_mode & 0o111
    assert "bfdl_tff.reproduce" in script.read_text()
    assert sys.executable  # the tests run in the project venv


def test_privacy_budget_stage_calibrates_with_the_accountant(tmp_path):
    ctx = _ctx(tmp_path, "quick")
    (out,) = S.stage_privacy_budget(ctx)
    doc = json.loads(out.read_text())
    assert (doc["target_epsilon"], doc["delta"], doc["accountant"]) == (1.0, 1e-5, "rdp")
    by = {s["name"]: s for s in doc["settings"]}
    client50 = by["client_level_3_hospitals_50_rounds"]
    assert 26 <= client50["noise_multiplier"] <= 30  # CLAIMS note 2: about 26-29
    assert client50["epsilon_at_noise"] <= 1.0 + 1e-9
    sample = next(s for s in doc["settings"] if s["level"] == "sample")
    assert 1.0 < sample["noise_multiplier"] < 2.0 and sample["epsilon_at_noise"] <= 1.0 + 1e-9
    assert by["client_level_3_hospitals_2_rounds"]["noise_multiplier"] < client50["noise_multiplier"]
