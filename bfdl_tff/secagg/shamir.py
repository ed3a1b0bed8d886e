"""Shamir secret sharing over a prime field (Shamir 1979; Bonawitz et al. 2017, section 3.1).

A secret ``s`` in GF(p) is hidden as the constant term of a random polynomial
``f(x) = s + a_1 x + ... + a_{t-1} x^{t-1}``; the share of participant ``i`` (an integer id >= 1)
is ``f(i)``. Any ``t`` shares determine ``s`` by Lagrange interpolation at 0; any ``t - 1`` shares
are uniformly distributed whatever ``s`` is (perfect secrecy).

The protocol shares 32-byte secrets (a self-mask seed, an X25519 private key) in the field of the
Mersenne prime ``p = 2^521 - 1`` (every 256-bit integer is a field element; a share encodes as 66
bytes). The prime is a parameter so that the tests can check textbook examples in small fields.
Coefficients come from :func:`secrets.randbelow` unless given explicitly (tests only).
"""

from __future__ import annotations

import secrets
from typing import Iterable, Mapping, Sequence

from bfdl_tff.secagg.errors import ReconstructionError

PRIME_521 = (1 << 521) - 1
SHARE_BYTES = 66  # ceil(521 / 8)
SECRET_BYTES = 32


def _check_xs(xs: Sequence[int], prime: int) -> None:
    if len(set(xs)) != len(xs):
        raise ValueError("share x-coordinates must be distinct")
    for x in xs:
        if not isinstance(x, int) or not 0 < x < prime:
            raise ValueError(f"share x-coordinate {x!r} must be an integer in [1, p)")


def evaluate(coefficients: Sequence[int], x: int, prime: int) -> int:
    """``f(x) mod p`` for ``f = coefficients[0] + coefficients[1] x + ...`` (Horner)."""
    acc = 0
    for c in reversed(coefficients):
        acc = (acc * x + c) % prime
    return acc


def split(
    secret: int,
    *,
    threshold: int,
    xs: Sequence[int],
    prime: int = PRIME_521,
    coefficients: Sequence[int] | None = None,
) -> dict[int, int]:
    """Shares ``{x: f(x)}`` of ``secret`` for every x in ``xs``; any ``threshold`` of them recover it.

    ``coefficients`` (``a_1 .. a_{t-1}``) fixes the polynomial (worked examples in the tests);
    by default they are drawn uniformly from GF(p) with :mod:`secrets`."""
    if not isinstance(secret, int) or not 0 <= secret < prime:
        raise ValueError("the secret must be an integer in [0, p)")
    if not isinstance(threshold, int) or not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold must be in [1, {len(xs)}] (number of shares), got {threshold!r}")
    _check_xs(xs, prime)
    if coefficients is None:
        coefficients = [secrets.randbelow(prime) for _ in range(threshold - 1)]
    elif len(coefficients) != threshold - 1:
        raise ValueError(f"a threshold-{threshold} polynomial has {threshold - 1} random coefficients")
    poly = [secret, *coefficients]
    return {x: evaluate(poly, x, prime) for x in xs}


def lagrange_at_zero(points: Mapping[int, int], prime: int) -> int:
    """The value at 0 of the unique polynomial of degree < len(points) through ``points``."""
    xs = list(points)
    _check_xs(xs, prime)
    total = 0
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * (-xj) % prime
                den = den * (xi - xj) % prime
        total = (total + points[xi] * num * pow(den, -1, prime)) % prime
    return total


def reconstruct(shares: Mapping[int, int], *, threshold: int, prime: int = PRIME_521) -> int:
    """The secret from at least ``threshold`` shares ``{x: y}``.

    When more than ``threshold`` shares are given, all of them must lie on one polynomial of
    degree < threshold (checked: a wrong or tampered share raises :class:`ReconstructionError`)."""
    if len(shares) < threshold:
        raise ReconstructionError(f"{len(shares)} shares are fewer than the threshold {threshold}")
    for y in shares.values():
        if not isinstance(y, int) or not 0 <= y < prime:
            raise ReconstructionError("a share value is not a field element")
    xs = sorted(shares)
    base = {x: shares[x] for x in xs[:threshold]}
    secret = lagrange_at_zero(base, prime)
    for x in xs[threshold:]:
        if _interpolate(base, x, prime) != shares[x]:
            raise ReconstructionError(f"share at x={x} is inconsistent with the others")
    return secret


def _interpolate(points: Mapping[int, int], at: int, prime: int) -> int:
    """Value at ``at`` of the polynomial through ``points`` (Lagrange form)."""
    shifted = {x - at: y for x, y in points.items()}
    if 0 in shifted:
        return shifted[0]
    return lagrange_at_zero({x % prime: y for x, y in shifted.items()}, prime)


def split_bytes(secret: bytes, *, threshold: int, xs: Iterable[int]) -> dict[int, bytes]:
    """Shares of a 32-byte secret in GF(2^521 - 1), each encoded as 66 big-endian bytes."""
    if not isinstance(secret, (bytes, bytearray)) or len(secret) != SECRET_BYTES:
        raise ValueError(f"split_bytes shares exactly {SECRET_BYTES}-byte secrets")
    shares = split(int.from_bytes(secret, "big"), threshold=threshold, xs=list(xs))
    return {x: y.to_bytes(SHARE_BYTES, "big") for x, y in shares.items()}


def reconstruct_bytes(shares: Mapping[int, bytes], *, threshold: int) -> bytes:
    """The 32-byte secret from at least ``threshold`` encoded shares."""
    ints: dict[int, int] = {}
    for x, data in shares.items():
        if not isinstance(data, (bytes, bytearray)) or len(data) != SHARE_BYTES:
            raise ReconstructionError(f"share at x={x} is not {SHARE_BYTES} bytes")
        ints[x] = int.from_bytes(data, "big")
    secret = reconstruct(ints, threshold=threshold)
    if secret >> (8 * SECRET_BYTES):
        raise ReconstructionError("the reconstructed value is not a 32-byte secret (wrong shares)")
    return secret.to_bytes(SECRET_BYTES, "big")
