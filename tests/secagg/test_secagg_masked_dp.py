"""Client-level DP-FedAvg under masking (issue 18.2, docs/secagg.md "Where the DP noise goes"):
each hospital clips its update to C and adds its share N(0, (zC)^2 / t) of the noise before
quantising; the server's unmasked sum divided by K is the DP-FedAvg mean with noise of variance
(s / t) (zC)^2 / K^2 (s survivors >= t): at least what the accountant assumes. The noise comes
from the keyring's per-hospital secret, deterministic per round (resume repeats it)."""

from __future__ import annotations

import numpy as np

from bfdl_tff.secagg import EphemeralKeyring, MaskedSettings

H = ["hospital_a", "hospital_b", "hospital_c"]
N = 4000


def _numpy_sum(bits):
    return lambda vs: np.sum([np.asarray(v, np.int64) for v in vs], axis=0) % (1 << bits)


def _agg(z: float, keyring=None):
    from bfdl_tff.federated.masked import MaskedAggregation, client_noise_for

    return MaskedAggregation(
        settings=MaskedSettings(bits=32, clip=0.5 * (1 + 6 * z / np.sqrt(2))), keyring=keyring or EphemeralKeyring(
            H, run_id="dp", noise_seed=3), weighted=False,
        client_noise=client_noise_for(l2_clip=0.5, noise_multiplier=z, threshold=2), sum_fn=_numpy_sum(32))


def _updates(seed=0):
    rng = np.random.default_rng(seed)
    return {h: [rng.normal(0, 0.02 * (i + 1), N).astype(np.float32)] for i, h in enumerate(H)}


def test_without_noise_the_mean_of_clipped_updates():
    ups = _updates()
    out = _agg(0.0).aggregate(1, ups, {h: 1.0 for h in H})
    clipped = []
    for h in H:
        x = ups[h][0].astype(np.float64)
        clipped.append(x * min(1.0, 0.5 / np.linalg.norm(x)))
    assert np.isclose(np.linalg.norm(clipped[2]), 0.5)  # the largest update was clipped
    np.testing.assert_allclose(out.mean_update[0], sum(clipped) / 3, atol=1e-6)


def test_distributed_noise_has_at_least_the_central_variance():
    z, c, t, k = 1.0, 0.5, 2, 3
    ups = _updates()
    agg = _agg(z)
    noiseless = _agg(0.0).aggregate(1, ups, {h: 1.0 for h in H}).mean_update[0]
    noisy = agg.aggregate(1, ups, {h: 1.0 for h in H}).mean_update[0]
    resid = (noisy - noiseless) * k  # the noise in the sum
    want = z * c * np.sqrt(k / t)  # three shares of variance (zC)^2 / t
    assert abs(resid.std() / want - 1) < 0.05, (resid.std(), want)
    assert resid.std() >= z * c * 0.95  # >= the central noise the accountant assumes
    # deterministic per (hospital secret, round): the same round repeats, the next one differs
    again = _agg(z).aggregate(1, ups, {h: 1.0 for h in H}).mean_update[0]
    np.testing.assert_allclose(again, noisy, atol=1e-6)
    other = _agg(z).aggregate(2, ups, {h: 1.0 for h in H}).mean_update[0]
    assert np.abs(other - noisy).max() > 0.01


def test_noise_secret_is_not_the_public_seed_with_fresh_keyring():
    ups = _updates()
    a = _agg(1.0, EphemeralKeyring(H, run_id="x")).aggregate(1, ups, {h: 1.0 for h in H}).mean_update[0]
    b = _agg(1.0, EphemeralKeyring(H, run_id="x")).aggregate(1, ups, {h: 1.0 for h in H}).mean_update[0]
    assert np.abs(a - b).max() > 0.01  # fresh secrets: different noise
