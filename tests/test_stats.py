"""bfdl_tff.stats (issue 14.4): bootstrap intervals over test images and t intervals over seeds,
checked against hand-computable cases, scikit-learn, tabulated t quantiles and simulated coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bfdl_tff import stats as S


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


# --------------------------------------------------------------------------------------------
# AUC of weighted samples
# --------------------------------------------------------------------------------------------


def test_weighted_auc_equals_sklearn_with_ties_and_weights():
    rng = np.random.default_rng(3)
    for n in (7, 60, 300):
        y = rng.integers(0, 2, n)
        y[:2] = [0, 1]
        s = np.round(rng.normal(size=n) + 0.7 * y, 1)  # many ties
        w = rng.integers(0, 4, (6, n)).astype(float)
        w[:, :2] = 1  # every row keeps both classes
        got = S.weighted_auc(y, s, w)
        want = [roc_auc_score(y, s, sample_weight=wi) for wi in w]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
        assert S.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_by_hand_and_undefined_cases():
    # positives 0.9, 0.4; negatives 0.4, 0.1: pairs (0.9>0.4, 0.9>0.1, 0.4=0.4 -> 1/2, 0.4>0.1) = 3.5 / 4
    assert S.roc_auc(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.4, 0.1])) == 0.875
    assert S.roc_auc(np.array([0, 0, 0]), np.array([0.1, 0.2, 0.3])) is None
    assert S.undefined_reason(np.zeros(3)) == "no positives"
    assert S.undefined_reason(np.ones(3)) == "no negatives"
    assert S.undefined_reason(np.zeros(0)) == "no images"
    assert S.undefined_reason(np.array([0, 1])) is None
    # a resample with no negative weight has no AUC
    assert np.isnan(S.weighted_auc(np.array([1, 0]), np.array([0.5, 0.2]), np.array([[2.0, 0.0]]))[0])


# --------------------------------------------------------------------------------------------
# Bootstrap over images
# --------------------------------------------------------------------------------------------


def _multilabel(n: int, n_lab: int, seed: int, signal: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, n_lab)) < 0.3).astype(np.float32)
    return y, (signal * y + rng.normal(size=y.shape)).astype(np.float32)


def test_perfect_separation_gives_interval_one_one():
    rng = np.random.default_rng(0)
    y = (rng.random((80, 3)) < 0.3).astype(float)
    y[0], y[1] = 1, 0
    s = y + 0.4 * rng.random(y.shape)  # every positive above every negative, also across labels
    r = S.bootstrap_auc(y, s, labels=["a", "b", "c"], n_boot=300, seed=1)
    for lab in "abc":
        la = r.per_label[lab]
        assert (la.auc, la.low, la.high) == (1.0, 1.0, 1.0)
    assert (r.macro.estimate, r.macro.low, r.macro.high) == (1.0, 1.0, 1.0)
    assert (r.micro.estimate, r.micro.low, r.micro.high) == (1.0, 1.0, 1.0)
    inv = S.bootstrap_auc(y, -s, n_boot=100, seed=1)
    assert (inv.macro.estimate, inv.macro.low, inv.macro.high) == (0.0, 0.0, 0.0)


def test_point_estimates_match_sklearn_and_macro_is_mean_over_defined_labels():
    y, s = _multilabel(150, 5, seed=2)
    y[:, 3] = 0  # no positives
    y[:, 4] = 1  # no negatives
    r = S.bootstrap_auc(y, s, labels=list("abcde"), n_boot=50, seed=0)
    want = [roc_auc_score(y[:, j], s[:, j]) for j in range(3)]
    assert [r.per_label[k].auc for k in "abc"] == pytest.approx(want, abs=1e-12)
    assert r.macro_labels == ("a", "b", "c")
    assert r.macro.estimate == pytest.approx(np.mean(want), abs=1e-12)
    assert r.micro.estimate == pytest.approx(roc_auc_score(y.ravel(), s.ravel()), abs=1e-12)
    assert r.per_label["d"].auc is None and r.per_label["d"].reason == "no positives" and r.per_label["d"].low is None
    assert r.per_label["e"].auc is None and r.per_label["e"].reason == "no negatives"
    assert r.undefined_labels == {"d": "no positives", "e": "no negatives"}
    assert r.per_label["a"].positives == int(y[:, 0].sum()) and r.per_label["a"].negatives == 150 - int(y[:, 0].sum())
    rec = r.to_record()
    assert rec["macro"]["n_labels"] == 3 and rec["per_label"]["d"]["auc"] is None and rec["n_boot"] == 50


def test_interval_covers_the_analytic_auc_at_about_the_nominal_rate():
    # binormal: positives N(d, 1), negatives N(0, 1) -> AUC = Phi(d / sqrt 2)
    d, n_pos, n_neg = 1.0, 60, 90
    truth = _phi(d / math.sqrt(2))
    rng = np.random.default_rng(11)
    covered, widths = 0, []
    reps = 60
    for i in range(reps):
        y = np.r_[np.ones(n_pos), np.zeros(n_neg)]
        s = np.r_[rng.normal(d, 1, n_pos), rng.normal(0, 1, n_neg)]
        iv = S.bootstrap_auc(y, s, n_boot=300, seed=i).macro
        covered += iv.covers(truth)
        widths.append(iv.high - iv.low)
    assert covered / reps >= 0.85, covered
    # Hanley-McNeil standard error of the AUC -> expected 95 % width ~ 2 * 1.96 * se
    q1, q2 = truth / (2 - truth), 2 * truth ** 2 / (1 + truth)
    se = math.sqrt((truth * (1 - truth) + (n_pos - 1) * (q1 - truth ** 2) + (n_neg - 1) * (q2 - truth ** 2)) / (n_pos * n_neg))
    assert np.mean(widths) == pytest.approx(2 * 1.96 * se, rel=0.2)


def test_rare_label_losing_its_positive_is_skipped_and_counted():
    n, n_boot = 50, 2000
    rng = np.random.default_rng(5)
    y = np.zeros((n, 2))
    y[:25, 0] = 1  # common label: never loses a class
    y[7, 1] = 1  # rare label: one positive
    s = y + rng.normal(0, 0.5, y.shape)
    r = S.bootstrap_auc(y, s, labels=["common", "rare"], n_boot=n_boot, seed=0)
    rare, common = r.per_label["rare"], r.per_label["common"]
    assert common.resamples_undefined == 0 and common.resamples_used == n_boot
    assert rare.resamples_undefined + rare.resamples_used == n_boot
    p_lost = (1 - 1 / n) ** n  # the single positive not drawn
    assert rare.resamples_undefined / n_boot == pytest.approx(p_lost, abs=4 * math.sqrt(p_lost * (1 - p_lost) / n_boot))
    # the rare label is left out of exactly those resamples' macro means
    assert r.resamples_with_dropped_labels == rare.resamples_undefined
    assert r.macro_labels == ("common", "rare")


def test_bootstrap_is_seeded():
    y, s = _multilabel(120, 4, seed=4)
    a = S.bootstrap_auc(y, s, n_boot=200, seed=7)
    b = S.bootstrap_auc(y, s, n_boot=200, seed=7)
    c = S.bootstrap_auc(y, s, n_boot=200, seed=8)
    assert a.to_record() == b.to_record()
    assert (a.macro.low, a.macro.high) != (c.macro.low, c.macro.high)
    assert a.macro.estimate == c.macro.estimate


def test_bootstrap_refuses_bad_input():
    y, s = _multilabel(20, 2, seed=0)
    with pytest.raises(ValueError, match="shape"):
        S.bootstrap_auc(y, s[:, :1])
    with pytest.raises(ValueError, match="0/1"):
        S.bootstrap_auc(y * 2, s)
    with pytest.raises(ValueError, match="NaN"):
        S.bootstrap_auc(y, np.where(y > 0, np.nan, s))
    with pytest.raises(ValueError, match="label names"):
        S.bootstrap_auc(y, s, labels=["a"])
    with pytest.raises(ValueError, match="n_boot"):
        S.bootstrap_auc(y, s, n_boot=0)
    with pytest.raises(ValueError, match="no images"):
        S.bootstrap_auc(y[:0], s[:0])


# --------------------------------------------------------------------------------------------
# Paired bootstrap
# --------------------------------------------------------------------------------------------


def test_paired_difference_of_identical_models_is_zero():
    y, s = _multilabel(100, 3, seed=6)
    r = S.paired_bootstrap_auc(y, s, s.copy(), labels=list("abc"), n_boot=200, seed=0)
    for iv in [r.macro, r.micro, *r.per_label.values()]:
        assert (iv.estimate, iv.low, iv.high) == (0.0, 0.0, 0.0)
    assert r.p_two_sided["macro"] == 1.0


def test_paired_difference_detects_a_better_model_and_is_narrower_than_unpaired():
    y, s = _multilabel(200, 3, seed=8, signal=1.5)
    noise = np.random.default_rng(9).normal(0, 0.6, s.shape)
    worse = s + noise  # the same model with extra noise: correlated with s, lower AUC
    r = S.paired_bootstrap_auc(y, s, worse, n_boot=400, seed=1)
    a = S.bootstrap_auc(y, s, n_boot=400, seed=1)
    b = S.bootstrap_auc(y, worse, n_boot=400, seed=1)
    assert r.macro.estimate == pytest.approx(a.macro.estimate - b.macro.estimate, abs=1e-12)
    assert r.micro.estimate == pytest.approx(a.micro.estimate - b.micro.estimate, abs=1e-12)
    assert r.macro.low > 0 and r.p_two_sided["macro"] < 0.05
    paired_width = r.macro.high - r.macro.low
    assert paired_width < 0.7 * math.hypot(a.macro.high - a.macro.low, b.macro.high - b.macro.low)
    flipped = S.paired_bootstrap_auc(y, worse, s, n_boot=400, seed=1)
    assert flipped.macro.estimate == pytest.approx(-r.macro.estimate) and flipped.macro.high == pytest.approx(-r.macro.low)


# --------------------------------------------------------------------------------------------
# Over seeds
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("df,q975", [(1, 12.7062047364), (2, 4.30265272975), (3, 3.18244630528), (4, 2.7764451052),
                                      (9, 2.26215716274), (30, 2.04227245630), (10**6, 1.95996635)])
def test_t_quantile_matches_tables(df, q975):
    assert S.t_quantile(0.975, df) == pytest.approx(q975, abs=1e-7)
    assert S.t_quantile(0.025, df) == pytest.approx(-q975, abs=1e-7)
    assert S.t_cdf(q975, df) == pytest.approx(0.975, abs=1e-8)  # tables give 9-12 digits


def test_t_quantile_agrees_with_scipy_when_available():
    st = pytest.importorskip("scipy.stats", reason="scipy absent: the table test covers the quantiles")
    for df in (1, 2, 5, 17, 120):
        for p in (0.6, 0.9, 0.95, 0.995):
            assert S.t_quantile(p, df) == pytest.approx(st.t.ppf(p, df), abs=1e-8)


def test_mean_ci_by_hand():
    r = S.mean_ci([1.0, 2.0, 3.0])
    half = 4.30265272975 / math.sqrt(3)  # sd = 1
    assert (r.mean, r.sd, r.n) == (2.0, 1.0, 3)
    assert r.low == pytest.approx(2 - half) and r.high == pytest.approx(2 + half) and r.half_width == pytest.approx(half)
    one = S.mean_ci([0.7])
    assert (one.mean, one.n, one.low, one.high, one.sd) == (0.7, 1, None, None, None)
    assert S.mean_ci([]).mean is None
    same = S.mean_ci([0.5, 0.5, 0.5])
    assert (same.low, same.high) == (0.5, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        S.mean_ci([0.5, float("nan")])


def test_mean_ci_covers_at_the_nominal_rate():
    rng = np.random.default_rng(0)
    reps, hits = 2000, 0
    for _ in range(reps):
        r = S.mean_ci(rng.normal(0.8, 0.02, 4))  # 4 seeds: t_3 interval, far wider than +-1.96 sd/sqrt(n)
        hits += r.low <= 0.8 <= r.high
    assert hits / reps == pytest.approx(0.95, abs=0.015)


def test_paired_difference_over_seeds():
    a = {0: 0.80, 1: 0.82, 2: 0.79}
    b = {0: 0.70, 1: 0.74, 2: 0.70, 3: 0.60}
    r = S.paired_difference(a, b)
    assert r.keys == (0, 1, 2) and r.only_in_b == (3,) and r.only_in_a == ()
    assert r.differences == pytest.approx((0.10, 0.08, 0.09))
    assert r.summary.mean == pytest.approx(0.09)
    half = 4.30265272975 * 0.01 / math.sqrt(3)  # sd of (0.10, 0.08, 0.09) = 0.01
    assert r.summary.low == pytest.approx(0.09 - half) and r.summary.high == pytest.approx(0.09 + half)
    same = S.paired_difference(a, dict(a))
    assert (same.summary.mean, same.summary.low, same.summary.high) == (0.0, 0.0, 0.0)
    rec = r.to_record()
    assert rec["paired_on"] == ["0", "1", "2"] and rec["only_in_b"] == ["3"] and rec["n"] == 3
    assert S.paired_difference({0: 1.0}, {1: 1.0}).summary.n == 0
