"""Issue 14.6: ``--dry-run`` prints every stage, its run configs and the estimated work without
training (exit 0, no runs written), and the normalisation rule rejects BatchNorm with FedAvg or
sample-level DP-SGD (one ConfigError line naming the file and the key) at config check, before
training; the centralized reference may use it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bfdl_tff.config import dump_yaml, load_yaml_mapping
from bfdl_tff.errors import ConfigError
from bfdl_tff.experiment import check_model
from bfdl_tff.reproduce import orchestrator as O
from bfdl_tff.reproduce.context import Context
from bfdl_tff.reproduce.plan import NIH_IMAGES, check_configs, planned_runs
from bfdl_tff.reproduce.profiles import load_profile

REPO = Path(__file__).resolve().parents[2]


def test_paper_dry_run_lists_everything_and_trains_nothing(tmp_path, capsys, monkeypatch):
    import bfdl_tff.experiment as E

    monkeypatch.setattr(E, "train_arm", lambda *a, **k: pytest.fail("a dry run must not train"))
    argv = ["--profile", "paper", "--dry-run", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    assert O.main(argv) == 0  # no --data-root needed
    out = capsys.readouterr().out
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()
    for stage in ("arms", "ledger_off", "client_dp", "scalability", "privacy_utility", "attacks", "report"):
        assert re.search(rf"^\[\d+/\d+\] {stage}: ", out, re.M), stage
    prof = load_profile("paper")
    n_arms = 3 * len(prof.arms.seeds)
    assert len(re.findall(r"^    arms/", out, re.M)) == n_arms
    train = int(NIH_IMAGES * 0.8 * 0.9)
    assert f"50 passes x {train} training images = {50 * train} image passes" in out
    runs = planned_runs(Context(profile=prof, runs=tmp_path, out=tmp_path, data_root=Path("x")),
                        [s for s in ("arms", "ledger_off", "client_dp", "scalability", "privacy_utility")])
    total = sum(r.passes() * r.train_images() for r in runs)
    assert f"dry run: {len(runs)} training runs, {total:,} image passes" in out
    assert "resnet50_unet" in out and "'norm': 'group'" in out


def _experiment(tmp_path: Path, **model) -> Path:
    d = load_yaml_mapping(REPO / "configs" / "experiments" / "quick.yaml")
    d["model"] = model
    p = tmp_path / "exp.yaml"
    p.write_text(dump_yaml(d))
    return p


def _profile(tmp_path: Path, exp: Path) -> Path:
    p = tmp_path / "prof.yaml"
    p.write_text(dump_yaml({"description": "d", "expected_runtime": "r", "experiment": str(exp)}))
    return p


def test_batchnorm_override_rejected_for_fedavg_and_dp(tmp_path, capsys):
    exp = _experiment(tmp_path, config="small_cnn", overrides={"norm": "batch"})
    prof = load_profile(_profile(tmp_path, exp))
    ctx = Context(profile=prof, runs=tmp_path / "runs", out=tmp_path / "out", data_root=None)
    check_model(ctx.config("centralized", 0, name="c"), source=str(exp))  # the labelled reference: allowed
    for arm, why in (("federated", "FedAvg"), ("bfdl", "sample-level DP-SGD")):
        with pytest.raises(ConfigError) as e:
            check_model(ctx.config(arm, 0, name=arm), source=str(exp))
        assert e.value.source == str(exp) and e.value.key == "model.overrides.norm"
        assert why in e.value.message and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="model.overrides.norm"):
        check_configs(ctx, planned_runs(ctx, ["arms"]))
    # the orchestrator refuses before any stage runs (one line, exit 2, nothing trained)
    argv = ["--profile", str(_profile(tmp_path, exp)), "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "o")]
    assert O.main(argv + ["--stage", "arms"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.overrides.norm" in err[0] and str(exp) in err[0]
    assert not (tmp_path / "runs" / "arms").exists()


def test_batchnorm_from_the_model_file_names_model_config(tmp_path):
    exp = _experiment(tmp_path, config="resnet50")  # configs/models/resnet50.yaml sets norm: batch
    prof = load_profile(_profile(tmp_path, exp))
    ctx = Context(profile=prof, runs=tmp_path / "runs", out=tmp_path / "out", data_root=None)
    with pytest.raises(ConfigError) as e:
        check_model(ctx.config("federated", 0, name="f"), source=str(exp))
    assert e.value.key == "model.config" and "resnet50.yaml sets norm: batch" in e.value.message


def test_every_shipped_profile_passes_the_rule(tmp_path):
    for name in ("quick", "smoke", "default", "paper"):
        prof = load_profile(name)
        ctx = Context(profile=prof, runs=tmp_path, out=tmp_path, data_root=Path("nih"))
        check_configs(ctx, planned_runs(ctx, ["arms", "ledger_off", "client_dp", "scalability", "privacy_utility"]))


def test_bfdl_config_check_refuses_batchnorm_in_one_line(tmp_path, capsys):
    from bfdl_tff import cli

    exp = _experiment(tmp_path, config="small_cnn", overrides={"norm": "batch", "input_size": 32})
    assert cli.main(["config", "check", str(exp)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{exp}: model.overrides.norm: norm: batch cannot be used with arm" in err[0]
    d = load_yaml_mapping(exp)
    d["arm"] = "centralized"
    exp.write_text(dump_yaml(d))
    assert cli.main(["config", "check", str(exp)]) == 0  # the labelled centralized reference
