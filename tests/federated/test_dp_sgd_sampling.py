"""Hospital-side DP-SGD step data (bfdl_tff.federated.dp_sgd): Poisson sampling of patients or
images, the per-patient cap, and the per-hospital noise in the step elements."""

from __future__ import annotations

import numpy as np
import pytest


def _data(n_patients=60, seed=0):
    rng = np.random.default_rng(seed)
    per = rng.integers(1, 12, n_patients)
    pid = np.repeat(np.arange(100, 100 + n_patients), per)
    n = len(pid)
    x = np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1) * np.ones((1, 2, 2, 1), np.float32)
    y = np.zeros((n, 14), np.float32)
    return x, y, pid


def _steps(ds):
    return [{k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in el.items()} for el in ds]


def test_patient_sampling_rate_cap_and_units():
    from bfdl_tff.federated import dp_sgd

    x, y, pid = _data()
    n, n_pat = len(x), len(np.unique(pid))
    ds = dp_sgd.poisson_dp_sgd_dataset(x, y, batch_size=40, local_epochs=20, rng=np.random.default_rng(3),
                                       patient_ids=pid, unit="patient", max_images_per_patient=3, noise_multiplier=1.7)
    steps = _steps(ds)
    q = 40 / n
    assert len(steps) == 20 * int(np.ceil(n / 40))
    assert np.mean([s["nseg"] for s in steps]) == pytest.approx(q * n_pat, rel=0.15)
    for s in steps:
        assert s["z"] == pytest.approx(1.7) and s["denom"] == pytest.approx(q * n_pat) and s["n"] == n
        imgs = s["x"][:, 0, 0, 0].astype(int)
        assert len(imgs) == len(set(imgs))  # without replacement
        for u in range(s["nseg"]):
            members = imgs[s["seg"] == u]
            assert 1 <= len(members) <= 3
            assert len(set(pid[members])) == 1  # one unit = one patient
        assert len(set(pid[imgs])) == s["nseg"]
    # a patient with more than 3 images contributes different subsets over the steps
    big = np.flatnonzero(np.bincount(pid - 100) > 6)[0] + 100
    seen = {tuple(sorted(s["x"][pid[s["x"][:, 0, 0, 0].astype(int)] == big, 0, 0, 0].astype(int))) for s in steps}
    seen.discard(())
    assert len(seen) > 1


def test_image_unit_and_determinism():
    from bfdl_tff.federated import dp_sgd

    x, y, pid = _data(seed=1)
    a = _steps(dp_sgd.poisson_dp_sgd_dataset(x, y, batch_size=16, local_epochs=2, rng=np.random.default_rng(5),
                                             patient_ids=pid, unit="image", noise_multiplier=0.9))
    b = _steps(dp_sgd.poisson_dp_sgd_dataset(x, y, batch_size=16, local_epochs=2, rng=np.random.default_rng(5),
                                             patient_ids=pid, unit="image", noise_multiplier=0.9))
    assert len(a) == len(b)
    for s, t in zip(a, b):
        np.testing.assert_array_equal(s["x"], t["x"])
        np.testing.assert_array_equal(s["seed"], t["seed"])
        np.testing.assert_array_equal(s["seg"], np.arange(len(s["x"])))
        assert s["nseg"] == len(s["x"]) and s["denom"] == pytest.approx(16.0)


def test_bad_unit_arguments():
    from bfdl_tff.federated import dp_sgd

    x, y, pid = _data()
    with pytest.raises(ValueError, match="patient id"):
        dp_sgd.poisson_dp_sgd_dataset(x, y, batch_size=8, local_epochs=1, rng=np.random.default_rng(0), unit="patient")
    with pytest.raises(ValueError, match="unit must be"):
        dp_sgd.poisson_dp_sgd_dataset(x, y, batch_size=8, local_epochs=1, rng=np.random.default_rng(0), unit="visit")
