"""Ring Z_2^b, ChaCha20 mask expansion and the wrap-free quantiser."""

from __future__ import annotations

import numpy as np
import pytest

from bfdl_tff.secagg.errors import MalformedVectorError, QuantizationError
from bfdl_tff.secagg.quantize import Quantizer, bits_for, quantization_level
from bfdl_tff.secagg.ring import Ring


@pytest.mark.parametrize("bits", [8, 20, 32, 48, 64])
def test_prg_is_deterministic_in_range_and_seed_dependent(bits):
    ring = Ring(bits)
    a = ring.prg(b"\x01" * 32, 1000)
    assert a.dtype == ring.dtype and a.shape == (1000,)
    assert np.array_equal(a, ring.prg(b"\x01" * 32, 1000))
    assert not np.array_equal(a, ring.prg(b"\x02" * 32, 1000))
    assert int(a.max()) <= ring.mask
    if bits < 64:
        assert int(a.max()) > ring.mask // 2  # uses the high bits of the range


def test_prg_matches_the_chacha20_rfc7539_keystream():
    # RFC 7539 appendix A.1, keystream test vector #1: all-zero key, nonce and block counter;
    # the keystream starts 76 b8 e0 ad a0 f1 3d 90 (read as one little-endian uint64 here).
    v = Ring(64).prg(bytes(32), 1)
    assert int(v[0]).to_bytes(8, "little").hex() == "76b8e0ada0f13d90"


@pytest.mark.parametrize("bits", [20, 32, 48, 64])
def test_signed_round_trip_and_modular_add_sub(bits):
    ring = Ring(bits)
    half = 1 << (bits - 1)
    q = np.array([0, 1, -1, half - 1, -half, 12345, -54321], dtype=np.int64)
    assert np.array_equal(ring.to_signed(ring.from_signed(q)), q)
    x, y = ring.prg(b"a" * 32, 500), ring.prg(b"b" * 32, 500)
    acc = x.copy()
    ring.add_(acc, y)
    ring.sub_(acc, y)
    assert np.array_equal(ring.reduce(acc), x)


def test_check_rejects_wrong_length_dtype_and_out_of_modulus():
    ring = Ring(20)
    ok = ring.zeros(4)
    assert ring.check(ok, 4, what="v") is ok
    with pytest.raises(MalformedVectorError, match="length 4 differs"):
        ring.check(ok, 5, what="v")
    with pytest.raises(MalformedVectorError, match="dtype"):
        ring.check(ok.astype(np.int64), 4, what="v")
    with pytest.raises(MalformedVectorError, match="outside the modulus"):
        ring.check(np.array([0, 1 << 20, 0, 0], dtype=np.uint32), 4, what="v")


@pytest.mark.parametrize("bits,k", [(32, 3), (32, 10), (48, 10), (64, 10), (16, 10)])
def test_sum_of_k_extreme_vectors_never_wraps(bits, k):
    quant = Quantizer(bits=bits, clip=0.5, max_summands=k)
    ring = quant.ring
    for value in (0.5, -0.5, 7.0, -7.0):  # beyond the range: clipped to +-R
        total = ring.zeros(3)
        for _ in range(k):
            ring.add_(total, quant.quantize(np.full(3, value)))
        ring.reduce(total)
        expected = k * np.clip(value, -0.5, 0.5)
        assert np.allclose(quant.dequantize_sum(total), expected, atol=k * quant.step)
        assert abs(int(ring.to_signed(total)[0])) == k * quant.level


def test_level_and_step_follow_the_stated_bound():
    assert quantization_level(32, 10) == (2**31 - 1) // 10
    q = Quantizer(bits=32, clip=1.0, max_summands=10)
    assert q.max_summands * q.level <= 2**31 - 1
    assert q.step == pytest.approx(1 / 214748364)
    assert quantization_level(64, 1) == 2**52


def test_deterministic_rounding_error_bound_on_random_sums():
    rng = np.random.default_rng(0)
    k, n = 10, 20000
    quant = Quantizer(bits=32, clip=2.0, max_summands=k)
    xs = [rng.normal(0, 1, n) for _ in range(k)]
    total = quant.ring.zeros(n)
    for x in xs:
        quant.ring.add_(total, quant.quantize(x))
    quant.ring.reduce(total)
    exact = sum(np.clip(x, -2.0, 2.0) for x in xs)
    err = np.abs(quant.dequantize_sum(total) - exact)
    assert err.max() <= k * quant.step / 2 + 1e-12


def test_stochastic_rounding_is_unbiased_and_within_one_step():
    quant = Quantizer(bits=12, clip=1.0, max_summands=2, rounding="stochastic")  # coarse: step 1/1023
    x = np.full(200000, 0.3 * quant.step + 0.25)  # 0.3 of a step above a grid point
    ints = quant.to_integers(x, rng=np.random.default_rng(1))
    assert set(np.unique(ints)) == {int(np.floor(x[0] * quant.scale)), int(np.floor(x[0] * quant.scale)) + 1}
    mean = ints.mean() / quant.scale
    assert abs(mean - x[0]) < 5 * quant.step * np.sqrt(0.21 / x.size)  # 5 standard errors
    with pytest.raises(QuantizationError, match="seeded"):
        quant.quantize(x)


def test_quantizer_rejects_bad_parameters_and_inputs():
    with pytest.raises(QuantizationError, match="wrapping"):
        Quantizer(bits=8, clip=1.0, max_summands=200)
    with pytest.raises(QuantizationError, match="clip"):
        Quantizer(bits=32, clip=0.0, max_summands=3)
    with pytest.raises(QuantizationError, match="NaN"):
        Quantizer(bits=32, clip=1.0, max_summands=3).quantize(np.array([0.0, np.nan]))
    with pytest.raises(QuantizationError, match="flat"):
        Quantizer(bits=32, clip=1.0, max_summands=3).quantize(np.zeros((2, 2)))
    assert Quantizer(bits=32, clip=1.0, max_summands=3).clipped_count(np.array([0.5, 1.5, -2.0])) == 2


def test_bits_for_picks_the_smallest_sufficient_width():
    b = bits_for(max_summands=10, clip=1.0, step=1e-6)
    assert Quantizer(bits=b, clip=1.0, max_summands=10).step <= 1e-6
    assert Quantizer(bits=b - 1, clip=1.0, max_summands=10).step > 1e-6


def test_distributed_noise_sums_to_the_central_variance():
    from bfdl_tff.secagg.noise import add_distributed_noise, distributed_noise_stddev

    assert distributed_noise_stddev(2.0, contributors=4) == 1.0
    rng = np.random.default_rng(3)
    k, n, sigma = 10, 200_000, 0.5
    total = sum(add_distributed_noise(np.zeros(n), central_stddev=sigma, contributors=k, rng=rng) for _ in range(k))
    # sample variance of n draws: relative standard error sqrt(2/n) = 0.3 %; allow 5 of them
    assert abs(total.var() / sigma**2 - 1) < 5 * np.sqrt(2 / n)
    with pytest.raises(ValueError, match="contributors"):
        distributed_noise_stddev(1.0, contributors=0)
