"""Issue 16.3: nothing private leaves a hospital un-noised. A tiny ``bfdl`` run (TFF, patient-level
DP-SGD, masked secure aggregation, 4 PBFT replicas); then every server-side file of the run
directory (all but ``hospitals/``) and every ledger transaction is walked: no training loss, no
clipped fraction and no per-round example count of a hospital appears there; they are in the
hospitals' own ``local_metrics.csv``. The public ``n_k`` (FedAvg weight) is on the ledger."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from integration_helpers import tiny_bfdl_config

pytestmark = [pytest.mark.tff]

PRIVATE = ("train_loss", "clipped_fraction")


def _cfg(rounds: int = 2):
    return tiny_bfdl_config("boundary", rounds)


def server_side_files(run: Path) -> list[Path]:
    """Every file of the run directory except the hospitals' own ``hospitals/`` tree."""
    return [p for p in run.rglob("*") if p.is_file() and "hospitals" not in p.relative_to(run).parts]


def ledger_payloads(run: Path) -> list[tuple[str, dict[str, Any]]]:
    """(kind, payload) of every transaction on the first replica's chain."""
    from bfdl_tff.integration.audit import open_audit
    from bfdl_tff.integration.chain import read_chain

    files = open_audit(run).files
    return [(t.kind, t.payload) for t in read_chain(files.replica_dbs()[0], files.load_genesis()).txs]


def walk(obj: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """(key, leaf value) of every leaf of a JSON-like object."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from walk(v, str(k))
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from walk(v, key)
    else:
        yield key, obj


def test_bfdl_run_keeps_hospital_statistics_hospital_side(tmp_path):
    from bfdl_tff.federated.runner import run_experiment
    from bfdl_tff.federated.testing import toy_federation
    from bfdl_tff.integration.hook import attach_hooks
    from bfdl_tff.runs import RunDir

    cfg = _cfg()
    rd = RunDir.create(tmp_path / "run", cfg)
    data = toy_federation(size=16)
    run_experiment(cfg, rd, hooks=attach_hooks(cfg, rd), data=data, progress=False)
    n_k = {n: len(data.train[n]) for n in data.names}

    # hospital side: each hospital's own statistics, one row per round
    private_values: set[str] = set()
    for name in data.names:
        rows = list(csv.DictReader(rd.hospital_metrics_file(name).open()))
        assert [int(r["round"]) for r in rows] == [1, 2]
        for r in rows:
            assert float(r["train_loss"]) > 0 and 0.0 <= float(r["clipped_fraction"]) <= 1.0
            private_values |= {r["train_loss"], r["clipped_fraction"]} - {"0", "1"}
    assert private_values

    # server side: metrics.csv cells empty, summary.json without the keys, no value anywhere
    rows = list(csv.DictReader(rd.metrics_file.open()))
    assert len(rows) == 2 and all(r[c] == "" for r in rows for c in PRIVATE)
    assert all(r["test_macro_auc"] for r in rows)  # the server's own evaluation is there
    summary = json.loads(rd.summary_file.read_text())
    # issue 16.4: validation AUC from the summed histograms (thresholds chosen from the same sums)
    assert 0.0 <= summary["val_macro_auc_federated"] <= 1.0 and summary["val_histogram_bins"] == 1000
    assert summary["threshold_rule"] == "youden_val"
    # ... summed through the masked protocol with the ledger's keys (secure_histograms.MaskedHistogramSum)
    assert summary["val_histogram_secure_sum"]["protocol"] == "masked"
    assert summary["val_histogram_secure_sum"]["survivors"] == sorted(n_k)
    assert all(abs(v * 1000 - round(v * 1000)) < 1e-9 for v in summary["thresholds"].values())  # bin edges
    assert not [k for k, _ in walk(summary) if k in PRIVATE]
    files = server_side_files(rd.path)
    assert rd.metrics_file in files and rd.summary_file in files
    for f in files:
        data_bytes = f.read_bytes()
        leaked = [v for v in private_values if v.encode() in data_bytes]
        assert not leaked, f"{f} holds hospital-side statistics {leaked}"
        if rd.tensorboard_dir in f.parents:
            assert not [c for c in PRIVATE if c.encode() in data_bytes], f"{f}: private tag"

    # ledger: no private statistic in any payload; commitments carry the public n_k only
    txs = ledger_payloads(rd.path)
    assert {k for k, _ in txs} >= {"metrics.record", "round.commit_update", "privacy.record"}
    for kind, payload in txs:
        assert not [k for k, _ in walk(payload) if k in PRIVATE], f"{kind} carries a private statistic"
    commits = [p for k, p in txs if k == "round.commit_update"]
    assert len(commits) == 2 * len(n_k)
    assert all(p["num_examples"] in n_k.values() for p in commits)

    # issue 16.2: each hospital's epsilon/delta per round on the ledger and in privacy_rounds.csv;
    # the last round's equal privacy.json; the audit checks both, and catches an edited file
    from bfdl_tff.integration.audit import verify_run

    records = [p for k, p in txs if k == "privacy.record"]
    assert [p["round"] for p in records] == [1, 2]
    final = {h["hospital"]: h for h in json.loads(rd.privacy_file.read_text())["per_hospital"]}
    assert set(records[-1]["hospitals"]) == set(final) == set(n_k)
    for name, v in records[-1]["hospitals"].items():
        assert v["epsilon"] == pytest.approx(final[name]["epsilon"], rel=1e-12)
        assert v["delta"] == final[name]["delta"] and v["epsilon"] > records[0]["hospitals"][name]["epsilon"] > 0
    assert len(list(csv.DictReader(rd.privacy_rounds_file.open()))) == 2 * len(n_k)
    res = verify_run(rd.path)
    assert res.ok, res.first_failure
    assert res.check("privacy_per_hospital").ok
    text = rd.privacy_rounds_file.read_text()
    first_eps = repr(records[0]["hospitals"][data.names[0]]["epsilon"])
    assert first_eps in text
    rd.privacy_rounds_file.write_text(text.replace(first_eps, repr(float(first_eps) * 0.5)))
    res = verify_run(rd.path)
    assert not res.check("privacy_per_hospital").ok and "privacy_rounds.csv" in res.check("privacy_per_hospital").message


# ---- issue 16.5: deployment mode draws DP noise from the OS CSPRNG and writes no seed ----------

SECRETS = {62: 0x2BADC0FFEE15C0DE, 128: 0x5EEDC0DE5EEDC0DE1234567890ABCDEF}


def test_deployment_noise_writes_no_seed(tmp_path, monkeypatch):
    from bfdl_tff.federated import noise
    from bfdl_tff.federated.runner import run_experiment
    from bfdl_tff.federated.testing import toy_federation
    from bfdl_tff.integration.hook import attach_hooks
    from bfdl_tff.runs import RunDir

    drawn: list[int] = []

    def fake_entropy(bits: int) -> int:  # stands in for the OS CSPRNG so the test knows the value
        drawn.append(bits)
        return SECRETS[bits]

    monkeypatch.setattr(noise, "system_entropy", fake_entropy)
    cfg = _cfg()
    cfg.privacy.noise_seed = "system"
    rd = RunDir.create(tmp_path / "deploy", cfg)
    summary = run_experiment(cfg, rd, hooks=attach_hooks(cfg, rd), data=toy_federation(size=16), progress=False)
    assert drawn.count(128) == 2 * 3  # one DP-SGD generator per (round, hospital), all from the CSPRNG
    assert summary["seeds"]["dp_noise"] == "system"
    assert json.loads((rd.path / "environment.json").read_text())["seeds"]["dp_noise"] == "system"
    needles = [s for v in SECRETS.values() for s in (str(v), f"{v:x}", f"{v:X}")]
    files = [p for p in rd.path.rglob("*") if p.is_file()]
    assert len(files) > 10
    for f in files:
        data_bytes = f.read_bytes()
        assert not [n for n in needles if n.encode() in data_bytes], f"{f} holds the noise seed"
    for kind, payload in ledger_payloads(rd.path):
        text = json.dumps(payload)
        assert not [n for n in needles if n in text], f"{kind} holds the noise seed"
        assert not [k for k, _ in walk(payload) if "seed" in k.lower()], f"{kind} names a seed"


def test_deployment_mode_with_explicit_noise_seed_is_refused(tmp_path):
    from bfdl_tff.config import ExperimentConfig, from_dict
    from bfdl_tff.errors import ConfigError
    from bfdl_tff.federated.runner import run_experiment
    from bfdl_tff.federated.testing import toy_federation

    with pytest.raises(ConfigError, match="seeds.dp_noise.*privacy.noise_seed: system"):
        from_dict(ExperimentConfig, {"privacy": {"noise_seed": "system"}, "seeds": {"dp_noise": 7}}, source="x.yaml")
    cfg = _cfg()
    cfg.privacy.noise_seed, cfg.seeds.dp_noise = "system", 7
    with pytest.raises(ConfigError, match="seeds.dp_noise"):
        run_experiment(cfg, tmp_path / "refused", data=toy_federation(size=16), progress=False)
    assert not (tmp_path / "refused" / "metrics.csv").exists()


def test_system_noise_generators_are_fresh_and_recorded_ones_repeat():
    from bfdl_tff.config import ExperimentConfig
    from bfdl_tff.federated import noise

    cfg = ExperimentConfig()
    a, b = (noise.dp_sgd_rng(cfg, round_num=3, hospital_index=1).random(4) for _ in range(2))
    assert np.array_equal(a, b)
    cfg.privacy.noise_seed = "system"
    a, b = (noise.dp_sgd_rng(cfg, round_num=3, hospital_index=1).random(4) for _ in range(2))
    assert not np.array_equal(a, b)
    assert noise.keyring_noise_seed(cfg) is None and noise.dp_noise_seed(cfg) != noise.dp_noise_seed(cfg)
    assert cfg.recorded_seeds()["dp_noise"] == "system" and isinstance(cfg.resolved_seeds()["dp_noise"], int)
