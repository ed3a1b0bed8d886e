"""Foundation: config validation, run directories, CLI, atomic writes, TFF process hygiene."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bfdl_tff import cli, tff_runtime
from bfdl_tff.config import ExperimentConfig, load_config, resolve_experiment_config, to_dict
from bfdl_tff.errors import ConfigError, RunDirError
from bfdl_tff.io_utils import atomic_open, atomic_write_text
from bfdl_tff.runs import RunDir

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_valid_config_loads_with_types(tmp_path):
    p = write(tmp_path, "name: t\narm: federated\nfederated:\n  rounds: 3\n  client_lr: 1\nprivacy:\n  delta: 1.0e-6\n")
    cfg = load_config(p)
    assert cfg.arm == "federated" and cfg.federated.rounds == 3
    assert isinstance(cfg.federated.client_lr, float) and cfg.federated.client_lr == 1.0
    assert cfg.privacy.delta == 1e-6


@pytest.mark.parametrize(
    "text, key, fragment",
    [
        ("federated:\n  roundz: 3\n", "federated.roundz", "unknown key"),
        ("federated:\n  rounds: three\n", "federated.rounds", "expected an integer"),
        ("federated:\n  rounds: 0\n", "federated.rounds", ">= 1"),
        ("arm: quantum\n", "arm", "must be one of"),
        ("privacy:\n  target_epsilon: -1\n", "privacy.target_epsilon", "> 0"),
        ("data:\n  synth_site_shift: 1\n", "data.synth_site_shift", "true/false"),
        ("ledger:\n  replicas: 5\n", "ledger.replicas", "3f+1"),
        ("data: [1, 2]\n", "data", "mapping"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path, text, key, fragment):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    msg = str(ei.value)
    assert msg.startswith(str(p)), msg
    assert ei.value.key == key, msg
    assert fragment in msg


def test_invalid_yaml_reports_line(tmp_path):
    p = write(tmp_path, "name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_cli_malformed_config_exit_2_one_line(tmp_path, capsys):
    p = write(tmp_path, "federated:\n  rounds: -4\n")
    rc = cli.main(["config", "check", str(p)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and str(p) in err[0] and "federated.rounds" in err[0]


def test_every_checked_in_experiment_config_is_valid():
    files = sorted((REPO / "configs" / "experiments").glob("*.yaml"))
    for f in files:
        load_config(f)


def test_every_command_module_registers():
    """Every command in cli.COMMAND_MODULES exists and registers its subcommand (none is skipped)."""
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == list(cli.COMMAND_MODULES)


def test_resolve_experiment_config_by_name(tmp_path):
    with pytest.raises(ConfigError, match="no such experiment config"):
        resolve_experiment_config("definitely-not-a-config")


def test_run_dir_never_silently_overwritten(tmp_path):
    cfg = ExperimentConfig(name="x")
    rd = RunDir.create(tmp_path / "r", cfg)
    assert (rd.path / "config.yaml").exists()
    env = rd.read_json("environment.json")
    assert env["seeds"]["seed"] == 0 and "tensorflow" in env["versions"]
    (rd.path / "results.json").write_text("{}")
    with pytest.raises(RunDirError, match="exists"):
        RunDir.create(tmp_path / "r", cfg)
    # resume with the same config works, with a different one fails
    RunDir.create(tmp_path / "r", cfg, resume=True)
    other = ExperimentConfig(name="x", seed=3)
    with pytest.raises(RunDirError, match="different config"):
        RunDir.create(tmp_path / "r", other, resume=True)
    # overwrite moves the old directory aside, it does not delete it
    RunDir.create(tmp_path / "r", other, overwrite=True)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("r.old-")]
    assert len(aside) == 1 and (aside[0] / "results.json").exists()
    assert RunDir.open(tmp_path / "r").config.seed == 3


def test_seeds_derived_and_distinct():
    s = ExperimentConfig(seed=2).resolved_seeds()
    vals = [v for k, v in s.items() if k != "seed"]
    assert len(set(vals)) == len(vals)
    assert ExperimentConfig(seed=2).resolved_seeds() == s
    assert ExperimentConfig(seed=3).resolved_seeds() != s


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    p = tmp_path / "a.txt"
    atomic_write_text(p, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(p, "w") as fh:
            fh.write("new partial")
            raise RuntimeError("boom")
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["a.txt"]


def test_cli_version_and_info_without_tf():
    out = subprocess.run(
        [sys.executable, "-m", "bfdl_tff.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "bfdl-tff" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "bfdl_tff.cli", "info", "--no-import", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert '"tensorflow-federated": "0.87.0"' in out.stdout


@pytest.mark.tff
def test_tff_worker_is_stopped_by_execution_context():
    import tensorflow as tf
    import tensorflow_federated as tff

    with tff_runtime.execution_context("native"):

        @tff.tensorflow.computation(tf.int32)
        def add_one(x):
            return x + 1

        assert add_one(41) == 42
        assert tff_runtime.worker_children(), "expected the C++ context to start a worker_binary"
    assert tff_runtime.worker_children() == []


@pytest.mark.tff
def test_bfdl_info_subprocess_leaves_no_worker(tmp_path):
    """`bfdl info` imports TFF; run it with output to files (not pipes) and check for leftovers."""
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with open(out, "w") as o, open(err, "w") as e:
        rc = subprocess.run([sys.executable, "-m", "bfdl_tff.cli", "info"], stdout=o, stderr=e, timeout=300).returncode
    text = out.read_text()
    assert rc == 0, err.read_text()[-2000:]
    for name in ("Python", "tensorflow ", "tensorflow-federated", "tensorflow-privacy", "dp-accounting", "keras", "CPU count"):
        assert name in text
