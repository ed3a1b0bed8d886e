"""Issue 14.6: ``--dry-run --one-round`` trains one round of every arm with the run config the
``arms`` stage builds, overriding only the data (a tiny synthetic NIH-layout dataset at the
profile's image size), the rounds and the keystore; exit 0 only if every arm passes. The fast
tests use the ``smoke`` profile (cnn32 at 32 px); the paper profile's ResNet-50 + U-Net at 224 px
is ``slow``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bfdl_tff.config import ARMS, dump_yaml, load_yaml_mapping, to_dict
from bfdl_tff.reproduce import orchestrator as O
from bfdl_tff.reproduce.context import Context
from bfdl_tff.reproduce.one_round import make_dataset, one_round, one_round_config
from bfdl_tff.reproduce.profiles import load_profile

REPO = Path(__file__).resolve().parents[2]


def _leaves(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_leaves(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


@pytest.mark.parametrize("profile", ["paper", "smoke"])
def test_one_round_config_is_the_arms_config_with_only_data_rounds_keys_changed(tmp_path, profile):
    ctx = Context(profile=load_profile(profile), runs=tmp_path, out=tmp_path, data_root=Path("DATA_ROOT"))
    for arm in ARMS:
        arms_cfg = _leaves(to_dict(ctx.config(arm, 0, name=f"{arm}-s0")))
        one = _leaves(to_dict(one_round_config(ctx, arm, data_root=tmp_path / "d", keystore=tmp_path / "k")))
        changed = {k for k in arms_cfg if arms_cfg[k] != one[k]} | (set(one) ^ set(arms_cfg))
        assert changed <= {"name", "data.source", "data.root", "data.manifests", "federated.rounds", "keys.path",
                           "federated.centralized_epochs"}, changed
        assert one["federated.rounds"] == 1 and one["data.root"] == str(tmp_path / "d")
        assert one["model.config"] == arms_cfg["model.config"] and one["data.image_size"] == arms_cfg["data.image_size"]
        assert one["privacy.target_epsilon"] == arms_cfg["privacy.target_epsilon"]  # the DP settings are kept
    if profile == "paper":
        assert one["model.config"] == "resnet50_unet" and one["data.image_size"] == 224
        assert one["privacy.mode"] == "sample" and one["privacy.secure_aggregation"] == "masked"


def test_dataset_seed_gives_every_hospital_training_images(tmp_path):
    ctx = Context(profile=load_profile("smoke"), runs=tmp_path, out=tmp_path, data_root=None)
    cfg = one_round_config(ctx, "bfdl", data_root=tmp_path / "nih", keystore=tmp_path / "k")
    lines: list[str] = []
    seed = make_dataset(cfg, tmp_path / "nih", n_images=24, log=lines.append)
    assert (tmp_path / "nih" / "Data_Entry_2017.csv").is_file()
    counts = [int(x) for x in re.search(r"\[([\d, ]+)\] training images", lines[0]).group(1).split(",")]
    assert len(counts) == 3 and min(counts) >= 4 and f"generator seed {seed}" in lines[0]


@pytest.mark.tff
def test_smoke_one_round_every_arm(tmp_path, capfd):  # capfd: TFF's worker_binary needs a real stdout fd
    argv = ["--profile", "smoke", "--dry-run", "--one-round", "--stage", "arms", "--runs", str(tmp_path / "r")]
    assert O.main(argv) == 0
    out = capfd.readouterr().out
    assert "overriding only: data.source='nih'" in out and "federated.rounds=1" in out
    for arm in ARMS:
        line = re.search(rf"^  {arm} +model cnn32 params ([\d,]+) 32 px; .*: OK$", out, re.M)
        assert line, (arm, out[-2000:])
        assert int(line.group(1).replace(",", "")) > 1000
    assert re.search(r"^  bfdl .*privacy sample z=[\d.]+ .*aggregation masked; ledger on", out, re.M)
    assert "passed for every arm" in out
    run = tmp_path / "r" / "one_round" / "runs" / "bfdl"
    assert (run / "summary.json").is_file() and (run / "ledger" / "genesis.json").is_file()


def test_failing_arm_is_reported_and_exit_is_nonzero(tmp_path, capsys, monkeypatch):
    import tempfile

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # the check's temporary directory
    # an epsilon no noise multiplier <= 0.5 reaches: the B-FDL arm fails at calibration, before training
    exp = load_yaml_mapping(REPO / "configs" / "experiments" / "smoke.yaml")
    exp.setdefault("privacy", {})["max_noise_multiplier"] = 0.5
    (tmp_path / "exp.yaml").write_text(dump_yaml(exp))
    (tmp_path / "prof.yaml").write_text(dump_yaml({"description": "d", "expected_runtime": "r",
                                                   "experiment": str(tmp_path / "exp.yaml")}))
    ctx = Context(profile=load_profile(tmp_path / "prof.yaml"), runs=tmp_path, out=tmp_path, data_root=None)
    assert one_round(ctx, arms=("bfdl",)) == 1
    out = capsys.readouterr().out
    assert re.search(r"^  bfdl .*: ERROR: .*epsilon", out, re.M) and "FAILED for bfdl" in out
    assert not list((tmp_path / "tmp").iterdir())  # deleted afterwards (no --runs)


@pytest.mark.slow
@pytest.mark.tff
def test_paper_one_round_every_arm(tmp_path, capfd):  # ResNet-50 + U-Net at 224 px: minutes on a CPU
    assert O.main(["--profile", "paper", "--one-round", "--stage", "arms", "--runs", str(tmp_path / "r")]) == 0
    out = capfd.readouterr().out
    for arm in ARMS:
        assert re.search(rf"^  {arm} +model resnet50_unet \{{'norm': 'group'\}} params [\d,]+ 224 px; .*: OK$", out, re.M)
