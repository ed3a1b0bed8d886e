"""Shared test fixtures and the process-hygiene guard.

The session guard fails the run if a TensorFlow Federated ``worker_binary`` started by this test
process is still alive at the end (such a process holds pipes open and hangs CI). Fixtures that
start servers (bao) must stop them; the guard checks those too.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_processes():
    from bfdl_tff import tff_runtime

    before = set(tff_runtime.all_worker_binaries())
    yield
    tff_runtime.shutdown_workers()
    mine = tff_runtime.worker_children()
    assert not mine, f"TFF worker_binary processes left running: {mine}"
    leaked = set(tff_runtime.all_worker_binaries()) - before
    assert not leaked, f"worker_binary processes started during the tests are still alive: {sorted(leaked)}"


@pytest.fixture
def tff_context():
    """A native TFF execution context, closed (worker stopped) after the test."""
    from bfdl_tff import tff_runtime

    with tff_runtime.execution_context("native"):
        yield


@pytest.fixture
def tff_test_context():
    """TFF's test context (secure intrinsics simulated), closed after the test."""
    from bfdl_tff import tff_runtime

    with tff_runtime.execution_context("test"):
        yield
