"""The one place that creates and closes TensorFlow Federated execution contexts.

TFF 0.87's C++ execution context starts a ``worker_binary`` child process that inherits Python's
stdout/stderr and outlives Python (re-parented to PID 1), which keeps pipes open and hangs CI
(see shared/notes/tff-0.87-facts.md). Every entry point that runs federated computations uses
:func:`execution_context`; on exit (and at interpreter exit) the ``worker_binary`` children of this
process are terminated by PID.

Two kinds of context:
- ``native``: ``tff.backends.native.set_sync_local_cpp_execution_context`` (fast, default);
- ``test``: ``tff.backends.test.set_sync_test_cpp_execution_context``, which replaces the secure
  intrinsics (``federated_secure_sum_bitwidth`` etc.) with plain sums, so ``SecureSumFactory``
  runs. The server sees only the sum; there is no cryptography in TFF's simulation runtime.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import time
from typing import Iterator, Literal

ContextKind = Literal["native", "test"]

_current: ContextKind | None = None


def _proc_children(pid: int) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != pid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().split(b"\0")[0].decode(errors="replace")
            out.append((int(entry), cmd))
        except (OSError, ValueError, IndexError):
            continue
    return out


def worker_children(pid: int | None = None) -> list[int]:
    """PIDs of TFF ``worker_binary`` processes whose parent is ``pid`` (default: this process)."""
    pid = os.getpid() if pid is None else pid
    return [p for p, cmd in _proc_children(pid) if os.path.basename(cmd) == "worker_binary"]


def all_worker_binaries() -> list[int]:
    """Every ``worker_binary`` process on the machine (used by the test-session guard)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if os.path.basename(cmd) == "worker_binary":
            pids.append(int(entry))
    return pids


def shutdown_workers(timeout_s: float = 5.0) -> list[int]:
    """Terminate this process's ``worker_binary`` children (SIGTERM, then SIGKILL); return PIDs."""
    pids = worker_children()
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _alive(p)]
        if alive:
            time.sleep(0.05)
    for p in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    for p in pids:  # reap if they are our children
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(p, os.WNOHANG)
    return pids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().decode(errors="replace").rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def set_context(kind: ContextKind = "native") -> None:
    """Install a TFF execution context of the given kind (idempotent)."""
    global _current
    import tensorflow_federated as tff

    if _current == kind:
        return
    if kind == "native":
        tff.backends.native.set_sync_local_cpp_execution_context()
    elif kind == "test":
        tff.backends.test.set_sync_test_cpp_execution_context()
    else:
        raise ValueError(f"unknown execution context kind {kind!r}")
    _current = kind


def current_context() -> ContextKind | None:
    return _current


def reset() -> None:
    """Forget the installed context and stop its workers."""
    global _current
    shutdown_workers()
    _current = None


@contextlib.contextmanager
def execution_context(kind: ContextKind = "native") -> Iterator[None]:
    """Run TFF computations inside a context of ``kind``; stop its worker processes afterwards."""
    set_context(kind)
    try:
        yield
    finally:
        reset()


atexit.register(shutdown_workers)
