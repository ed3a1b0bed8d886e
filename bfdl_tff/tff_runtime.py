"""The one place that creates and closes TensorFlow Federated execution contexts, and the
process hygiene around TFF's ``worker_binary``.

TFF 0.87's C++ execution context starts a ``worker_binary`` child process
(``tensorflow_federated/python/core/impl/executor_stacks/executor_factory.py``:
``subprocess.Popen([worker_binary, --port=P, ...], stdout=sys.stdout, stderr=sys.stderr)``, from
the context's event-loop thread, when the first computation runs). Left alone it inherits
Python's stdout/stderr and outlives Python (re-parented to PID 1), keeping pipes open and a port
listening. Here:

* **The worker cannot outlive its parent**: before a context is installed, TFF's module-level
  ``subprocess`` in ``executor_factory`` is replaced by a proxy whose ``Popen`` starts the worker
  with a parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``, set by a tiny exec wrapper
  that then ``execv``s the worker; the setting survives ``exec``), so the kernel kills it when the
  thread that started it ends: on SIGKILL of Python, on any exit, and when the context (its
  event-loop thread) is discarded. No ``preexec_fn``: Python code between ``fork`` and ``exec`` in
  this multi-threaded process (gRPC, TensorFlow threads) aborted the child now and then ("Fatal
  Python error: Aborted" in ``_execute_child``) and hung TFF's retrying executor; without it
  ``subprocess`` spawns with ``vfork`` and runs no Python in the child.
* **Clean shutdown**: :func:`execution_context` stops the worker on exit (and at interpreter exit)
  by its ``Popen``; a stopped worker no longer counts as a ``Popen`` for TFF's own
  ``ServiceManager.__del__``, which would otherwise signal a PID that was already reaped
  (``ProcessLookupError`` noise, or a recycled PID); the context's remote executors are closed so
  that values still alive do not try to dispose of themselves on the dead worker
  (``RetryableGRPCError`` tracebacks at exit).
* **Signals**: :func:`terminate_on_signals` turns SIGTERM/SIGINT into :class:`Terminated`
  (a ``SystemExit``) in the main thread, so every ``finally`` runs (hooks closed, checkpoint kept,
  worker stopped); a duplicate of the signal right after it is ignored, a later one ends the
  process at once (the worker still dies with it).
* **Exposure**: the worker listens on ``[::]:P`` (all interfaces, no authentication) for the
  life of the context; TFF 0.87's worker has only ``--port`` (no bind address), so this cannot be
  restricted to loopback from here (docs/federated.md, "Processes and signals").

Two kinds of context:
- ``native``: ``tff.backends.native.set_sync_local_cpp_execution_context`` (fast, default);
- ``test``: ``tff.backends.test.set_sync_test_cpp_execution_context``, which replaces the secure
  intrinsics (``federated_secure_sum_bitwidth`` etc.) with plain sums, so ``SecureSumFactory``
  runs. The server sees only the sum; there is no cryptography in TFF's simulation runtime.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import types
import weakref
from typing import Any, Iterator, Literal, Sequence

ContextKind = Literal["native", "test"]

_current: ContextKind | None = None

# ---------------------------------------------------------------------------------------------
# Starting the worker: parent-death signal, tracked Popen
# ---------------------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_spawned: "weakref.WeakSet[subprocess.Popen[bytes]]" = weakref.WeakSet()
_started = 0  # workers started by this process (for the tests' tff-marker check)


#: Run as ``python -I -S -c _EXEC_WRAPPER <parent pid> <program> <args...>``: arm the parent-death
#: signal, give up if the parent is already gone, then become the program (same PID, so the signal
#: stays armed for it).
_EXEC_WRAPPER = (
    "import ctypes, os, sys\n"
    f"ctypes.CDLL(None, use_errno=True).prctl({_PR_SET_PDEATHSIG}, {int(signal.SIGKILL)}, 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(1)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def die_with_parent_argv(args: Sequence[str], parent_pid: int) -> list[str]:
    """``args`` behind the exec wrapper: the program gets SIGKILL when ``parent_pid``'s starting
    thread ends (and never starts if that process is already gone)."""
    return [sys.executable, "-I", "-S", "-c", _EXEC_WRAPPER, str(parent_pid), *[str(a) for a in args]]


class WorkerPopen(subprocess.Popen):  # type: ignore[type-arg]
    """``subprocess.Popen`` for TFF's worker: dies with its parent, tracked for shutdown."""

    def __init__(self, args: Sequence[str], **kwargs: Any) -> None:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        if isinstance(args, (str, bytes)):
            args = [args]
        super().__init__(die_with_parent_argv(list(args), os.getpid()), **kwargs)
        global _started
        _started += 1
        _spawned.add(self)


def workers_started() -> int:
    """How many ``worker_binary`` processes this process has started through TFF so far."""
    return _started


class _LiveWorkerMeta(type):
    """Calling :class:`_PopenForTFF` starts a :class:`WorkerPopen`; ``isinstance(p, _PopenForTFF)``
    is True only while ``p`` has not been waited for, so TFF's ``ServiceManager.__del__``
    (``if isinstance(p, subprocess.Popen): os.kill(p.pid, SIGINT); p.wait()``) leaves a worker
    that :func:`shutdown_workers` already stopped and reaped alone."""

    def __call__(cls, *args: Any, **kwargs: Any) -> WorkerPopen:
        return WorkerPopen(*args, **kwargs)

    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, WorkerPopen) and obj.returncode is None


class _PopenForTFF(metaclass=_LiveWorkerMeta):
    """What TFF's ``executor_factory`` calls ``subprocess.Popen`` (see :class:`_LiveWorkerMeta`)."""

    __class_getitem__ = classmethod(types.GenericAlias)  # TFF annotates ``subprocess.Popen[bytes]``


class _SubprocessProxy:
    """The ``subprocess`` module as TFF's ``executor_factory`` sees it."""

    Popen = _PopenForTFF

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)


def guard_worker_spawn() -> None:
    """Make TFF start every future ``worker_binary`` through :class:`WorkerPopen` (idempotent)."""
    from tensorflow_federated.python.core.impl.executor_stacks import executor_factory

    if not isinstance(executor_factory.subprocess, _SubprocessProxy):
        executor_factory.subprocess = _SubprocessProxy()


class _UnusedSecureSumAssertFilter(logging.Filter):
    """Drops TensorFlow's ``Object was never used`` error for one assertion inside TFF.

    TFF 0.87's secure-sum quantisation (``aggregators/primitives.py``,
    ``_client_tensor_shift_for_secure_sum``) calls ``tf.debugging.assert_less_equal(lower_bound,
    upper_bound)`` in graph mode and drops the result, so the assertion never runs and TF's
    ``tf_should_use`` logs a 12-line ERROR block for every traced copy (several per run with
    ``privacy.secure_sum``). Nothing is wrong with the run; only this exact message is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not ("Object was never used" in msg and "assert_less_equal" in msg and "AssertGuard" in msg)


def silence_known_tff_noise() -> None:
    """Install :class:`_UnusedSecureSumAssertFilter` on the ``tensorflow`` logger (idempotent;
    done when this module is imported, before any TFF process is built)."""
    tf_logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _UnusedSecureSumAssertFilter) for f in tf_logger.filters):
        tf_logger.addFilter(_UnusedSecureSumAssertFilter())


silence_known_tff_noise()


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
    """Stop this process's ``worker_binary`` children; return their PIDs.

    Workers started through :class:`WorkerPopen` are killed and waited for by their ``Popen``
    (the worker keeps no state worth a graceful stop). Any other ``worker_binary`` child (a
    context created before :func:`guard_worker_spawn`) gets SIGTERM, then SIGKILL after
    ``timeout_s``, and is left for its own ``Popen`` to reap."""
    stopped: list[int] = []
    for proc in list(_spawned):
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout_s)
            stopped.append(proc.pid)
    others = [p for p in worker_children() if p not in stopped]
    for p in others:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    alive = list(others)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _alive(p)]
        if alive:
            time.sleep(0.05)
    for p in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    return stopped + others


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
    guard_worker_spawn()
    _release_graphs_at_exit()
    if kind == "native":
        tff.backends.native.set_sync_local_cpp_execution_context()
    elif kind == "test":
        tff.backends.test.set_sync_test_cpp_execution_context()
    else:
        raise ValueError(f"unknown execution context kind {kind!r}")
    _current = kind


_exit_cleanup_registered = False


def _release_graphs_at_exit() -> None:
    """Register (once, after TensorFlow is imported, so it runs before TF's own exit handlers)
    :func:`_release_keras_graph_session`."""
    global _exit_cleanup_registered
    if not _exit_cleanup_registered:
        atexit.register(_release_keras_graph_session)
        _exit_cleanup_registered = True


def _release_keras_graph_session() -> None:
    """Drop the ``tf.compat.v1`` Session and Graph that Keras keeps in a module global once a
    model was built in graph mode (TFF traces ``model_fn`` in a graph), while modules are still
    intact. Otherwise the graph's functions (TFF's Keras metric ``finalizer``s) are freed during
    interpreter teardown, and ``AtomicFunction.__del__`` prints ``TypeError: 'NoneType' object
    is not subscriptable`` for each."""
    if "tensorflow" not in sys.modules:
        return
    with contextlib.suppress(Exception):
        sys.modules["tensorflow"].keras.backend.clear_session()
    gc.collect()


def current_context() -> ContextKind | None:
    return _current


def reset() -> None:
    """Forget the installed context and stop its workers."""
    global _current
    shutdown_workers()
    if _current is not None:
        _close_remote_executors()
    _current = None


def _close_remote_executors() -> None:
    """Close the current context's remote executors (after its worker was stopped).

    Every value a TFF computation returns holds a ``weakref.finalize`` that asks the worker to
    dispose of it, also at interpreter exit. With the worker gone (stopped here, or after
    SIGTERM) those calls fail and print ``RetryableGRPCError`` tracebacks. A closed
    ``RemoteExecutor`` (its executor id cleared; the failed RPC is caught by TFF) skips them.
    Reaches into ``ResourceManagingExecutorFactory._executors`` (TFF 0.87): best effort."""
    import tensorflow_federated as tff

    ctx = tff.framework.get_context_stack().current
    factory = getattr(ctx, "executor_factory", None)
    for ex in list(getattr(factory, "_executors", {}).values()):
        with contextlib.suppress(Exception):
            ex.close()


@contextlib.contextmanager
def execution_context(kind: ContextKind = "native") -> Iterator[None]:
    """Run TFF computations inside a context of ``kind``; stop its worker processes afterwards."""
    set_context(kind)
    try:
        yield
    finally:
        reset()


# ---------------------------------------------------------------------------------------------
# Signals
# ---------------------------------------------------------------------------------------------


class Terminated(SystemExit):
    """SIGTERM or SIGINT arrived inside :func:`terminate_on_signals`; exit code ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


DUPLICATE_SIGNAL_WINDOW_S = 2.0


@contextlib.contextmanager
def terminate_on_signals(signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """Inside the block, SIGTERM/SIGINT raise :class:`Terminated` in the main thread, so every
    ``finally`` runs (hooks closed, checkpoint kept, TFF worker stopped).

    Further signals while shutting down: within :data:`DUPLICATE_SIGNAL_WINDOW_S` of the first
    they are the same request delivered twice and ignored (``timeout`` signals both the process
    and its process group; a terminal's Ctrl-C reaches the whole group); later ones end the
    process at once (``os._exit``; the worker dies with it by its parent-death signal). Outside
    the main thread: no change."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in signals}
    first: list[float] = []

    def handler(signum: int, frame: Any) -> None:  # noqa: ARG001
        if not first:
            first.append(time.monotonic())
            raise Terminated(signum)
        if time.monotonic() - first[0] < DUPLICATE_SIGNAL_WINDOW_S:
            return
        os.write(2, f"{signal.Signals(signum).name} again: exiting without cleanup\n".encode())
        os._exit(128 + signum)

    for s in signals:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


atexit.register(shutdown_workers)
