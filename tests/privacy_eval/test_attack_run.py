"""``bfdl attack inversion|membership --run RUN_DIR`` end to end on a tiny synthetic run
directory (32 px small_cnn from the models registry, synthetic NIH-layout data, random weights
as the "released" model), written through ``RunDir`` as the runner writes it (released model,
``data.json``, ``privacy.json`` from the accountant's schedule). Checks the result files' keys
(docs/INTERFACES.md) and that the DP bound uses the run's recorded epsilon."""

from __future__ import annotations

import json
import math

import pytest

from bfdl_tff import cli
from bfdl_tff.config import ExperimentConfig, from_dict
from bfdl_tff.runs import RunDir

SIZE = 32

INV_KEYS = {"target", "batch_size", "local_steps", "n_targets", "success_rate", "ci_low", "ci_high",
            "mean_psnr", "mean_ssim", "label_recovery_rate"}
MIA_KEYS = {"auc", "advantage", "tpr_at_fpr_0.001", "tpr_at_fpr_0.01"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from bfdl_tff.data import loader, partition, synth

    base = tmp_path_factory.mktemp("attackrun")
    synth.synthesize(base / "data", n_images=560, size=SIZE, seed=0)
    parts = partition.partition(loader.read_metadata(base / "data"), hospitals=3, scheme="iid", seed=0)
    partition.write_partition(base / "manifests", parts)
    return base


def _make_run(base, name: str, arm: str, mode: str):
    from bfdl_tff.data import manifest
    from bfdl_tff.federated.accounting import schedule_for_config
    from bfdl_tff.privacy_eval.run_attacks import model_builder

    cfg = from_dict(ExperimentConfig, {
        "name": name, "arm": arm,
        "data": {"root": str(base / "data"), "image_size": SIZE, "manifests": str(base / "manifests")},
        "model": {"config": "small_cnn", "overrides": {"input_size": SIZE}},
        "federated": {"rounds": 1, "batch_size": 16},
        "privacy": {"mode": mode, "noise_multiplier": 1.1 if mode != "none" else 0.0},
    })
    run = RunDir.create(base / name, cfg)
    run.save_model(model_builder(cfg)().get_weights())
    run.write_data_record(root=base / "data", manifest_dir=base / "manifests", synthetic=True)
    counts = {n: int((manifest.read_manifest(manifest.manifest_path(base / "manifests", n))["split"] == "train").sum())
              for n in manifest.hospital_names(base / "manifests")}
    run.write_privacy(schedule_for_config(cfg, counts, source=str(run.config_file)).to_record())
    return run


def test_inversion_and_membership_commands_write_result_files(dataset, capsys):
    run = _make_run(dataset, "bfdl", "bfdl", "sample")
    eps = run.privacy()["epsilon"]
    assert eps > 0 and run.privacy()["noise_multiplier"] == 1.1
    rc = cli.main(["attack", "inversion", "--run", str(run.path), "--targets", "1", "--batch-sizes", "1",
                   "--local-steps", "1", "--iterations", "10", "--restarts", "1"])
    assert rc == 0
    inv = json.loads(run.file("attacks", "inversion.json").read_text())
    assert [r["target"] for r in inv["rows"]] == ["plain_update", "secure_sum", "dp_update"]
    for r in inv["rows"]:
        assert INV_KEYS <= set(r)
        assert 0.0 <= r["ci_low"] <= r["success_rate"] <= r["ci_high"] <= 1.0
    assert inv["rows"][1]["n_targets"] == 3  # secure sum of 3 hospitals, one image each
    assert inv["setting"]["applicable"] is True and inv["setting"]["gallery_size"] >= 101
    assert run.file("attacks", "inversion_grid.png").read_bytes()[:4] == b"\x89PNG"
    assert run.file("attacks", "inversion.csv").read_text().startswith("target,")

    rc = cli.main(["attack", "membership", "--run", str(run.path), "--shadows", "2", "--max-per-class", "30",
                   "--shadow-epochs", "1"])
    assert rc == 0
    mia = json.loads(run.file("attacks", "membership.json").read_text())
    assert MIA_KEYS <= set(mia["loss_threshold"]) and MIA_KEYS | {"n_shadows"} <= set(mia["lira"])
    assert mia["n_members"] == mia["n_nonmembers"] == 30
    b = mia["dp_bound"]
    assert b["epsilon"] == eps and b["epsilon_source"] == "privacy.json"
    expect = min(math.exp(eps) * 0.01 + 1e-5, 1 - math.exp(-eps) * (1 - 1e-5 - 0.01))
    assert b["tpr_bound_at_fpr_0.01"] == pytest.approx(expect)


def test_centralized_arm_has_no_update_channel_and_no_dp_bound(dataset):
    run = _make_run(dataset, "central", "centralized", "none")
    assert cli.main(["attack", "inversion", "--run", str(run.path), "--targets", "1"]) == 0
    inv = json.loads(run.file("attacks", "inversion.json").read_text())
    assert inv["rows"] == [] and inv["setting"]["applicable"] is False
    assert "no update channel" in inv["setting"]["reason"]
    assert cli.main(["attack", "membership", "--run", str(run.path), "--shadows", "2", "--max-per-class", "20",
                     "--shadow-epochs", "1"]) == 0
    assert json.loads(run.file("attacks", "membership.json").read_text())["dp_bound"] is None


def test_errors_name_the_file(dataset, tmp_path, capsys):
    run = _make_run(dataset, "fed", "federated", "none")
    run.final_model_file.unlink()
    assert cli.main(["attack", "membership", "--run", str(run.path)]) == 2
    assert "final_model.npz" in capsys.readouterr().err
    assert cli.main(["attack", "inversion", "--run", str(tmp_path / "nope")]) == 2
    assert "config.yaml" in capsys.readouterr().err
