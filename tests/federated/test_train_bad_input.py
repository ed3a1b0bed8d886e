"""Bad input to ``bfdl train`` and ``bfdl config check`` (issue 17 "Why, 6" and item 7): each is one
clean line on stderr naming the user's file (or the argument) and the problem, exit code 2, and
nothing left half-written: no run directory remains (or the one that existed is untouched, or moved
back after ``--overwrite``), so the same command is accepted again once the input is fixed. None of
these cases starts TensorFlow Federated."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bfdl_tff.cli import main

GOOD = {
    "name": "bad", "arm": "bfdl", "seed": 0,
    "data": {"source": "synthetic", "image_size": 16, "hospitals": 3, "scheme": "iid", "synth_images": 150},
    "model": {"config": "small_cnn", "overrides": {"input_size": 16, "width": 4, "conv_layers": 2}},
    "federated": {"rounds": 2, "batch_size": 8, "client_lr": 0.1},
    "privacy": {"mode": "sample", "target_epsilon": 8.0, "delta": 1.0e-3, "secure_sum": False},
    "ledger": {"replicas": 4},
}


def _yaml(d: dict, indent: int = 0) -> str:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out.append(" " * indent + f"{k}:")
            out.append(_yaml(v, indent + 2))
        else:
            out.append(" " * indent + f"{k}: {v}")
    return "\n".join(x for x in out if x)


def _cfg(tmp_path: Path, synth: Path, **changes: object) -> Path:
    """The good config with dotted-key ``changes`` (a value of ``None`` removes the key); YAML text
    values are written verbatim (``.inf``, ``.nan``)."""
    import copy

    d = copy.deepcopy(GOOD)
    d["data"]["root"] = str(synth)
    for dotted, v in changes.items():
        *head, last = dotted.replace("__", ".").split(".")
        cur = d
        for h in head:
            cur = cur.setdefault(h, {})
        if v is None:
            cur.pop(last, None)
        else:
            cur[last] = v
    p = tmp_path / "user-config.yaml"
    p.write_text(_yaml(d) + "\n")
    return p


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synth") / "data"


def _run(capsys, args: list[str]) -> tuple[int, str]:
    try:
        rc = main(args)
    except SystemExit as e:  # argparse usage errors
        rc = int(e.code)
    err = capsys.readouterr().err
    return rc, err


def _one_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip() and not x.startswith(("WARNING:", "INFO:"))
             and " E tensorflow/" not in x]
    assert len(lines) == 1, err
    return lines[0]


# (id, changes to the config, extra args, text the one line must contain)
CONFIG_CASES = [
    ("epsilon_inf", {"privacy.target_epsilon": ".inf"}, [], "privacy.target_epsilon: must be a finite number, got inf"),
    ("epsilon_nan", {"privacy.target_epsilon": ".nan"}, [], "privacy.target_epsilon: must be a finite number, got nan"),
    ("momentum_nan", {"federated.client_momentum": ".nan"}, [], "federated.client_momentum: must be a finite number"),
    ("noise_nan", {"privacy.noise_multiplier": ".nan"}, [], "privacy.noise_multiplier: must be a finite number"),
    ("server_lr_inf", {"federated.server_lr": "-.inf"}, [], "federated.server_lr: must be a finite number, got -inf"),
    ("clip_inf", {"privacy.l2_clip": ".inf"}, [], "privacy.l2_clip: must be a finite number"),
    ("alpha_nan", {"data.alpha": ".nan"}, [], "data.alpha: must be a finite number"),
    ("override_nan", {"model.overrides": "{input_size: 16, dropout: .nan}"}, [],
     "model.overrides.dropout: must be a finite number"),
    ("unknown_model", {"model.config": "no_such_model"}, [], "model.config: unknown model 'no_such_model'"),
    ("missing_model_file", {"model.config": "/nonexistent/m.yaml"}, [],
     "model.config: model config file not found (/nonexistent/m.yaml)"),
    ("bad_override", {"model.overrides": "{input_size: 16, width: 0}"}, [], "model.overrides.width: must be >= 1"),
    ("unknown_override", {"model.overrides": "{input_size: 16, bogus: 1}"}, [], "model.overrides.bogus: unknown key"),
    ("unknown_arm", {"arm": "swarm"}, [], "arm: must be one of"),
    ("rounds_0", {"federated.rounds": 0}, [], "federated.rounds: must be >= 1, got 0"),
    ("rounds_flag_0", {}, ["--rounds", "0"], "federated.rounds: --rounds must be >= 1, got 0"),
    ("negative_seed", {}, ["--seed", "-1"], "seed: must be >= 0, got -1"),
    ("replicas_2", {"ledger.replicas": 2}, [], "ledger.replicas: must be 3f+1"),
    ("unknown_key", {"federated.roundz": 3}, [], "federated.roundz: unknown key"),
    ("wrong_type", {"federated.batch_size": "eight"}, [], "federated.batch_size: expected an integer"),
]

# refused after the run directory was created: it must be rolled back
LATE_CASES = [
    ("missing_data_root", {"data.source": "nih", "data.root": "/nonexistent/nih"}, "/nonexistent/nih"),
    ("unreachable_epsilon", {"privacy.mode": "client", "privacy.target_epsilon": 1.0, "privacy.delta": "1.0e-5",
                             "privacy.max_noise_multiplier": 20.0, "federated.rounds": 50},
     "privacy.target_epsilon: epsilon=1.0 (delta=1e-05) is unreachable"),
    ("delta_too_large", {"privacy.delta": 0.09}, "privacy.delta: delta=0.09 must be below 1/n"),
    ("input_size_mismatch", {"model.overrides": "{input_size: 32, width: 4, conv_layers: 2}"}, "expects input [32, 32, 1]"),
]


@pytest.mark.parametrize("case,changes,extra,expect", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_is_one_line_exit_2_and_writes_nothing(tmp_path, synth, capsys, case, changes, extra, expect):
    cfg, out = _cfg(tmp_path, synth, **changes), tmp_path / "run"
    rc, err = _run(capsys, ["train", "--quiet", "--config", str(cfg), "--out", str(out), *extra])
    line = _one_line(err)
    assert rc == 2 and line.startswith("bfdl: error: ") and expect in line, line
    assert str(cfg) in line, f"the user's file is not named: {line}"
    assert not out.exists()


@pytest.mark.parametrize("case,changes,expect", LATE_CASES, ids=[c[0] for c in LATE_CASES])
def test_start_refused_after_creating_the_run_dir_rolls_it_back(tmp_path, synth, capsys, case, changes, expect):
    cfg, out = _cfg(tmp_path, synth, **changes), tmp_path / "run"
    rc, err = _run(capsys, ["train", "--quiet", "--no-ledger", "--config", str(cfg), "--out", str(out)])
    line = _one_line(err)
    assert rc == 2 and expect in line, line
    if case != "missing_data_root":
        assert str(cfg) in line and str(out / "config.yaml") not in line, f"attributed to the run's copy: {line}"
    assert not out.exists(), f"{case}: left {sorted(p.name for p in out.iterdir())}"


def test_refused_start_with_overwrite_moves_the_old_run_back(tmp_path, synth, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("name: old\n")
    (out / "keep.txt").write_text("an earlier run")
    cfg = _cfg(tmp_path, synth, **{"privacy.delta": 0.09})
    rc, err = _run(capsys, ["train", "--quiet", "--no-ledger", "--config", str(cfg), "--out", str(out), "--overwrite"])
    assert rc == 2 and "privacy.delta" in _one_line(err)
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "keep.txt"]
    assert not list(tmp_path.glob("run.old-*")), "the moved-aside run was moved back"


def test_refused_start_in_an_existing_empty_directory_leaves_it_empty(tmp_path, synth, capsys):
    out = tmp_path / "run"
    out.mkdir()
    cfg = _cfg(tmp_path, synth, **{"privacy.delta": 0.09})
    rc, _ = _run(capsys, ["train", "--quiet", "--no-ledger", "--config", str(cfg), "--out", str(out)])
    assert rc == 2 and out.is_dir() and not any(out.iterdir())


def test_keystore_inside_the_run_dir_is_refused_and_rolled_back(tmp_path, synth, capsys):
    out = tmp_path / "run"
    cfg = _cfg(tmp_path, synth, **{"keys.path": str(out / "keys")})
    rc, err = _run(capsys, ["train", "--quiet", "--config", str(cfg), "--out", str(out)])
    assert rc == 2 and "keys" in _one_line(err)
    assert not out.exists()


@pytest.mark.parametrize("kind", ["file", "under_a_file"])
def test_out_pointing_at_a_file_is_one_line(tmp_path, synth, capsys, kind):
    f = tmp_path / "a-file"
    f.write_text("not a directory")
    out = f if kind == "file" else f / "run"
    cfg = _cfg(tmp_path, synth)
    rc, err = _run(capsys, ["train", "--quiet", "--config", str(cfg), "--out", str(out)])
    line = _one_line(err)
    assert rc == 2 and str(f) in line and "Traceback" not in err, line
    assert "not a directory" in line.lower()
    assert f.read_text() == "not a directory"


def test_existing_run_dir_and_resume_with_another_config_are_untouched(tmp_path, synth, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("name: other\n")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    cfg = _cfg(tmp_path, synth)
    for extra, expect in (([], "run directory exists"), (["--resume"], "different config")):
        rc, err = _run(capsys, ["train", "--quiet", "--config", str(cfg), "--out", str(out), *extra])
        assert rc == 2 and expect in _one_line(err)
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("args,expect", [
    (["--arm", "swarm"], "argument --arm: invalid choice: 'swarm'"),
    (["--rounds", "two"], "argument --rounds: invalid int value: 'two'"),
    (["--resume", "--overwrite"], "not allowed with argument"),
], ids=["arm", "rounds_not_int", "resume_and_overwrite"])
def test_bad_arguments_are_one_line(tmp_path, synth, capsys, args, expect):
    cfg = _cfg(tmp_path, synth)
    rc, err = _run(capsys, ["train", "--config", str(cfg), "--out", str(tmp_path / "run"), *args])
    line = _one_line(err)
    assert rc == 2 and line.startswith("bfdl train: error: ") and expect in line and "--help" in line, line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text,expect", [
    (None, "file not found"), ("a: [1, 2\n", "not valid YAML"), ("- 1\n- 2\n", "top level must be a mapping"),
], ids=["missing", "not_yaml", "not_a_mapping"])
def test_unreadable_config_file_is_one_line(tmp_path, capsys, text, expect):
    cfg = tmp_path / "c.yaml"
    if text is not None:
        cfg.write_text(text)
    rc, err = _run(capsys, ["train", "--config", str(cfg), "--out", str(tmp_path / "run")])
    line = _one_line(err)
    assert rc == 2 and str(cfg) in line and expect in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("changes,expect", [
    ({"model.config": "no_such_model"}, "model.config: unknown model 'no_such_model'"),
    ({"model.overrides": "{input_size: 16, width: 0}"}, "model.overrides.width: must be >= 1"),
    ({"privacy.target_epsilon": ".inf"}, "privacy.target_epsilon: must be a finite number"),
], ids=["unknown_model", "bad_override", "epsilon_inf"])
def test_config_check_refuses_what_train_refuses(tmp_path, synth, capsys, changes, expect):
    cfg = _cfg(tmp_path, synth, **changes)
    rc, err = _run(capsys, ["config", "check", str(cfg)])
    line = _one_line(err)
    assert rc == 2 and str(cfg) in line and expect in line, line
    good = _cfg(tmp_path, synth)
    assert _run(capsys, ["config", "check", str(good)])[0] == 0


def test_a_fixed_config_is_then_accepted_by_the_same_command(tmp_path, synth, capsys, monkeypatch):
    """After a refused start the same --out is accepted: the run starts (stopped right after its
    directory was prepared, before any training, by a refusal from a stub hook builder)."""
    out = tmp_path / "run"
    bad = _cfg(tmp_path, synth, **{"privacy.delta": 0.09})
    assert _run(capsys, ["train", "--quiet", "--no-ledger", "--config", str(bad), "--out", str(out)])[0] == 2
    import bfdl_tff.experiment as experiment
    from bfdl_tff.errors import BfdlError

    seen = []

    def stop(cfg, run_dir):
        seen.append(sorted(p.name for p in run_dir.path.iterdir()))
        raise BfdlError("stub: stop before training")

    monkeypatch.setattr(experiment, "build_hooks", stop)
    good = _cfg(tmp_path, synth)
    rc, err = _run(capsys, ["train", "--quiet", "--config", str(good), "--out", str(out)])
    assert rc == 2 and "stub: stop before training" in err
    assert seen == [["config.yaml", "environment.json"]], "the same --out was accepted and prepared"
    assert not out.exists() and os.path.isdir(tmp_path)
