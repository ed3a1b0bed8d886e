"""Fixtures of the data tests: the shared real data (``../shared`` next to the repository, or
``$BFDL_SHARED``), skipped with a stated reason when absent."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_helpers import REPO_ROOT, shared_dir


def _need(rel: str) -> Path:
    p = shared_dir() / rel
    if not p.exists():
        pytest.skip(f"shared real data {p} not present (set BFDL_SHARED or put the shared folder at {REPO_ROOT.parent / 'shared'})")
    return p


@pytest.fixture(scope="session")
def pneumonia_npz() -> Path:
    """PneumoniaMNIST (MedMNIST v2, real pediatric chest X-rays, 28 px)."""
    return _need("pneumoniamnist/pneumoniamnist.npz")


@pytest.fixture(scope="session")
def nih_sample() -> Path:
    """621 real NIH ChestX-ray14 images (one per patient, 256 px) in the NIH layout."""
    return _need("nih_cxr14/real_sample_256")


@pytest.fixture(scope="session")
def nih_full_table() -> Path:
    """The complete NIH Data_Entry table (v2020, 112,120 rows, gzip)."""
    return _need("nih_cxr14/full_metadata/Data_Entry_2017_v2020.csv.gz")
