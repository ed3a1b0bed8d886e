"""Issue 16.4: thresholds from summed per-hospital score histograms equal the pooled computation
(to bin resolution) on toy cases; the histogram AUC equals sklearn's on binned scores; the TFF
``federated_sum`` of histograms equals the plain sum."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from bfdl_tff.federated.evaluation import choose_thresholds
from bfdl_tff.federated.federated_eval import (
    auc_from_histogram,
    plain_sum,
    score_histograms,
    thresholds_from_histograms,
)

BINS = 1000
FINDINGS = ["a", "b", "c"]


def _hospitals(seed: int, *, quantised: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """Three hospitals' (labels, scores) [n, 3]; scores depend on labels (a useful model)."""
    rng = np.random.default_rng(seed)
    out = []
    for n in (40, 75, 120):
        y = (rng.random((n, 3)) < [0.2, 0.4, 0.05]).astype(np.float32)
        y[0, 2] = 1.0  # every label has a positive somewhere
        p = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0.0, 1.0)
        if quantised:  # scores at bin centres: binning loses nothing
            p = (np.floor(p * BINS).clip(0, BINS - 1) + 0.5) / BINS
        out.append((y, p))
    return out


def _youden(y: np.ndarray, p: np.ndarray, t: float) -> float:
    pred = p >= t
    return float(pred[y > 0.5].mean() - pred[y < 0.5].mean())


def _f1(y: np.ndarray, p: np.ndarray, t: float) -> float:
    return float(skm.f1_score(y > 0.5, p >= t))


@pytest.mark.parametrize("rule,objective", [("youden_val", _youden), ("f1_val", _f1)])
def test_federated_threshold_equals_pooled_on_quantised_scores(rule, objective):
    parts = _hospitals(1, quantised=True)
    y = np.concatenate([h[0] for h in parts])
    p = np.concatenate([h[1] for h in parts])
    pooled = choose_thresholds(y, p, rule=rule, findings=FINDINGS)
    total = plain_sum([score_histograms(yk, pk, bins=BINS) for yk, pk in parts])
    assert total.sum() == y.size  # every (image, label) counted once
    fed = thresholds_from_histograms(total, rule=rule, findings=FINDINGS)
    for j, f in enumerate(FINDINGS):
        # same decisions on every validation score: the threshold differs by at most one bin
        assert abs(fed[f] - pooled[f]) <= 1.0 / BINS, (f, fed[f], pooled[f])
        assert np.array_equal(p[:, j] >= fed[f], p[:, j] >= pooled[f])
        assert objective(y[:, j], p[:, j], fed[f]) == pytest.approx(objective(y[:, j], p[:, j], pooled[f]))


def test_federated_threshold_is_optimal_to_bin_resolution_on_continuous_scores():
    parts = _hospitals(2, quantised=False)
    y = np.concatenate([h[0] for h in parts])
    p = np.concatenate([h[1] for h in parts])
    pooled = choose_thresholds(y, p, rule="youden_val", findings=FINDINGS)
    fed = thresholds_from_histograms(plain_sum([score_histograms(a, b, bins=BINS) for a, b in parts]),
                                     rule="youden_val", findings=FINDINGS)
    for j, f in enumerate(FINDINGS):
        yj, pj = y[:, j], p[:, j]
        # the pooled optimum with its threshold moved down to its bin edge is a federated candidate,
        # so the federated choice loses at most what the scores inside one bin can move J
        in_bin = np.abs(pj - pooled[f]) <= 1.0 / BINS
        slack = in_bin[yj > 0.5].sum() / max((yj > 0.5).sum(), 1) + in_bin[yj < 0.5].sum() / max((yj < 0.5).sum(), 1)
        assert _youden(yj, pj, fed[f]) >= _youden(yj, pj, pooled[f]) - slack - 1e-12


def test_histogram_auc_and_fallback():
    parts = _hospitals(3, quantised=True)
    y = np.concatenate([h[0] for h in parts])
    p = np.concatenate([h[1] for h in parts])
    total = plain_sum([score_histograms(a, b, bins=BINS) for a, b in parts])
    for j in range(3):
        assert auc_from_histogram(total[j, 0], total[j, 1]) == pytest.approx(skm.roc_auc_score(y[:, j], p[:, j]))
    one_class = score_histograms(np.zeros((5, 1)), np.full((5, 1), 0.7), bins=BINS)
    assert auc_from_histogram(one_class[0, 0], one_class[0, 1]) is None
    assert thresholds_from_histograms(one_class, rule="youden_val", findings=["x"], fixed=0.3) == {"x": 0.3}
    with pytest.raises(ValueError, match="same"):
        score_histograms(np.zeros((4, 2)), np.zeros((4, 3)))


def test_tff_federated_sum_of_histograms_equals_plain_sum(tff_context):
    from bfdl_tff.federated.federated_eval import tff_sum

    parts = [score_histograms(a, b, bins=50) for a, b in _hospitals(4, quantised=False)]
    assert np.array_equal(tff_sum(parts), plain_sum(parts))
