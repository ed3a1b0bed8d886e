"""The real-data profiles (issue 15.2/15.3): ``nih-sample`` and ``pneumoniamnist`` parse, run only
their stages, default to the shared data (``--data-root`` overrides), write to their own runs /
results folders, and a MedMNIST profile's ``--data-root FILE.npz`` sets ``data.npz``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from bfdl_tff.config import ARMS, REPO_ROOT
from bfdl_tff.errors import BfdlError, ConfigError
from bfdl_tff.reproduce import orchestrator as O
from bfdl_tff.reproduce.profiles import load_profile
from bfdl_tff.reproduce.stages import STAGE_NAMES


def _args(profile: str, **kw) -> argparse.Namespace:
    a = O.build_parser().parse_args(["--profile", profile])
    for k, v in kw.items():
        setattr(a, k, v)
    return a


def test_nih_sample_profile():
    p = load_profile("nih-sample")
    cfg = p.base_config()
    assert cfg.data.source == "nih" and cfg.data.hospitals == 3 and cfg.data.stratify_test
    assert 0.25 <= cfg.data.test_fraction <= 0.35 and cfg.data.image_size in (32, 64)
    assert p.arms.seeds == [0, 1, 2] and p.label == "real NIH images, 621-image sample"
    assert set(p.stages) <= set(STAGE_NAMES) and {"arms", "attacks", "audit"} <= set(p.stages)
    assert "scalability" not in p.stages
    run = p.run_config("federated", 1, name="federated-s1", data_root=Path("/x/nih"))
    assert run.data.root == "/x/nih" and run.arm == "federated" and run.seed == 1


def test_pneumoniamnist_profile_maps_an_npz_root_to_data_npz():
    p = load_profile("pneumoniamnist")
    cfg = p.base_config()
    assert cfg.data.source == "medmnist" and cfg.data.image_size == 28 and cfg.data.hospitals == 3
    assert cfg.data.scheme == "dirichlet" and cfg.data.alpha == 0.5
    assert cfg.model.overrides.get("input_size") == 28
    assert p.stages == ["data", "arms", "real_data"] and p.arms.seeds == [0, 1, 2]
    run = p.run_config("bfdl", 0, name="bfdl-s0", data_root=Path("/elsewhere/pm.npz"))
    assert run.data.npz == "/elsewhere/pm.npz" and run.data.root == cfg.data.root  # export dir unchanged
    run = p.run_config("bfdl", 0, name="bfdl-s0", data_root=Path("/export"))
    assert run.data.root == "/export" and run.data.npz == cfg.data.npz


@pytest.mark.parametrize("profile,runs,results", [("nih-sample", "runs/nih_sample", "results/runs_nih_sample"),
                                                  ("pneumoniamnist", "runs/pneumoniamnist", "results/runs_pneumoniamnist")])
def test_real_profiles_default_folders_and_stages(profile, runs, results, tmp_path):
    prof = load_profile(profile)
    root = REPO_ROOT / prof.data_root
    if not root.exists():
        pytest.skip(f"shared real data {root} not present (put the shared folder at {REPO_ROOT.parent / 'shared'})")
    ctx = O.context_from_args(_args(profile))
    assert ctx.runs == (REPO_ROOT / runs).resolve() and ctx.out == (REPO_ROOT / results).resolve()
    assert ctx.data_root == root
    assert [s.name for s in O._select(_args(profile))] == [s for s in STAGE_NAMES if s in prof.stages]
    ctx = O.context_from_args(_args(profile, runs=str(tmp_path / "r"), out=str(tmp_path / "o"), data_root=str(tmp_path)))
    assert ctx.runs == tmp_path / "r" and ctx.out == tmp_path / "o" and ctx.data_root == tmp_path


def test_missing_data_root_is_one_clear_error(tmp_path):
    with pytest.raises(BfdlError, match="--data-root .*nope: no such file"):
        O.context_from_args(_args("nih-sample", data_root=str(tmp_path / "nope")))


def test_unknown_stage_in_a_profile_names_the_file(tmp_path):
    src = yaml.safe_load((REPO_ROOT / "configs/profiles/nih-sample.yaml").read_text())
    src["stages"] = ["arms", "fly"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(src))
    with pytest.raises(ConfigError, match=r"bad.yaml.*stages.*fly"):
        load_profile(bad)


def test_known_stages_agree_with_the_stages_module():
    from bfdl_tff.reproduce.profiles import KNOWN_STAGES

    assert KNOWN_STAGES == tuple(STAGE_NAMES)


def test_default_profile_still_runs_every_stage():
    assert load_profile("default").stages == []
    assert [s.name for s in O._select(_args("default"))] == list(STAGE_NAMES)
    assert set(ARMS) == {"centralized", "federated", "bfdl"}


def test_real_data_stage_appends_its_section_to_the_report_once(tmp_path):
    import json

    from bfdl_tff.reproduce import stages as S
    from bfdl_tff.reproduce.context import Context

    prof = load_profile("nih-sample")
    runs, out = tmp_path / "runs", tmp_path / "results"
    for arm in ARMS:
        d = runs / "arms" / f"{arm}-s0"
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps({"arm": arm, "seed": 0, "final_macro_auc": 0.55, "per_label_accuracy": 0.6,
                                                    "all_negative_accuracy": 0.9, "num_test_examples": 185,
                                                    "task": {"kind": "multilabel", "labels": ["A", "B"]}}))
    out.mkdir()
    (out / "REPORT.md").write_text("# report\n\nbody\n")
    ctx = Context(profile=prof, runs=runs, out=out, data_root=tmp_path, force=False)
    for _ in range(2):
        S.stage_real_data(ctx)
    text = (out / "REPORT.md").read_text()
    assert text.startswith("# report\n\nbody\n\n## Real data") and text.count("## Real data") == 1
    assert "### real NIH images, 621-image sample" in text
    assert S.stage_real_data(Context(profile=load_profile("default"), runs=runs, out=tmp_path / "o2",
                                     data_root=None, force=False)) == []
