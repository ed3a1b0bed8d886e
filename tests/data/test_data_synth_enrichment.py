"""Synthetic generator v3 (bfdl_tff.data.synth): rare-finding enrichment, calibrated per-finding
signal and label noise, the in-memory generator used by the calibration sweeps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bfdl_tff.data import synth
from bfdl_tff.data.labels import FINDINGS
from bfdl_tff.errors import DataError


def test_enriched_prevalence_keeps_the_mean_number_of_findings():
    real = synth.LabelSampler().real_prevalence
    p = synth.enriched_prevalence(real, 0.025)
    assert p.min() == pytest.approx(0.025)
    assert p.sum() == pytest.approx(real.sum())
    common = real >= 0.025
    np.testing.assert_allclose(p[common] / real[common], p[common][0] / real[common][0])  # one scale factor
    with pytest.raises(DataError, match="too large"):
        synth.enriched_prevalence(real, 0.2)


def test_sampler_meets_the_enriched_marginals():
    s = synth.default_label_sampler(0.025)
    y = s.sample(np.random.default_rng(3), 60000)
    got = y.mean(axis=0)
    tol = 4 * np.sqrt(s.prevalence * (1 - s.prevalence) / len(y)) + 0.003
    assert (np.abs(got - s.prevalence) < tol).all(), dict(zip(FINDINGS, np.round(got - s.prevalence, 4)))
    assert got[FINDINGS.index("Hernia")] > 0.02  # 0.2 % in NIH


def test_generate_arrays_and_invisible_fraction():
    imgs, cohort = synth.generate_arrays(300, size=16, seed=1, min_prevalence=0.025)
    assert imgs.shape == (300, 16, 16) and imgs.dtype == np.uint8
    assert cohort.y.shape == (300, 14) and len(cohort.names) == 300
    # Cardiomegaly enlarges the heart: with every trace visible the positives are brighter in the
    # heart region than with every trace invisible (same labels and anatomy draws)
    i = FINDINGS.index("Cardiomegaly")
    visible, c1 = synth.generate_arrays(600, size=32, seed=2, min_prevalence=0.05, invisible_fraction=0.0)
    hidden, c2 = synth.generate_arrays(600, size=32, seed=2, min_prevalence=0.05, invisible_fraction=1.0)
    np.testing.assert_array_equal(c1.y, c2.y)
    pos = c1.y[:, i] == 1
    heart = (slice(None), slice(16, 26), slice(10, 24))
    assert visible[heart][pos].mean() > hidden[heart][pos].mean() + 2.0


def test_synthesize_records_signal_and_enrichment(tmp_path):
    info = synth.synthesize(tmp_path / "ds", n_images=200, size=16, seed=0, write_masks=False, signal=1.2,
                            min_prevalence=0.03)
    saved = json.loads((tmp_path / "ds" / synth.INFO).read_text())
    assert saved == info
    assert info["generator_version"] == synth.GENERATOR_VERSION and info["signal"] == 1.2 and info["min_prevalence"] == 0.03
    assert set(info["invisible_fractions"]) == set(FINDINGS) and set(info["finding_gains"]) == set(FINDINGS)
    with pytest.raises(DataError, match="min_prevalence"):
        synth.synthesize(tmp_path / "bad", n_images=10, size=16, seed=0, min_prevalence=0.5)
