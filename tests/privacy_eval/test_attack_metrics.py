"""Privacy metrics: Wilson interval, SSIM/PSNR, re-identification, ROC summary, the DP TPR bound
(claim C3; bfdl_tff.privacy_eval.metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bfdl_tff.privacy_eval import metrics as M


def test_wilson_interval_known_values():
    lo, hi = M.wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = M.wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = M.wilson_interval(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.7225, abs=1e-4)
    with pytest.raises(ValueError):
        M.wilson_interval(3, 2)


def test_clopper_pearson_known_values():
    # textbook values (e.g. Agresti & Coull 1998 / any exact binomial table) and the Beta quantiles
    lo, hi = M.clopper_pearson(5, 10)
    assert lo == pytest.approx(0.1871, abs=1e-4) and hi == pytest.approx(0.8129, abs=1e-4)
    lo, hi = M.clopper_pearson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 10), abs=1e-12)  # 0.3085
    lo, hi = M.clopper_pearson(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 10), abs=1e-12)  # 0.6915
    lo, hi = M.clopper_pearson(1, 1000)
    assert lo == pytest.approx(2.53e-5, rel=1e-2) and hi == pytest.approx(0.005558, rel=1e-3)
    # 99% is wider than 95%; exact intervals contain the Wilson interval's centre
    l99, h99 = M.clopper_pearson(30, 200, confidence=0.99)
    l95, h95 = M.clopper_pearson(30, 200)
    assert l99 < l95 < 0.15 < h95 < h99
    with pytest.raises(ValueError):
        M.clopper_pearson(3, 2)
    assert M.clopper_pearson(0, 0) == (0.0, 1.0)


def test_low_fpr_point_counts_match_the_roc_curve():
    rng = np.random.default_rng(2)
    m, n = rng.normal(1.0, 1, 1000), rng.normal(0, 1, 1000)
    s = M.roc_summary(m, n)
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(np.r_[np.ones(1000), np.zeros(1000)], np.r_[m, n])
    for lv in (0.001, 0.01):
        pt = s["low_fpr"][f"{lv:g}"]
        assert pt["fp"] <= lv * 1000 and pt["tpr"] == pytest.approx(M.tpr_at_fpr(fpr, tpr, lv))
        assert s[f"tpr_at_fpr_{lv:g}"] == pt["tpr"] == pt["tp"] / 1000
        lo, hi = M.clopper_pearson(pt["tp"], 1000)
        assert (s[f"tpr_ci_low_at_fpr_{lv:g}"], s[f"tpr_ci_high_at_fpr_{lv:g}"]) == (lo, hi)
    # fewer than 1000 non-members: the 0.1 % point is the zero-false-positive point
    pt = M.low_fpr_point(m[:100], n[:100], 0.001)
    assert pt["fp"] == 0 and pt["threshold"] == pytest.approx(np.max(n[:100]))


def test_ssim_psnr_and_reidentification():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(16, 16, 1)).astype(np.float32)
    assert M.ssim(a, a) == pytest.approx(1.0, abs=1e-5)
    assert M.psnr(a, a) == math.inf
    noisy = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
    other = rng.uniform(size=a.shape).astype(np.float32)
    assert 0.3 < M.ssim(a, noisy) < 0.99
    assert abs(M.ssim(a, other)) < 0.3
    assert M.psnr(a, other) < M.psnr(a, noisy) < 25
    gallery = rng.uniform(size=(101, 16, 16, 1)).astype(np.float32)
    rec = np.clip(gallery[7] + rng.normal(0, 0.05, a.shape), 0, 1)
    assert M.reidentifies(rec, 7, gallery)
    assert not M.reidentifies(rec, 8, gallery)
    s = M.ssim_matrix(gallery[:3], gallery[:3])
    assert np.allclose(np.diag(s), 1.0, atol=1e-5) and s[0, 1] < 0.5
    np.testing.assert_allclose(M.ssim_pairs(gallery[:3], gallery[[0, 1, 0]]), [1.0, 1.0, s[2, 0]], atol=1e-5)
    # calibration to the target's mean and std undoes a gain/offset change exactly (when nothing clips)
    shifted = 0.5 * gallery[3] + 0.2
    np.testing.assert_allclose(M.calibrate(shifted, gallery[3]), gallery[3], atol=1e-5)
    st = M.standardise(gallery[:2])
    assert np.allclose(st.mean(axis=(1, 2, 3)), 0, atol=1e-9) and np.allclose(st.std(axis=(1, 2, 3)), 1)


def test_roc_summary_separates_and_not():
    rng = np.random.default_rng(1)
    sep = M.roc_summary(rng.normal(3, 1, 500), rng.normal(0, 1, 500))
    assert sep["auc"] > 0.95 and sep["advantage"] > 0.8 and sep["tpr_at_fpr_0.01"] > 0.3
    same = M.roc_summary(rng.normal(0, 1, 2000), rng.normal(0, 1, 2000))
    assert abs(same["auc"] - 0.5) < 0.05 and same["tpr_at_fpr_0.01"] < 0.05


def test_dp_tpr_bound_formula_and_limits():
    # epsilon = 0: no test beats FPR + delta
    assert M.dp_tpr_bound(0.0, 1e-5, 0.01) == pytest.approx(0.01 + 1e-5)
    # formula (Kairouz et al. 2015)
    eps, delta, fpr = 1.0, 1e-5, 0.01
    expect = min(math.exp(eps) * fpr + delta, 1 - math.exp(-eps) * (1 - delta - fpr))
    assert M.dp_tpr_bound(eps, delta, fpr) == pytest.approx(expect)
    # monotone in epsilon and FPR, capped at 1
    vals = [M.dp_tpr_bound(e, delta, fpr) for e in (0.1, 1, 3, 10)]
    assert vals == sorted(vals) and vals[-1] <= 1.0
    assert M.dp_tpr_bound(1.0, delta, 0.001) < M.dp_tpr_bound(1.0, delta, 0.01)
    assert M.dp_tpr_bound(50.0, delta, 0.01) == 1.0
    assert M.dp_tpr_bound(math.inf, delta, 0.001) == 1.0


def test_dp_bound_from_the_accountant():
    """epsilon from the project's accountant (bfdl_tff.federated.accounting, dp-accounting RDP)."""
    from bfdl_tff.federated import accounting
    from bfdl_tff.privacy_eval.membership import dp_bound

    sched = accounting.PrivacySchedule(
        mode="sample", noise_multiplier=1.1, delta=1e-5, accountant="rdp", rounds=10, num_clients=3,
        clients_per_round=3, batch_size=16, local_epochs=1, num_examples=(400, 350, 300),
    )
    eps = sched.epsilon_after(10)
    assert 0 < eps < 50
    b = dp_bound(eps, 1e-5)
    assert b is not None and b["epsilon"] == pytest.approx(eps)
    assert b["tpr_bound_at_fpr_0.01"] == pytest.approx(M.dp_tpr_bound(eps, 1e-5, 0.01))
    # more noise -> smaller epsilon -> tighter bound
    eps2 = accounting.PrivacySchedule(**{**sched.__dict__, "noise_multiplier": 3.0}).epsilon_after(10)
    assert eps2 < eps
    assert dp_bound(eps2, 1e-5)["tpr_bound_at_fpr_0.01"] < b["tpr_bound_at_fpr_0.01"]
    assert dp_bound(None, 1e-5) is None and dp_bound(math.inf, 1e-5) is None
