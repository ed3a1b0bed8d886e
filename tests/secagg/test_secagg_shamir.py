"""Shamir secret sharing: textbook worked examples, perfect secrecy in a small field, properties."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bfdl_tff.secagg import shamir
from bfdl_tff.secagg.errors import ReconstructionError

# Wikipedia "Shamir's secret sharing", worked example: p = 1613, f(x) = 1234 + 166 x + 94 x^2.
WIKI_SHARES = {1: 1494, 2: 329, 3: 965, 4: 176, 5: 1188, 6: 775}


def test_wikipedia_example_split_matches_the_published_shares():
    assert shamir.split(1234, threshold=3, xs=[1, 2, 3, 4, 5, 6], prime=1613, coefficients=[166, 94]) == WIKI_SHARES


@pytest.mark.parametrize("subset", list(itertools.combinations(sorted(WIKI_SHARES), 3)))
def test_wikipedia_example_any_three_shares_recover_1234(subset):
    shares = {x: WIKI_SHARES[x] for x in subset}
    assert shamir.reconstruct(shares, threshold=3, prime=1613) == 1234


def test_stinson_example_p17_t3():
    # Stinson, Cryptography: Theory and Practice, Shamir (t, w) example: p = 17, t = 3, w = 5,
    # x_i = i; holders 1, 3, 5 have shares 8, 10, 11 and recover the key 13.
    assert shamir.reconstruct({1: 8, 3: 10, 5: 11}, threshold=3, prime=17) == 13
    # The polynomial is 13 + 10 x + 2 x^2:
    assert shamir.split(13, threshold=3, xs=[1, 3, 5], prime=17, coefficients=[10, 2]) == {1: 8, 3: 10, 5: 11}


def test_all_six_wikipedia_shares_are_consistent_and_a_wrong_one_is_caught():
    assert shamir.reconstruct(WIKI_SHARES, threshold=3, prime=1613) == 1234
    bad = {**WIKI_SHARES, 6: 776}
    with pytest.raises(ReconstructionError, match="x=6"):
        shamir.reconstruct(bad, threshold=3, prime=1613)


def test_fewer_than_threshold_shares_raise():
    with pytest.raises(ReconstructionError, match="fewer than the threshold"):
        shamir.reconstruct({1: 1494, 2: 329}, threshold=3, prime=1613)


def test_perfect_secrecy_t3_two_shares_are_uniform_for_every_secret():
    # In GF(11) with t = 3, the pair of shares (f(1), f(2)) over all 121 polynomials with a fixed
    # secret takes each of the 121 values exactly once, whatever the secret: t-1 shares carry
    # no information about it.
    p = 11
    for secret in range(p):
        counts = Counter(
            tuple(shamir.split(secret, threshold=3, xs=[1, 2, 3], prime=p, coefficients=[a, b]).values())[:2]
            for a in range(p) for b in range(p)
        )
        assert len(counts) == p * p and set(counts.values()) == {1}


@settings(max_examples=40, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    n=st.integers(min_value=2, max_value=10),
    data=st.data(),
)
def test_property_any_t_of_n_shares_recover_a_32_byte_secret(secret, n, data):
    t = data.draw(st.integers(min_value=1, max_value=n))
    xs = data.draw(st.lists(st.integers(min_value=1, max_value=2**31 - 1), min_size=n, max_size=n, unique=True))
    shares = shamir.split_bytes(secret, threshold=t, xs=xs)
    assert all(len(s) == shamir.SHARE_BYTES for s in shares.values())
    subset = data.draw(st.lists(st.sampled_from(xs), min_size=t, max_size=n, unique=True))
    assert shamir.reconstruct_bytes({x: shares[x] for x in subset}, threshold=t) == secret


@settings(max_examples=30, deadline=None)
@given(secret=st.integers(min_value=0, max_value=2**256 - 1), t=st.integers(min_value=2, max_value=6))
def test_property_t_minus_1_shares_do_not_interpolate_to_the_secret(secret, t):
    xs = list(range(1, t + 1))
    shares = shamir.split(secret, threshold=t, xs=xs)
    # With random coefficients, interpolating only t-1 shares gives the secret with probability 1/p.
    assert shamir.lagrange_at_zero({x: shares[x] for x in xs[:-1]}, shamir.PRIME_521) != secret


def test_split_validates_its_arguments():
    with pytest.raises(ValueError, match="distinct"):
        shamir.split(5, threshold=2, xs=[1, 1], prime=17)
    with pytest.raises(ValueError, match=r"\[1, p\)"):
        shamir.split(5, threshold=2, xs=[0, 1], prime=17)
    with pytest.raises(ValueError, match="threshold"):
        shamir.split(5, threshold=3, xs=[1, 2], prime=17)
    with pytest.raises(ValueError, match="secret"):
        shamir.split(17, threshold=2, xs=[1, 2], prime=17)
    with pytest.raises(ValueError, match="32-byte"):
        shamir.split_bytes(b"short", threshold=2, xs=[1, 2])


def test_reconstruct_bytes_rejects_a_value_that_is_not_a_32_byte_secret():
    shares = shamir.split(2**300, threshold=2, xs=[1, 2])
    enc = {x: y.to_bytes(shamir.SHARE_BYTES, "big") for x, y in shares.items()}
    with pytest.raises(ReconstructionError, match="32-byte"):
        shamir.reconstruct_bytes(enc, threshold=2)
