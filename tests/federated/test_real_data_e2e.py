"""End to end on real chest X-rays (issue 15.5): one federated round on a few hundred
PneumoniaMNIST images (binary head: one sigmoid output, metrics.csv's AUC column is the task's
label, accuracy at 0.5 in summary.json) and on the 621-image NIH sample (14 findings). Skipped with
the reason when ``../shared`` is absent."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from bfdl_tff.config import REPO_ROOT, ExperimentConfig, from_dict
from bfdl_tff.data.labels import FINDINGS

pytestmark = pytest.mark.tff  # about 7 s per test (TFF start-up); in the default suite so CI runs them


def _shared(rel: str) -> Path:
    base = Path(os.environ.get("BFDL_SHARED") or REPO_ROOT.parent / "shared")
    p = base / rel
    if not p.exists():
        pytest.skip(f"shared real data {p} not present (set BFDL_SHARED or put the shared folder at {REPO_ROOT.parent / 'shared'})")
    return p


def _cfg(data: dict, arm: str = "federated", **model_overrides) -> ExperimentConfig:
    d = {"name": "e2e", "arm": arm, "seed": 0, "data": data,
         "model": {"config": "cnn32", "overrides": model_overrides},
         "federated": {"rounds": 1, "batch_size": 32}, "ledger": {"enabled": False}}
    return from_dict(ExperimentConfig, d, source="<test>")


def _header(run: Path) -> list[str]:
    with open(run / "metrics.csv", newline="") as fh:
        return next(csv.reader(fh))


@pytest.mark.parametrize("arm", ["federated", "centralized"])
def test_one_round_on_a_pneumoniamnist_subset(tmp_path, arm):
    from bfdl_tff.federated.runner import run_experiment

    src = np.load(_shared("pneumoniamnist/pneumoniamnist.npz"))
    rng = np.random.default_rng(0)
    sub = {}
    for split, n in (("train", 300), ("val", 100), ("test", 100)):
        idx = np.sort(rng.choice(len(src[f"{split}_labels"]), n, replace=False))
        sub[f"{split}_images"], sub[f"{split}_labels"] = src[f"{split}_images"][idx], src[f"{split}_labels"][idx]
    npz = tmp_path / "pneumoniamnist.npz"
    np.savez(npz, **sub)
    cfg = _cfg({"source": "medmnist", "npz": str(npz), "root": str(tmp_path / "export"), "image_size": 28,
                "hospitals": 3, "scheme": "dirichlet", "alpha": 0.5}, arm, input_size=28)
    run = tmp_path / "run"
    s = run_experiment(cfg, run, progress=False)
    assert s["task"] == {"kind": "binary", "labels": ["pneumonia"]}
    assert s["num_test_examples"] == 100 and sum(s["num_examples"].values()) == 300
    assert s["num_positives_test"]["pneumonia"] == int(sub["test_labels"].sum())
    assert 0.0 <= s["accuracy_at_0.5"] <= 1.0 and set(s["thresholds"]) == {"pneumonia"}
    cols = _header(run)
    assert "auc_pneumonia" in cols and not any(c == f"auc_{f}" for f in FINDINGS for c in cols)
    weights = np.load(run / "final_model.npz")
    assert weights[sorted(weights.files)[-1]].shape == (1,)  # one output bias
    assert json.loads((run / "data.json").read_text())["task"]["kind"] == "binary"


def test_one_round_on_the_nih_sample(tmp_path):
    from bfdl_tff.federated.runner import run_experiment

    root = _shared("nih_cxr14/real_sample_256")
    cfg = _cfg({"source": "nih", "root": str(root), "image_size": 32, "hospitals": 3, "scheme": "iid",
                "test_fraction": 0.3, "val_fraction": 0.2, "stratify_test": True})
    run = tmp_path / "run"
    s = run_experiment(cfg, run, progress=False)
    assert s["task"]["kind"] == "multilabel" and s["task"]["labels"] == list(FINDINGS)
    assert s["num_test_examples"] + sum(s["num_examples"].values()) < 621  # val rows are neither
    assert 150 <= s["num_test_examples"] <= 220 and s["synthetic"] is False
    assert all(s["num_positives_test"][f] >= 1 for f in FINDINGS)  # stratified: every finding in test
    assert [c for c in _header(run) if c.startswith("auc_")] == [f"auc_{f}" for f in FINDINGS]
