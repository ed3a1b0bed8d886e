"""Checkpoint state formats: ``tff.program.FileProgramStateManager`` (what
``bfdl_tff.federated.checkpoints`` uses) versus the earlier ``.npz`` (issue 13.8).

Prints numbers (no asserts):

1. **Cost** of saving and loading one round's state, median of ``--repeat`` runs: the real TFF
   state of the ``bfdl`` arm (DP-SGD + secure sum, small CNN, ``--size`` px, after one round) and
   a ResNet-50-sized state (23.6 M parameters + the same again for server momentum, random values):
   time, bytes on disk, and whether every loaded array is bit-identical (dtype, shape, bytes).
2. **Exact resume after SIGKILL**: ``bfdl train`` (bfdl arm, DP-SGD, secure sum, no ledger)
   uninterrupted, then the same run SIGKILLed after round 2's checkpoint and resumed
   (``--resume``), once with the program-state manager as the runner uses it and once with the
   resumed state taken from an ``.npz`` copy of it; final models compared bit for bit.

Usage: ``.venv/bin/python benchmarks/bench_checkpoints.py [--repeat 5] [--size 64] [--rounds 5]``
(redirect output to a file: TFF's worker process writes to inherited pipes).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]


def _identical(a: list[Any], b: list[Any]) -> bool:
    import numpy as np

    return len(a) == len(b) and all(
        np.asarray(x).dtype == np.asarray(y).dtype and np.asarray(x).shape == np.asarray(y).shape
        and np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in zip(a, b))


def _dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def _measure(name: str, arrays: list[Any], repeat: int) -> dict:
    from bfdl_tff.federated.checkpoints import CheckpointStore
    from bfdl_tff.runs import load_weights_npz, save_weights_npz

    out: dict = {"state": name, "tensors": len(arrays), "bytes_in_memory": int(sum(a.nbytes for a in arrays))}
    with tempfile.TemporaryDirectory(prefix="bench-ckpt-") as tmp:
        save_t, load_t, same = [], [], True
        for r in range(1, repeat + 1):
            path = Path(tmp) / f"round_{r:04d}.npz"
            t0 = time.perf_counter()
            save_weights_npz(path, arrays)
            t1 = time.perf_counter()
            back = load_weights_npz(path)
            load_t.append(time.perf_counter() - t1)
            save_t.append(t1 - t0)
            same = same and _identical(arrays, back)
        out["npz"] = {"save_s": statistics.median(save_t), "load_s": statistics.median(load_t),
                      "bytes_on_disk": (Path(tmp) / "round_0001.npz").stat().st_size, "bit_identical": same}
        store = CheckpointStore(Path(tmp) / "checkpoints")
        save_t, load_t, same = [], [], True
        for r in range(1, repeat + 1):
            t0 = time.perf_counter()
            ckpt = store.save(r, arrays, {"rows": []})
            t1 = time.perf_counter()
            back = store.load_arrays(ckpt)
            load_t.append(time.perf_counter() - t1)
            save_t.append(t1 - t0)
            same = same and _identical(arrays, back)
        out["file_program_state_manager"] = {
            "save_s": statistics.median(save_t), "load_s": statistics.median(load_t),
            "bytes_on_disk": _dir_bytes(store.state_path(1)), "bit_identical": same}
    return out


def _bfdl_state(size: int) -> list[Any]:
    """The flattened TFF state of the bfdl arm (DP-SGD + secure sum) after one round."""
    from bfdl_tff import tff_runtime
    from bfdl_tff.config import ExperimentConfig, from_dict
    from bfdl_tff.federated import accounting, model_bridge
    from bfdl_tff.federated.testing import toy_federation
    from bfdl_tff.federated.tff_engine import FederatedEngine
    from bfdl_tff.models import registry

    cfg = from_dict(ExperimentConfig, {
        "name": "bench", "arm": "bfdl", "ledger": {"enabled": False},
        "model": {"config": "small_cnn", "overrides": {"input_size": size}},
        "federated": {"rounds": 2, "batch_size": 8},
        "privacy": {"mode": "sample", "noise_multiplier": 0.8, "delta": 1e-3, "secure_sum": True}})
    data = toy_federation((40, 40, 40), size=size, seed=0)
    sched = accounting.schedule_for_config(cfg, {n: len(data.train[n]) for n in data.names}, source="bench")
    bundle = model_bridge.build_bundle(registry.load_model_config("small_cnn", input_size=size))
    engine = FederatedEngine(cfg, data, bundle, sched)
    engine.attach_initial_model(bundle.keras(seed=0))
    with tff_runtime.execution_context(engine.context_kind):
        state, _ = engine.run_round(engine.initial_state(), 1)
        return engine.state_arrays(state)


def _resnet_sized_state() -> list[Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    sizes = [147_456] * 160  # 23.6 M parameters in 160 tensors
    weights = [rng.standard_normal(s, dtype=np.float32) for s in sizes]
    return weights + [rng.standard_normal(s, dtype=np.float32) for s in sizes]  # + momentum


_CONFIG = """\
name: bench-ckpt
arm: bfdl
seed: 0
data: {{source: synthetic, root: {root}, image_size: 16, hospitals: 3, scheme: iid, synth_images: 150}}
model: {{config: small_cnn, overrides: {{input_size: 16, width: 4, conv_layers: 2}}}}
federated: {{rounds: {rounds}, batch_size: 8, client_lr: 0.1}}
privacy: {{mode: sample, noise_multiplier: 0.8, delta: 1.0e-3, secure_sum: true}}
ledger: {{enabled: false}}
"""


def _train(cfg: Path, out: Path, log: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONHASHSEED": "0"}
    with open(log, "a") as fh:
        return subprocess.Popen([sys.executable, "-m", "bfdl_tff.cli", "train", "--quiet", "--config", str(cfg),
                                 "--out", str(out), *extra], stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=REPO, env=env)


def _killed_then_resumed(cfg: Path, out: Path, log: Path, transform: Callable[[Any, Any], None] | None) -> int:
    proc = _train(cfg, out, log)
    marker = out / "checkpoints" / "round_0002.json"
    while not marker.exists():
        if proc.poll() is not None:
            raise SystemExit(f"training exited {proc.returncode} before round 2 (see {log})")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    from bfdl_tff.federated.checkpoints import CheckpointStore

    store = CheckpointStore(out / "checkpoints")
    latest = store.latest()
    if transform is not None:
        transform(store, latest)
    rc = _train(cfg, out, log, "--resume").wait()
    if rc != 0:
        raise SystemExit(f"resume exited {rc} (see {log})")
    return latest.round_num


def _as_npz(store: Any, latest: Any) -> None:
    """Replace the newest checkpoint's program state by an ``.npz`` of the same arrays (the
    earlier format, still resumed from)."""
    import shutil

    from bfdl_tff.runs import save_weights_npz

    arrays = store.load_arrays(latest)
    shutil.rmtree(latest.state_path)
    save_weights_npz(store.legacy_state_file(latest.round_num), arrays)
    meta = dict(latest.meta)
    meta.pop("state_tensors")
    store.meta_file(latest.round_num).write_text(json.dumps(meta))


def resume_experiment(rounds: int) -> dict:
    from bfdl_tff.runs import load_weights_npz

    with tempfile.TemporaryDirectory(prefix="bench-resume-") as tmp:
        tmp_p = Path(tmp)
        cfg = tmp_p / "cfg.yaml"
        cfg.write_text(_CONFIG.format(root=tmp_p / "synth", rounds=rounds))
        log = tmp_p / "train.log"
        t0 = time.perf_counter()
        if _train(cfg, tmp_p / "full", log).wait() != 0:
            raise SystemExit(f"uninterrupted run failed: {log.read_text()[-3000:]}")
        full_s = time.perf_counter() - t0
        ref = load_weights_npz(tmp_p / "full" / "final_model.npz")
        out: dict = {"rounds": rounds, "uninterrupted_s": full_s}
        for name, transform in (("file_program_state_manager", None), ("npz", _as_npz)):
            run = tmp_p / name
            killed_at = _killed_then_resumed(cfg, run, log, transform)
            final = load_weights_npz(run / "final_model.npz")
            rows = (run / "metrics.csv").read_text().strip().splitlines()[1:]
            out[name] = {"resumed_from_round": killed_at, "final_model_bit_identical": _identical(ref, final),
                         "metrics_rows": len(rows)}
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--skip-resume", action="store_true")
    args = ap.parse_args(argv)
    results: dict = {"setting": vars(args), "cpu_count": os.cpu_count()}
    results["cost"] = [_measure("bfdl arm (DP-SGD + secure sum), small CNN", _bfdl_state(args.size), args.repeat),
                       _measure("ResNet-50 sized (23.6 M params + momentum), random", _resnet_sized_state(), args.repeat)]
    if not args.skip_resume:
        results["kill_resume"] = resume_experiment(args.rounds)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
