"""The reproduction's privacy_utility stage with a fake trainer (no training): the points and seeds
come from the profile YAML, the arms' epsilon reuses arms/bfdl-s<seed>, each trained point's
config differs from the arms' B-FDL config only in its privacy and the ledger, the no-noise point
sets the tiny noise multiplier, the index lists every point, and a second invocation skips
finished runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bfdl_tff.config import dump_yaml, to_dict
from bfdl_tff.errors import ConfigError
from bfdl_tff.reproduce import privacy_utility as PU
from bfdl_tff.reproduce.context import Context
from bfdl_tff.reproduce.profiles import NO_NOISE_MULTIPLIER, load_profile, merge
from bfdl_tff.reproduce.stages import STAGE_NAMES, stage_config


def _ctx(tmp_path: Path, profile: str | Path = "quick") -> Context:
    return Context(profile=load_profile(profile), runs=tmp_path / "runs", out=tmp_path / "results", data_root=None)


@pytest.fixture()
def fake_train(monkeypatch):
    calls = []

    def train_arm(cfg, run_dir, *, resume=False, progress=True, config_source=None):  # noqa: ARG001
        calls.append(cfg)
        s = {"arm": cfg.arm, "seed": cfg.seed, "macro_auc": 0.5 + 0.01 * cfg.privacy.target_epsilon}
        run_dir.summary_file.write_text(json.dumps(s))
        return s

    import bfdl_tff.experiment as E

    monkeypatch.setattr(E, "train_arm", train_arm)
    return calls


def test_stage_runs_the_profile_points(tmp_path, fake_train):
    ctx = _ctx(tmp_path)
    assert "privacy_utility" in STAGE_NAMES
    arms_run = ctx.runs / "arms" / "bfdl-s0"
    outs = PU.stage_privacy_utility(ctx)
    # quick: epsilons [1, 8] + no noise, seed 0; epsilon 1 is the arms' epsilon -> reused, not trained
    assert [(c.privacy.target_epsilon, c.privacy.noise_multiplier) for c in fake_train] == [
        (8.0, 0.0), (1.0, NO_NOISE_MULTIPLIER)]
    base = to_dict(ctx.config("bfdl", 0, name="x"))
    for cfg in fake_train:
        d = to_dict(cfg)
        assert d["ledger"]["enabled"] is False and base["ledger"]["enabled"] is True
        assert merge(d, {"privacy": base["privacy"], "ledger": base["ledger"], "name": "x"}) == base
    index = json.loads((ctx.runs / "privacy_utility" / "points.json").read_text())
    assert [(p["epsilon"], p["seed"], p["run"], p["reused"]) for p in index["points"]] == [
        (1.0, 0, "arms/bfdl-s0", True), (8.0, 0, "privacy_utility/eps8-s0", False),
        (None, 0, "privacy_utility/nonoise-s0", False)]
    assert ctx.runs / "privacy_utility" / "points.json" in outs and not arms_run.exists()
    fake_train.clear()
    PU.stage_privacy_utility(ctx)  # finished runs with the same config are skipped
    assert fake_train == []


def test_seeds_per_point_and_default_budget(tmp_path):
    pts = PU.planned_points(_ctx(tmp_path, "default"))
    trained = [(p["epsilon"], p["seed"]) for p in pts if not p["reused"]]
    assert trained == [(0.5, 0), (2.0, 0), (4.0, 0), (8.0, 0), (16.0, 0), (64.0, 0), (None, 0)]
    assert [p["run"] for p in pts if p["reused"]] == [f"arms/bfdl-s{s}" for s in (0, 1, 2)]
    paper = PU.planned_points(_ctx(tmp_path, "paper"))
    assert {p["seed"] for p in paper if p["epsilon"] == 0.5} == {0, 1, 2}
    cfg = stage_config(_ctx(tmp_path, "default"), "privacy_utility")
    assert cfg["epsilons"] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 64.0] and len(cfg["points"]) == 10


@pytest.mark.parametrize("section, message", [
    ({"epsilons": [1, 0]}, "privacy_utility.epsilons: every epsilon must be > 0"),
    ({"epsilons": [1, 1]}, "privacy_utility.epsilons: repeated"),
    ({"epsilons": [1], "seeds_by_epsilon": {2: [0]}}, "privacy_utility.seeds_by_epsilon.2: not one of epsilons"),
    ({"epsilons": [1], "seeds_by_epsilon": {1: []}}, "expected a non-empty list of integer seeds"),
    ({"epsilons": [1], "bogus": 1}, "privacy_utility.bogus: unknown key"),
])
def test_bad_curve_section_names_the_file_and_key(tmp_path, section, message):
    prof = tmp_path / "p.yaml"
    prof.write_text(dump_yaml({"description": "d", "expected_runtime": "r", "experiment": "quick",
                               "privacy_utility": section}))
    with pytest.raises(ConfigError, match=message) as e:
        load_profile(prof)
    assert str(prof) in str(e.value)
