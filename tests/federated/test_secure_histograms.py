"""Issue 16.4 (secure): the bfdl arm's validation-score histograms are summed securely. The masked
protocol's sum of K = 3 hospitals' histograms equals the plain sum exactly (integer path, scale
1), also with a dropout; what enters the server's sum (and every masked input its state machine
received) is never a hospital's encoded histogram; TFF's secure sum equals the plain sum; the
thresholds of a tiny masked bfdl run equal those from the plain sum of the same histograms."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bfdl_tff.federated.federated_eval import plain_sum, score_histograms, thresholds_from_histograms
from bfdl_tff.federated.secure_histograms import MaskedHistogramSum, exact_integer_settings
from bfdl_tff.secagg import EphemeralKeyring
from bfdl_tff.secagg.messages import MaskedInput

H = ["hospital_a", "hospital_b", "hospital_c"]
BINS = 200


def _histograms(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for h, n in zip(H, (40, 75, 120)):
        y = (rng.random((n, 4)) < [0.2, 0.4, 0.05, 0.5]).astype(np.float32)
        p = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0.0, 1.0)
        out[h] = score_histograms(y, p, bins=BINS)
    return out


def _ring_sum(vectors):
    return np.sum(np.stack([np.asarray(v, np.int64) for v in vectors]), axis=0) % (1 << 32)


def test_exact_integer_settings_have_scale_one():
    q = exact_integer_settings(3).quantizer(3)
    assert q.scale == 1.0 and q.level == (2**31 - 1) // 3
    x = np.array([0, 1, 7, q.level], dtype=np.float64)
    assert np.array_equal(q.to_integers(x), x.astype(np.int64))


def test_masked_sum_equals_plain_sum_exactly_and_server_sees_only_masked_vectors():
    seen: list[np.ndarray] = []
    summer = MaskedHistogramSum(keyring=EphemeralKeyring(H, run_id="t"), sum_fn=_ring_sum,
                                on_server_input=lambda vs: seen.extend(np.array(v, copy=True) for v in vs))
    hists = _histograms()
    total = summer(hists)
    assert total.dtype == np.int64 and np.array_equal(total, plain_sum(hists))
    assert summer.last["survivors"] == H and summer.last["session"] == 1 and summer.last["aggregate_sha256"]
    out = summer.last_round
    assert out is not None and out.quantizer["scale"] == 1.0
    inbox = [m for m in out.server_inbox if isinstance(m, MaskedInput)]
    assert len(inbox) == 3 and len(seen) == 3
    assert all(m.run_id == f"t/{summer.session_id}" and m.round == 1 for m in inbox)
    assert summer.session_id.startswith("validation-")
    encoded = [np.asarray(h, np.int64).ravel() % (1 << 32) for h in hists.values()]
    for v in seen + [m.vector for m in inbox]:
        for q in encoded:  # mostly-zero counts vs uniform masked residues: chance agreement n / 2^32
            assert np.count_nonzero(np.asarray(v, np.int64) == q) <= 2
    # a second evaluation is a fresh protocol session with fresh masks
    assert np.array_equal(summer(hists), total) and summer.last["session"] == 2


def test_count_above_the_ring_bound_is_refused_before_masking():
    summer = MaskedHistogramSum(keyring=EphemeralKeyring(H, run_id="t"), sum_fn=_ring_sum)
    hists = _histograms()
    hists["hospital_b"] = hists["hospital_b"].copy()
    hists["hospital_b"][0, 0, 0] = (2**31 - 1) // 3 + 1
    with pytest.raises(ValueError, match="hospital_b"):
        summer(hists)
    with pytest.raises(ValueError, match="at least two"):
        summer({"hospital_a": hists["hospital_a"]})
    with pytest.raises(RuntimeError, match="keyring"):
        MaskedHistogramSum()(hists)


def test_masked_sum_through_tff_modular_sum_equals_plain_sum(tff_context):
    summer = MaskedHistogramSum(keyring=EphemeralKeyring(H, run_id="t"))  # default: TffModularSum(32)
    hists = _histograms(1)
    assert np.array_equal(summer(hists), plain_sum(hists))


def test_tff_secure_sum_of_histograms_equals_plain_sum(tff_test_context):
    from bfdl_tff.federated.secure_histograms import tff_secure_sum

    hists = _histograms(2)
    assert np.array_equal(tff_secure_sum(hists), plain_sum(hists))
    assert np.array_equal(tff_secure_sum(list(hists.values())), plain_sum(hists))


@pytest.mark.tff
def test_tiny_masked_bfdl_run_thresholds_equal_plain_sum_thresholds(tmp_path, monkeypatch):
    """A 1-round masked bfdl run (TFF, ephemeral keys): the server's histogram sum went through the
    masked protocol, equals the plain sum of the hospitals' histograms, and the run's thresholds
    and validation AUC are those the plain sum gives."""
    from bfdl_tff.config import ExperimentConfig, from_dict
    from bfdl_tff.federated.federated_eval import auc_from_histogram
    from bfdl_tff.federated.runner import run_experiment
    from bfdl_tff.federated.testing import toy_federation

    calls: list[tuple[dict[str, np.ndarray], np.ndarray]] = []
    original = MaskedHistogramSum.__call__

    def spy(self, histograms):
        total = original(self, histograms)
        calls.append(({h: np.array(v) for h, v in histograms.items()}, total))
        return total

    monkeypatch.setattr(MaskedHistogramSum, "__call__", spy)
    cfg = from_dict(ExperimentConfig, {
        "name": "hist", "arm": "bfdl",
        "model": {"config": "small_cnn", "overrides": {"input_size": 16, "width": 4, "conv_layers": 2}},
        "federated": {"rounds": 1, "batch_size": 8}, "ledger": {"enabled": False},
        "eval": {"threshold_rule": "youden_val"},
        "privacy": {"mode": "none", "secure_aggregation": "masked"}})
    data = toy_federation((12, 20, 28), size=16, n_val=24)
    summary = run_experiment(cfg, tmp_path, data=data, progress=False)
    assert summary["secure_aggregation"] == "masked"
    assert len(calls) == 1  # one evaluation (round 1), summed through the masked protocol
    hists, total = calls[0]
    assert sorted(hists) == sorted(data.names)
    assert np.array_equal(total, plain_sum(hists)) and int(total.sum()) == 3 * 24 * len(summary["thresholds"])
    findings = list(summary["thresholds"])
    assert summary["thresholds"] == thresholds_from_histograms(plain_sum(hists), rule="youden_val", findings=findings)
    plain_auc = {f: auc_from_histogram(plain_sum(hists)[j, 0], plain_sum(hists)[j, 1]) for j, f in enumerate(findings)}
    assert summary["val_per_finding_auc_federated"] == plain_auc
    secure = summary["val_histogram_secure_sum"]
    assert secure["protocol"] == "masked" and secure["survivors"] == sorted(data.names) and secure["session"] == 1
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["val_histogram_secure_sum"]["aggregate_sha256"] == secure["aggregate_sha256"]


def test_histogram_summer_follows_the_secure_aggregation():
    from bfdl_tff.federated.federated_eval import tff_sum
    from bfdl_tff.federated.secure_histograms import histogram_summer, tff_secure_sum

    masked = histogram_summer("masked", threshold=2, neighbours=0)
    assert isinstance(masked, MaskedHistogramSum) and masked.threshold == 2 and masked.keyring is None
    assert histogram_summer("tff_secure_sum") is tff_secure_sum
    assert histogram_summer("none") is tff_sum
    with pytest.raises(ValueError, match="unknown"):
        histogram_summer("plain")
