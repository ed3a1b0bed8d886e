"""Fixtures of the secure-aggregation tests: simulated hospitals (keys are slow-ish to make)."""

from __future__ import annotations

import pytest

from bfdl_tff.secagg.simulate import make_hospitals


@pytest.fixture(scope="module")
def hospitals10():
    return make_hospitals(10)
