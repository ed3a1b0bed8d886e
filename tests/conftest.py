"""Shared test fixtures, the ``tff`` marker and the process-hygiene guard.

* Slow tests are excluded by default in setup.cfg (``addopts = ... -m "not slow"``; run them with
  ``-m slow``).
* Tests that use the TFF context fixtures (``tff_context``, ``tff_test_context``) are marked
  ``tff`` automatically (:func:`pytest_collection_modifyitems`); a test that starts a TFF
  ``worker_binary`` in this process without the ``tff`` marker fails (:func:`_tff_marker_is_honest`),
  so ``-m "not tff"`` really runs no TFF.
* The session guard fails the run if a TensorFlow Federated ``worker_binary`` started by this
  test process is still alive at the end (such a process holds pipes open and hangs CI).
  Fixtures that start servers (bao) must stop them; the guard checks those too.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TFF_FIXTURES = frozenset({"tff_context", "tff_test_context"})


def pytest_unconfigure(config: pytest.Config) -> None:
    """At interpreter exit TensorFlow 2.14's ``AtomicFunction.__del__`` runs after its module's
    globals are cleared and prints ``Exception ignored ... 'NoneType' object is not subscriptable``
    for every traced function still alive; at that point there is nothing left to release, so the
    finaliser is turned off once the session is over (it has no effect on any test)."""
    import sys

    mod = sys.modules.get("tensorflow.python.eager.polymorphic_function.atomic_function")
    if mod is not None:
        mod.AtomicFunction.__del__ = lambda self: None  # type: ignore[method-assign]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses a TFF context fixture ``tff``."""
    for item in items:
        if TFF_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.tff)


@pytest.fixture(autouse=True)
def _tff_marker_is_honest(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that started a TFF worker in this process but is not marked ``tff``."""
    from bfdl_tff import tff_runtime

    before = tff_runtime.workers_started()
    yield
    if tff_runtime.workers_started() > before and request.node.get_closest_marker("tff") is None:
        pytest.fail(f"{request.node.nodeid} starts a TFF worker_binary but is not marked tff "
                    "(add pytest.mark.tff or use the tff_context fixture)")


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_processes():
    from bfdl_tff import tff_runtime

    # Orphaned workers (re-parented to PID 1) that appear during the session come from
    # subprocesses the tests started (e.g. `bfdl train` run as a child) that did not clean up.
    before = set(tff_runtime.worker_children(1))
    yield
    tff_runtime.shutdown_workers()
    mine = tff_runtime.worker_children()
    assert not mine, f"TFF worker_binary processes left running: {mine}"
    leaked = set(tff_runtime.worker_children(1)) - before
    assert not leaked, f"orphaned worker_binary processes appeared during the tests: {sorted(leaked)}"


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


def _process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] == "Z"
    except FileNotFoundError:
        return True


@contextlib.contextmanager
def _running_bao(log_path: Path) -> Iterator[object]:
    """An OpenBao dev server on a free loopback port, stopped (and checked gone) afterwards."""
    from bfdl_tff.keys.devserver import BaoDevServer

    srv = BaoDevServer(log_path)
    srv.start()
    pid = srv.proc.pid
    try:
        yield srv
    finally:
        srv.stop()
        assert _process_gone(pid), "bao dev server still running after the test"


@pytest.fixture
def bao(tmp_path):
    """A bao dev server for one test."""
    with _running_bao(tmp_path / "bao.log") as srv:
        yield srv


@pytest.fixture(scope="module")
def bao_module(tmp_path_factory):
    """A bao dev server shared by a module's tests."""
    with _running_bao(tmp_path_factory.mktemp("bao") / "bao.log") as srv:
        yield srv


@pytest.fixture(scope="session", autouse=True)
def _keystore_in_tmp(tmp_path_factory):
    """The local keystore (``$BFDL_KEYSTORE``, read by ``bfdl_tff.keys.keystore_dir``) is a
    session temporary directory: no test writes keys into the user's home."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BFDL_KEYSTORE", str(tmp_path_factory.mktemp("keystore")))
        yield
