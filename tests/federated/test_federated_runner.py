"""The experiment runner: every arm for 2 rounds on tiny data, run-dir files, hooks, resume and
the errors raised before training."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from bfdl_tff.config import ExperimentConfig, from_dict

pytestmark = pytest.mark.tff

SIZE = 16


def make_cfg(arm: str, mode: str = "none", **privacy) -> ExperimentConfig:
    p = {"mode": mode, "delta": 1e-3, **privacy}
    if mode != "none" and "noise_multiplier" not in privacy and "target_epsilon" not in privacy:
        p["noise_multiplier"] = 0.8
    return from_dict(
        ExperimentConfig,
        {
            "name": "t",
            "arm": arm,
            "model": {"config": "small_cnn", "overrides": {"input_size": SIZE, "width": 4, "conv_layers": 2}},
            "federated": {"rounds": 2, "batch_size": 8, "client_lr": 0.1},
            "privacy": p,
            "ledger": {"enabled": False},
        },
    )


def toy():
    from bfdl_tff.federated.testing import toy_federation

    return toy_federation((12, 20, 28), size=SIZE, n_test=48, seed=1)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _final(run):
    with np.load(run / "final_model.npz") as z:
        return [z[k] for k in sorted(z.files)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from bfdl_tff.federated.hooks import RecordingHook
    from bfdl_tff.federated.runner import run_experiment

    out = {}
    for key, cfg in {
        "federated": make_cfg("federated"),
        "bfdl_client": make_cfg("bfdl", "client"),
        "bfdl_sample": make_cfg("bfdl", "sample"),
        "centralized": make_cfg("centralized"),
    }.items():
        d = tmp_path_factory.mktemp(key)
        hook = RecordingHook()
        summary = run_experiment(cfg, d, hooks=[hook], data=toy(), progress=False)
        out[key] = (d, summary, hook, cfg)
    return out


@pytest.mark.parametrize("key", ["federated", "bfdl_client", "bfdl_sample", "centralized"])
def test_each_arm_two_rounds(runs, key):
    from bfdl_tff.data.labels import FINDINGS
    from bfdl_tff.hashing import weights_digest

    d, summary, hook, cfg = runs[key]
    rows = _rows(d / "metrics.csv")
    assert [r["round"] for r in rows] == ["1", "2"]
    for c in ["round", "wall_s", "train_loss", "test_loss", "test_macro_auc", "test_micro_auc", "epsilon",
              "bytes_broadcast", "bytes_uploaded", "cum_bytes"] + [f"auc_{f}" for f in FINDINGS]:
        assert c in rows[0]
    assert 0.0 <= float(rows[-1]["test_macro_auc"]) <= 1.0
    assert int(rows[1]["cum_bytes"]) == sum(int(r["bytes_broadcast"]) + int(r["bytes_uploaded"]) for r in rows)
    s = json.loads((d / "summary.json").read_text())
    assert s["arm"] == cfg.arm and s["rounds"] == 2 and s["synthetic"] is True
    for k in ("final_macro_auc", "final_micro_auc", "per_finding_auc", "precision_macro", "recall_macro", "f1_macro",
              "precision_micro", "f1_micro", "per_label_accuracy", "all_negative_accuracy", "threshold_rule",
              "epsilon", "delta", "accountant", "noise_multiplier", "cum_bytes", "wall_s"):
        assert k in s
    # final_model.npz digest == the last round's global model the hook saw
    final = _final(d)
    assert weights_digest(final) == weights_digest(hook.rounds[-1].global_weights) == s["final_model_digest"]
    assert [c.round_num for c in hook.rounds] == [1, 2]
    assert hook.info is not None and hook.summary is not None
    assert hook.closed, "the runner closes every hook in its finally"
    if key == "centralized":
        assert int(rows[0]["bytes_uploaded"]) > 0 and int(rows[1]["bytes_uploaded"]) == 0
        assert rows[0]["epsilon"] == ""
    else:
        ctx = hook.rounds[-1]
        assert set(ctx.client_commitments) == {"hospital_a", "hospital_b", "hospital_c"}
        assert all(len(v) == 64 for v in ctx.client_commitments.values())
        assert ctx.num_examples == {"hospital_a": 12, "hospital_b": 20, "hospital_c": 28}
        assert int(rows[0]["bytes_broadcast"]) == 3 * sum(w.nbytes for w in final)


@pytest.mark.parametrize("key", ["federated", "bfdl_sample", "centralized"])
def test_tensorboard_events_hold_each_rounds_metrics(runs, key):
    """RUN_DIR/tensorboard has one step per round, and every numeric metrics.csv cell as a scalar."""
    from bfdl_tff.federated.tensorboard import read_scalars

    d = runs[key][0]
    tb = read_scalars(d / "tensorboard")
    rows = _rows(d / "metrics.csv")
    checked = 0
    for row in rows:
        step = int(row["round"])
        for col, cell in row.items():
            if col in ("round", "participants", "rejected") or cell == "":
                assert step not in tb.get(col, {}), f"{col} has no value in round {step} but a TensorBoard point"
                continue
            assert tb[col][step] == pytest.approx(float(cell), rel=1e-6, abs=1e-9), (col, step)
            checked += 1
    assert checked >= 2 * 20  # loss, AUCs, bytes, per-finding AUCs ... of both rounds
    assert {s for series in tb.values() for s in series} == {1, 2}
    assert ("epsilon" in tb) == (key == "bfdl_sample")


def test_privacy_reported_per_round(runs):
    for key, mode in (("bfdl_client", "client"), ("bfdl_sample", "sample")):
        d, summary, hook, _ = runs[key]
        eps = [float(r["epsilon"]) for r in _rows(d / "metrics.csv")]
        assert 0 < eps[0] < eps[1]
        assert summary["epsilon"] == pytest.approx(eps[1])
        assert hook.rounds[1].privacy["mode"] == mode
        assert hook.rounds[1].privacy["epsilon"] == pytest.approx(eps[1])
        assert hook.rounds[1].privacy["noise_multiplier"] == 0.8
    assert runs["federated"][1]["epsilon"] is None


def test_resume_after_interrupt_equals_uninterrupted(runs, tmp_path):
    from bfdl_tff.federated.hooks import RecordingHook
    from bfdl_tff.federated.runner import run_experiment

    ref_dir, _, ref_hook, cfg = runs["bfdl_client"]

    class Interrupt(RecordingHook):
        def on_round_end(self, ctx):
            super().on_round_end(ctx)
            raise KeyboardInterrupt

    interrupted = Interrupt()
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, tmp_path, hooks=[interrupted], data=toy(), progress=False)
    assert interrupted.closed, "hooks are closed when the run fails"
    assert [r["round"] for r in _rows(tmp_path / "metrics.csv")] == ["1"]
    assert not (tmp_path / "final_model.npz").exists()
    hook = RecordingHook()
    run_experiment(cfg, tmp_path, hooks=[hook], resume=True, data=toy(), progress=False)
    # round 1's hooks did not finish: re-announced once, then round 2; no round repeated or skipped
    assert [c.round_num for c in hook.rounds] == [1, 2]
    assert [r["round"] for r in _rows(tmp_path / "metrics.csv")] == ["1", "2"]
    for a, b in zip(_final(tmp_path), _final(ref_dir)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert hook.rounds[1].client_commitments == ref_hook.rounds[1].client_commitments or all(
        len(v) == 64 for v in hook.rounds[1].client_commitments.values()
    )
    # the TensorBoard events hold exactly the rounds of metrics.csv (rewritten on resume)
    from bfdl_tff.federated.tensorboard import read_scalars

    tb = read_scalars(tmp_path / "tensorboard")
    assert sorted(tb["test_loss"]) == [1, 2]
    assert [tb["test_loss"][s] for s in (1, 2)] == pytest.approx(
        [float(r["test_loss"]) for r in _rows(tmp_path / "metrics.csv")], rel=1e-6)
    # the bfdl arm's training loss stays hospital-side (issue 16.3): each hospital's own log
    # holds rounds 1 and 2 once (round 1 rewritten on resume), the server's logs none
    assert "train_loss" not in tb
    for name in toy().names:
        assert [r["round"] for r in _rows(tmp_path / "hospitals" / name / "local_metrics.csv")] == ["1", "2"]
    # resuming a finished run trains nothing more
    again = RecordingHook()
    run_experiment(cfg, tmp_path, hooks=[again], resume=True, data=toy(), progress=False)
    assert again.rounds == []
    assert again.closed, "hooks are closed when a resumed run was already complete"
    assert [r["round"] for r in _rows(tmp_path / "metrics.csv")] == ["1", "2"]


# ---------------------------------------------------------------------------- errors before training


def test_empty_hospital_is_an_error(tmp_path):
    from bfdl_tff.errors import DataError
    from bfdl_tff.federated.runner import run_experiment

    data = toy()
    data.train["hospital_b"] = data.train["hospital_b"].subset([])
    with pytest.raises(DataError, match="hospital_b.*empty"):
        run_experiment(make_cfg("federated"), tmp_path, data=data, progress=False)
    assert not (tmp_path / "metrics.csv").exists()


def test_unknown_arm_is_an_error(tmp_path):
    from bfdl_tff.errors import ConfigError
    from bfdl_tff.federated.runner import run_experiment

    cfg = make_cfg("federated")
    cfg.arm = "swarm"
    with pytest.raises(ConfigError, match="unknown arm 'swarm'"):
        run_experiment(cfg, tmp_path, data=toy(), progress=False)


def test_unreachable_epsilon_is_an_error(tmp_path):
    from bfdl_tff.federated.accounting import PrivacyBudgetError
    from bfdl_tff.federated.runner import run_experiment

    cfg = make_cfg("bfdl", "client", target_epsilon=1.0, noise_multiplier=0.0, delta=1e-5, max_noise_multiplier=20.0)
    cfg.federated.rounds = 50  # needs a noise multiplier of about 27 with 3 always-participating hospitals
    with pytest.raises(PrivacyBudgetError, match="unreachable"):
        run_experiment(cfg, tmp_path, data=toy(), progress=False)


def test_delta_not_below_one_over_n_is_an_error(tmp_path):
    from bfdl_tff.errors import ConfigError
    from bfdl_tff.federated.runner import run_experiment

    cfg = make_cfg("bfdl", "sample", delta=0.09)  # smallest hospital has 12 examples
    with pytest.raises(ConfigError, match="delta"):
        run_experiment(cfg, tmp_path, data=toy(), progress=False)


def test_input_size_mismatch_is_an_error(tmp_path):
    from bfdl_tff.errors import ConfigError
    from bfdl_tff.federated.runner import run_experiment

    cfg = make_cfg("federated")
    cfg.model.overrides["input_size"] = 32
    with pytest.raises(ConfigError, match=r"expects input \[32, 32, 1\].*\[16, 16, 1\]"):
        run_experiment(cfg, tmp_path, data=toy(), progress=False)


def test_train_command_errors_are_one_line(tmp_path, capsys):
    from bfdl_tff.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\narm: swarm\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "arm" in err and "swarm" in err and err.count("\n") == 1
