"""Keys away from the data they sign (issue 17.4): a B-FDL run with the default configuration
keeps every institution key in the per-user keystore (``$BFDL_KEYSTORE`` in the tests), none in the
run directory; a keystore configured inside the run directory is refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bfdl_tff.config import ExperimentConfig
from bfdl_tff.integration.audit import verify_run
from bfdl_tff.integration.hook import build_ledger_hook
from bfdl_tff.integration.simulate import run_synthetic
from bfdl_tff.keys import KeyStoreError
from bfdl_tff.runs import RunDir

H = ["hospital_a", "hospital_b", "hospital_c"]


def test_default_run_keeps_keys_outside_the_run_dir(tmp_path, no_key_material):
    cfg = ExperimentConfig(name="keys", arm="bfdl")
    run = RunDir.create(tmp_path / "keys-bfdl", cfg)
    run_synthetic(build_ledger_hook(cfg, run), run, hospitals=H, rounds=2)
    assert verify_run(run.path, write=False).ok
    keystore = Path(os.environ["BFDL_KEYSTORE"])
    for name in ("hospital-a", "hospital-b", "hospital-c", "aggregator", "auditor", "admin"):
        assert (keystore / f"{name}.key").is_file()
    reg = json.loads((run.ledger_dir / "registry.json").read_text())
    assert reg["keys_location"] == f"local keystore {keystore}"
    assert not (run.path / "keys").exists()
    no_key_material(run.path)


def test_keystore_inside_the_run_dir_is_refused(tmp_path):
    cfg = ExperimentConfig(name="inside", arm="bfdl")
    run = RunDir.create(tmp_path / "inside-bfdl", cfg)
    cfg.keys.path = str(run.path / "keys")
    with pytest.raises(KeyStoreError, match="inside the run directory"):
        build_ledger_hook(cfg, run)
    cfg.keys.path = str(run.path)
    with pytest.raises(KeyStoreError, match="inside the run directory"):
        build_ledger_hook(cfg, run)
    assert not (run.path / "keys").exists() and not run.ledger_dir.exists()
