"""Patient-level accounting and per-hospital calibration (bfdl_tff.federated.accounting, issue 16)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bfdl_tff.config import ExperimentConfig
from bfdl_tff.errors import ConfigError
from bfdl_tff.federated import accounting as acc


def _cfg(**privacy) -> ExperimentConfig:
    cfg = ExperimentConfig(arm="bfdl")
    cfg.federated.rounds, cfg.federated.batch_size, cfg.federated.local_epochs = 5, 16, 1
    cfg.privacy.mode, cfg.privacy.delta = "sample", 1e-5
    for k, v in privacy.items():
        setattr(cfg.privacy, k, v)
    return cfg


def _gaussian_epsilon(sigma: float, delta: float) -> float:
    """Exact epsilon of one Gaussian mechanism, sensitivity 1, noise std sigma (Balle & Wang 2018):
    delta(eps) = Phi(-eps*sigma + 1/(2 sigma)) - e^eps Phi(-eps*sigma - 1/(2 sigma)); solved by bisection."""
    from scipy.stats import norm

    def d(eps: float) -> float:
        return norm.cdf(-eps * sigma + 0.5 / sigma) - math.exp(eps) * norm.cdf(-eps * sigma - 0.5 / sigma)

    lo, hi = 0.0, 50.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if d(mid) > delta else (lo, mid)
    return hi


def test_one_patient_with_many_images_is_plain_gaussian_composition():
    """A hospital whose 40 images all belong to one patient, batch 40: the patient is in every
    step (q = 1), so T steps with noise multiplier z are one Gaussian mechanism with z / sqrt(T)."""
    cfg = _cfg(unit="patient", noise_multiplier=3.0, accountant="pld")
    cfg.federated.batch_size = 40
    s = acc.schedule_for_config(cfg, {"hospital_a": 40}, source="t", num_patients={"hospital_a": 1})
    h = s.hospital("hospital_a")
    assert (h.sampling_rate, h.steps, h.num_units, h.expected_units_per_step) == (1.0, 5, 1, 1.0)
    exact = _gaussian_epsilon(3.0 / math.sqrt(5), 1e-5)
    assert s.epsilon_after(5) == pytest.approx(exact, rel=0.01)
    # RDP: T * alpha / (2 z^2), converted with the bound dp_accounting uses (Prop. 12 of 2004.00010)
    rdp = acc.PrivacySchedule(**{**s.__dict__, "accountant": "rdp"})
    alphas = np.array(acc.RDP_ORDERS)
    alphas = alphas[alphas > 1.01]
    hand = np.min(5 * alphas / (2 * 9.0) + np.log1p(-1 / alphas) - np.log(1e-5 * alphas) / (alphas - 1))
    assert rdp.epsilon_after(5) == pytest.approx(hand, rel=1e-9)
    assert rdp.epsilon_after(5) >= exact


def test_many_patients_with_one_image_each_equal_image_level():
    n = {"hospital_a": 300, "hospital_b": 700}
    patient = acc.schedule_for_config(_cfg(unit="patient"), n, source="t", num_patients=dict(n))
    image = acc.schedule_for_config(_cfg(unit="image"), n, source="t")
    assert patient.noise_multipliers == image.noise_multipliers
    assert patient.epsilons_after(5) == image.epsilons_after(5)
    assert [patient.hospital(k).expected_units_per_step for k in n] == pytest.approx([16.0, 16.0])


def test_patient_level_denominator_counts_patients():
    s = acc.schedule_for_config(_cfg(unit="patient"), {"hospital_a": 1000}, source="t", num_patients={"hospital_a": 250})
    h = s.hospital(0)
    assert h.sampling_rate == pytest.approx(0.016)
    assert h.expected_units_per_step == pytest.approx(4.0)  # q * patients, not the 16 images
    assert s.dp_sgd_kwargs("hospital_a") == {"noise_multiplier": h.noise_multiplier, "unit": "patient",
                                             "max_images_per_patient": 0, "dp_batch_size": 16}
    cfg = _cfg(unit="patient", batch_size=64)  # the private arm's own batch
    s64 = acc.schedule_for_config(cfg, {"hospital_a": 1000}, source="t", num_patients={"hospital_a": 250})
    assert s64.hospital(0).sampling_rate == pytest.approx(0.064) and s64.dp_sgd_kwargs("hospital_a")["dp_batch_size"] == 64


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_each_hospital_reaches_the_target_epsilon(accountant):
    n = {"hospital_a": 400, "hospital_b": 1500, "hospital_c": 4000}
    pats = {k: v // 3 for k, v in n.items()}
    s = acc.schedule_for_config(_cfg(unit="patient", target_epsilon=1.0, accountant=accountant), n, source="t",
                                num_patients=pats)
    eps = s.epsilons_after(5)
    for name, e in eps.items():
        assert 0.99 <= e <= 1.0, (name, e)
    zs = dict(zip(s.hospitals, s.noise_multipliers))
    assert zs["hospital_a"] > zs["hospital_b"] > zs["hospital_c"]  # smaller hospital, larger q, more noise
    assert s.noise_multiplier == max(zs.values())
    assert s.epsilon_after(5) == pytest.approx(max(eps.values()))
    rec = s.to_record()
    assert [r["hospital"] for r in rec["per_hospital"]] == list(n)
    assert [r["epsilon"] for r in rec["per_hospital"]] == pytest.approx(list(eps.values()))
    assert rec["epsilon"] == pytest.approx(max(eps.values()))
    assert rec["unit"] == "patient" and "one patient" in rec["note"]
    assert all(r["delta"] == 1e-5 and r["num_units"] == pats[r["hospital"]] for r in rec["per_hospital"])


def test_shared_noise_is_calibrated_on_the_worst_hospital():
    n = {"hospital_a": 400, "hospital_b": 4000}
    s = acc.schedule_for_config(_cfg(unit="image", per_hospital_noise=False), n, source="t")
    eps = s.epsilons_after(5)
    assert eps["hospital_a"] == pytest.approx(1.0, abs=0.01) and eps["hospital_b"] < 0.9


def test_unreachable_epsilon_names_the_hospital():
    cfg = _cfg(unit="patient", target_epsilon=0.05, max_noise_multiplier=2.0)
    with pytest.raises(acc.PrivacyBudgetError, match=r"hospital_a \(100 images, 20 patients\).*unreachable"):
        acc.schedule_for_config(cfg, {"hospital_a": 100, "hospital_b": 5000}, source="cfg.yaml",
                                num_patients={"hospital_a": 20, "hospital_b": 1000})


def test_delta_must_be_below_one_over_patients():
    cfg = _cfg(unit="patient", delta=1e-3)  # below 1/500 but not below 1/2000
    with pytest.raises(ConfigError, match=r"privacy.delta.*2000 patients in hospital hospital_a"):
        acc.schedule_for_config(cfg, {"hospital_a": 5000, "hospital_b": 2000}, source="t",
                                num_patients={"hospital_a": 2000, "hospital_b": 500})
    with pytest.raises(ConfigError, match="patient counts"):
        acc.schedule_for_config(_cfg(unit="patient"), {"hospital_a": 100}, source="t")


def test_non_private_arms_have_no_schedule():
    cfg = _cfg(unit="patient")
    cfg.arm = "federated"
    s = acc.schedule_for_config(cfg, {"hospital_a": 100}, source="t")
    assert s.mode == "none" and s.to_record()["epsilon"] is None
