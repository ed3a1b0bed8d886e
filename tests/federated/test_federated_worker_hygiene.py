"""No orphan TFF worker, clean shutdown on SIGTERM/SIGINT (issue 17.5).

* SIGKILL of a Python process that started a TFF context: its ``worker_binary`` dies with it
  (parent-death signal set by ``tff_runtime``); without the guard TFF's worker survives (the
  control case shows the test can fail).
* SIGTERM of ``bfdl train``: one line on stderr, exit 143, no worker left, the run resumes.
* SIGTERM/SIGINT inside ``terminate_on_signals`` raise ``Terminated``; the runner closes its hooks
  and keeps the checkpoint.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bfdl_tff import tff_runtime

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONHASHSEED": "0"}


def _is_worker(pid: int) -> bool:
    """``pid`` is a live (non-zombie) worker_binary."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return False
    return os.path.basename(cmd) == "worker_binary" and tff_runtime._alive(pid)


def _wait_for(pred, timeout_s: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process exited with {proc.returncode} before {what}: {log.read_text()[-3000:] if log else ''}")
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout_s}s waiting for {what}")


# ---------------------------------------------------------------------------------- signals


def test_terminate_on_signals_raises_terminated_and_restores_handlers():
    before = signal.getsignal(signal.SIGTERM)
    for sig in (signal.SIGTERM, signal.SIGINT):
        stopped_cleanly = False
        with pytest.raises(tff_runtime.Terminated) as exc:
            with tff_runtime.terminate_on_signals():
                try:
                    os.kill(os.getpid(), sig)
                    time.sleep(5)  # the handler raises before this ends
                finally:
                    # the same request again (e.g. `timeout` signals the process and its group):
                    # ignored, the cleanup goes on
                    os.kill(os.getpid(), sig)
                    time.sleep(0.2)
                    stopped_cleanly = True
        assert stopped_cleanly
        assert exc.value.code == 128 + sig and exc.value.signal_name == signal.Signals(sig).name
        assert isinstance(exc.value, SystemExit)
    assert signal.getsignal(signal.SIGTERM) == before
    assert signal.getsignal(signal.SIGINT) == signal.default_int_handler


def test_sigterm_during_a_run_closes_hooks_and_keeps_the_checkpoint(tmp_path):
    from bfdl_tff.config import ExperimentConfig, from_dict
    from bfdl_tff.federated.checkpoints import CheckpointStore
    from bfdl_tff.federated.hooks import RecordingHook
    from bfdl_tff.federated.runner import run_experiment
    from bfdl_tff.federated.testing import toy_federation

    class SigtermAfterRound1(RecordingHook):
        def on_round_end(self, ctx):
            super().on_round_end(ctx)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)

    cfg = from_dict(ExperimentConfig, {
        "name": "t", "arm": "centralized", "privacy": {"mode": "none"}, "ledger": {"enabled": False},
        "model": {"config": "small_cnn", "overrides": {"input_size": 16, "width": 4, "conv_layers": 2}},
        "federated": {"rounds": 3, "batch_size": 8, "client_lr": 0.1},
    })
    hook = SigtermAfterRound1()
    with pytest.raises(tff_runtime.Terminated):
        with tff_runtime.terminate_on_signals():
            run_experiment(cfg, tmp_path, hooks=[hook], data=toy_federation((12, 20, 28), size=16, n_test=48, seed=1),
                           progress=False)
    assert hook.closed and hook.summary is None
    latest = CheckpointStore(tmp_path / "checkpoints").latest()
    assert latest.round_num == 1 and not latest.hooks_done  # re-announced on --resume
    assert not (tmp_path / "summary.json").exists()


# ---------------------------------------------------------------------------------- orphans

_START_CONTEXT = textwrap.dedent("""
    import os, sys, time
    import tensorflow as tf
    import tensorflow_federated as tff
    from bfdl_tff import tff_runtime

    if sys.argv[2] == "guarded":
        tff_runtime.set_context("native")
    else:  # TFF as it comes, for the control case
        tff.backends.native.set_sync_local_cpp_execution_context()

    @tff.tensorflow.computation(tf.int32)
    def add_one(x):
        return x + 1

    assert add_one(1) == 2
    with open(sys.argv[1] + ".tmp", "w") as fh:
        fh.write(" ".join(str(p) for p in tff_runtime.worker_children()))
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(600)
""")


@pytest.mark.tff
@pytest.mark.parametrize("mode", ["guarded", "unguarded"])
def test_sigkill_of_python_leaves_no_worker(tmp_path, mode):
    script, pids_file, log = tmp_path / "start.py", tmp_path / "workers.txt", tmp_path / "log.txt"
    script.write_text(_START_CONTEXT)
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, str(script), str(pids_file), mode], stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=REPO, env=_env())
    workers: list[int] = []
    try:
        _wait_for(pids_file.exists, 300, "the TFF context to start", proc, log)
        workers = [int(p) for p in pids_file.read_text().split()]
        assert workers and all(_is_worker(p) for p in workers)
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(_is_worker(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        alive = [p for p in workers if _is_worker(p)]
        if mode == "guarded":
            assert alive == [], f"worker_binary {alive} outlived its SIGKILLed parent"
        else:
            assert alive == workers, "control case: TFF's own worker survives SIGKILL of its parent"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in workers:  # the control case's orphan (started by this test)
            if _is_worker(p):
                os.kill(p, signal.SIGKILL)


_TRAIN_CONFIG = """\
name: sigterm
arm: federated
seed: 0
data:
  source: synthetic
  root: {root}
  image_size: 16
  hospitals: 3
  scheme: iid
  synth_images: 150
model:
  config: small_cnn
  overrides: {{input_size: 16, width: 4, conv_layers: 2}}
federated:
  rounds: 8
  batch_size: 8
  client_lr: 0.1
privacy:
  mode: none
ledger:
  enabled: false
"""


def _train(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, "-m", "bfdl_tff.cli", "train", "--quiet", *args], stdout=fh,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO, env=_env())


@pytest.mark.tff
def test_sigterm_of_bfdl_train_exits_cleanly_and_resumes(tmp_path):
    import csv

    cfg, run = tmp_path / "cfg.yaml", tmp_path / "run"
    cfg.write_text(_TRAIN_CONFIG.format(root=tmp_path / "synth"))
    log = tmp_path / "train.out"
    proc = _train(["--config", str(cfg), "--out", str(run)], log)
    workers: list[int] = []
    try:
        _wait_for((run / "checkpoints" / "round_0001.json").exists, 600, "round 1's checkpoint", proc, log)
        workers = tff_runtime.worker_children(proc.pid)
        assert workers, "bfdl train runs the federated arm in a TFF worker"
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = log.read_text()
    assert rc == 128 + signal.SIGTERM, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    last = out.strip().splitlines()[-1]
    assert last.startswith("bfdl: train: stopped by SIGTERM") and "--resume" in last
    assert not any(_is_worker(p) for p in workers), "TFF worker left running after SIGTERM"
    assert not (run / "summary.json").exists()

    log2 = tmp_path / "resume.out"
    proc = _train(["--config", str(cfg), "--out", str(run), "--resume"], log2)
    rc = proc.wait(timeout=900)
    assert rc == 0, log2.read_text()[-3000:]
    with open(run / "metrics.csv", newline="") as fh:
        assert [r["round"] for r in csv.DictReader(fh)] == [str(r) for r in range(1, 9)]
    assert (run / "summary.json").exists()


# ---------------------------------------------------------------------------------- exit noise


def test_keras_graph_session_is_released_before_interpreter_exit(tff_context):
    """A model_fn that touches weights in TFF's graph makes Keras keep that graph's Session in a
    module global until interpreter teardown, where each function of the graph (e.g. TFF's Keras
    metric ``finalizer``s) prints ``AtomicFunction.__del__ ... TypeError``. The exit handler that
    ``tff_runtime`` registers releases the Session and its graph while modules are intact."""
    import weakref

    import numpy as np
    import tensorflow as tf
    import tensorflow_federated as tff
    from keras.src import backend as keras_backend  # Keras 2.14's session holder (test only)

    def model_fn():
        keras = tf.keras.Sequential([tf.keras.layers.InputLayer(input_shape=(2,)), tf.keras.layers.Dense(1)])
        keras.set_weights([np.ones((2, 1), np.float32), np.zeros((1,), np.float32)])  # graph mode: a Session
        return tff.learning.models.from_keras_model(
            keras, input_spec=(tf.TensorSpec([None, 2], tf.float32), tf.TensorSpec([None, 1], tf.float32)),
            loss=tf.keras.losses.MeanSquaredError(), metrics=[tf.keras.metrics.MeanAbsoluteError()])

    tff.learning.algorithms.build_weighted_fed_avg(model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1))
    session = getattr(keras_backend._SESSION, "session", None)
    assert session is not None, "expected Keras to keep the graph-mode Session"
    graph = weakref.ref(session.graph)
    del session
    assert tff_runtime._exit_cleanup_registered  # set_context registered the exit handler
    tff_runtime._release_keras_graph_session()  # what atexit runs
    assert getattr(keras_backend._SESSION, "session", None) is None
    assert graph() is None, "the graph (and its functions) must be freed before interpreter teardown"


@pytest.mark.tff
def test_values_alive_after_the_worker_stopped_do_not_call_it():
    """Remote values that outlive the context (e.g. of a computation interrupted by SIGTERM)
    dispose of themselves on GC and at exit; after the worker is stopped that must not try to
    reach it (it used to print RetryableGRPCError tracebacks at exit)."""
    import asyncio
    import gc

    import numpy as np
    import tensorflow as tf
    import tensorflow_federated as tff

    unraisable: list = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        with tff_runtime.execution_context("native"):

            @tff.tensorflow.computation(tf.int32)
            def add_one(x):
                return x + 1

            assert add_one(1) == 2  # starts the worker and the remote executor
            factory = tff.framework.get_context_stack().current.executor_factory
            (executor,) = factory._executors.values()
            values = [asyncio.run(executor.create_value(i, tff.TensorType(np.int32))) for i in range(45)]
        del values  # more than TFF's dispose batch (20): a dispose call is due
        gc.collect()
    finally:
        sys.unraisablehook = old_hook
    assert [str(u.exc_value)[:200] for u in unraisable] == []
