"""``bfdl attack inversion|membership --run RUN_DIR`` end to end on a tiny synthetic run
directory (32 px small_cnn from the models registry, synthetic NIH-layout data, random weights
as the "released" model), written through ``RunDir`` as the runner writes it (released model,
``data.json``, ``privacy.json`` from the accountant's schedule). Checks the result files' keys
(docs/INTERFACES.md: first/final round rows, protected targets at the best plain setting,
Clopper-Pearson intervals, LiRA stability, the DP audit), that the DP bound uses the run's
recorded epsilon, and that a DP-audit violation exits 3 with one line after writing the file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bfdl_tff import cli
from bfdl_tff.config import ExperimentConfig, from_dict
from bfdl_tff.runs import RunDir

SIZE = 32

INV_KEYS = {"target", "batch_size", "local_steps", "n_targets", "success_rate", "ci_low", "ci_high",
            "mean_psnr", "mean_ssim", "label_recovery_rate", "round", "round_num", "images_per_update",
            "seconds_per_image", "selected_by", "intensity", "client_optimizer", "n_updates", "successes"}
MIA_KEYS = {"auc", "advantage", "tpr_at_fpr_0.001", "tpr_at_fpr_0.01", "tpr_ci_low_at_fpr_0.001",
            "tpr_ci_high_at_fpr_0.001", "tpr_ci_low_at_fpr_0.01", "tpr_ci_high_at_fpr_0.01", "low_fpr"}


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
    rc = cli.main(["attack", "inversion", "--run", str(run.path), "--images", "2", "--batch-sizes", "1",
                   "--local-steps", "1", "--iterations", "3", "--restarts", "1"])
    assert rc == 0
    inv = json.loads(run.file("attacks", "inversion.json").read_text())
    keys = [(r["target"], r["batch_size"], r["round"]) for r in inv["rows"]]
    assert keys[:2] == [("plain_update", 1, "first"), ("plain_update", 1, "final")]
    assert sorted(k[0] for k in keys[2:]) == ["dp_update", "dp_update", "secure_sum", "secure_sum"]
    for r in inv["rows"]:
        assert INV_KEYS <= set(r)
        assert 0.0 <= r["ci_low"] <= r["success_rate"] <= r["ci_high"] <= 1.0 and r["n_targets"] >= 2
        assert r["round_num"] == 1  # a one-round run: the first round is the final one
        assert (r["selected_by"] == "grid") == (r["target"] == "plain_update")
    ssum = [r for r in inv["rows"] if r["target"] == "secure_sum"][0]
    assert ssum["images_per_update"] == 3 * ssum["batch_size"]  # secure sum of 3 hospitals
    st = inv["setting"]
    assert st["applicable"] is True and st["gallery_size"] >= 101 and st["rounds"] == ["first", "final"]
    assert len(st["initial_model_digest"]) == 64 and st["dp"]["noise_multiplier"] == 1.1
    assert run.file("attacks", "inversion_grid.png").read_bytes()[:4] == b"\x89PNG"
    grids = sorted(p.name for p in run.file("attacks", "inversion_grids").glob("*.png"))
    assert "secure_sum_B1_s1_final.png" in grids and len(grids) == len(inv["rows"])
    assert run.file("attacks", "inversion.csv").read_text().startswith("target,")

    rc = cli.main(["attack", "membership", "--run", str(run.path), "--shadows", "4", "--max-per-class", "30",
                   "--shadow-epochs", "1"])
    assert rc == 0
    mia = json.loads(run.file("attacks", "membership.json").read_text())
    assert MIA_KEYS <= set(mia["loss_threshold"]) and MIA_KEYS | {"n_shadows", "stability"} <= set(mia["lira"])
    assert [s["n_shadows"] for s in mia["lira"]["stability"]] == [2, 4]
    assert mia["n_members"] == mia["n_nonmembers"] == 30
    # each shadow: half of the 60 audited images + the run's 30-fewer other training images = the target's size
    assert mia["lira"]["shadow_train_size"] == mia["setting"]["training_images"]
    assert mia["setting"]["nonmember_images_of_training_patients"] == 0
    b = mia["dp_bound"]
    assert b["epsilon"] == eps and b["epsilon_source"] == "privacy.json"
    expect = min(math.exp(eps) * 0.01 + 1e-5, 1 - math.exp(-eps) * (1 - 1e-5 - 0.01))
    assert b["tpr_bound_at_fpr_0.01"] == pytest.approx(expect)
    audit = mia["dp_audit"]
    assert set(audit) == {"0.001", "0.01"} and audit["0.01"]["bound"] == pytest.approx(math.exp(eps) * 0.01 + 1e-5)
    assert {"tpr_low", "bound", "violated", "attack", "attacks"} <= set(audit["0.01"])
    assert not audit["0.01"]["violated"]  # random weights: no membership signal


def test_dp_audit_violation_exits_3_with_one_line_after_writing(dataset, capsys, monkeypatch):
    """A (forced) perfectly separating loss-threshold attack on a run claiming epsilon 0.1 violates the bound."""
    from bfdl_tff.privacy_eval import membership as MI
    from bfdl_tff.privacy_eval import metrics as M

    run = _make_run(dataset, "leaky", "bfdl", "sample")
    run.write_privacy({**run.privacy(), "epsilon": 0.1})
    monkeypatch.setattr(MI, "loss_threshold_attack",
                        lambda model, m, n: M.roc_summary(np.arange(len(m[0])) + 1e6, np.arange(len(n[0]))))
    rc = cli.main(["attack", "membership", "--run", str(run.path), "--shadows", "2", "--max-per-class", "60",
                   "--shadow-epochs", "1", "--shadow-data", "audited"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if not ln.startswith("  ")]  # progress lines indented
    assert rc == 3 and len(err) == 1 and err[0].startswith("bfdl: error: ") and "DP audit violated" in err[0]
    assert "membership.json" in err[0]
    mia = json.loads(run.file("attacks", "membership.json").read_text())
    assert mia["dp_audit"]["0.01"]["violated"] and mia["dp_audit"]["0.01"]["attack"] == "loss_threshold"
    from bfdl_tff.privacy_eval.dp_audit import dp_audit_check

    ok, msg = dp_audit_check(run.path)
    assert not ok and "loss_threshold" in msg


def test_centralized_arm_has_no_update_channel_and_no_dp_bound(dataset):
    run = _make_run(dataset, "central", "centralized", "none")
    assert cli.main(["attack", "inversion", "--run", str(run.path), "--images", "1"]) == 0
    inv = json.loads(run.file("attacks", "inversion.json").read_text())
    assert inv["rows"] == [] and inv["setting"]["applicable"] is False
    assert "no update channel" in inv["setting"]["reason"]
    assert cli.main(["attack", "membership", "--run", str(run.path), "--shadows", "2", "--max-per-class", "20",
                     "--shadow-epochs", "1", "--shadow-data", "audited"]) == 0
    mia = json.loads(run.file("attacks", "membership.json").read_text())
    assert mia["dp_bound"] is None and mia["dp_audit"] is None and mia["lira"]["shadow_train_size"] == 20


def test_errors_name_the_file(dataset, tmp_path, capsys):
    run = _make_run(dataset, "fed", "federated", "none")
    run.final_model_file.unlink()
    assert cli.main(["attack", "membership", "--run", str(run.path)]) == 2
    assert "final_model.npz" in capsys.readouterr().err
    assert cli.main(["attack", "inversion", "--run", str(tmp_path / "nope")]) == 2
    assert "config.yaml" in capsys.readouterr().err
