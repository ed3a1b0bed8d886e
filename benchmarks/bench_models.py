"""Seconds per training step of each model config at its default size (batch 8), on this machine.

Plain Keras ``train_on_batch`` with SGD and the project's losses (``bfdl_tff.models.losses``),
random inputs in [0, 1], random labels and (for hybrids) masks of which half are -1. One warm-up
step (graph tracing) is excluded; the median and the minimum of the timed steps are printed.

    .venv/bin/python benchmarks/bench_models.py                      # every config
    .venv/bin/python benchmarks/bench_models.py small_cnn resnet_unet_small --steps 20
    .venv/bin/python benchmarks/bench_models.py resnet50 --input-size 128 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def bench_one(name: str, *, batch: int, steps: int, input_size: int | None) -> dict:
    import numpy as np
    import tensorflow as tf

    from bfdl_tff.models.losses import compile_model
    from bfdl_tff.models.registry import build_model, count_params, load_model_config, uses_masks

    overrides = {"input_size": input_size} if input_size else {}
    cfg = load_model_config(name, **overrides)
    t0 = time.perf_counter()
    model = build_model(cfg, seed=0)
    build_s = time.perf_counter() - t0
    compile_model(model, cfg, optimizer=tf.keras.optimizers.SGD(0.01))
    rng = np.random.default_rng(0)
    s = cfg.input_size
    x = rng.random((batch, s, s, cfg.channels), dtype=np.float32)
    y = (rng.random((batch, cfg.num_findings)) > 0.8).astype(np.float32)
    target: object = y
    if uses_masks(cfg):
        m = (rng.random((batch, s, s, 1)) > 0.9).astype(np.float32)
        m[batch // 2 :] = -1.0
        target = (y, m)
    t0 = time.perf_counter()
    model.train_on_batch(x, target)
    warm_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        model.train_on_batch(x, target)
        times.append(time.perf_counter() - t0)
    total, trainable = count_params(model)
    return {
        "model": name,
        "input_size": s,
        "batch": batch,
        "parameters": total,
        "trainable_parameters": trainable,
        "build_s": round(build_s, 3),
        "first_step_s": round(warm_s, 3),
        "step_s_median": round(statistics.median(times), 4),
        "step_s_min": round(min(times), 4),
        "steps": steps,
    }


def main(argv: list[str] | None = None) -> int:
    from bfdl_tff.models.registry import list_models

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help="config names (default: all)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=0, help="timed steps (default: 10 small, 3 ResNet-50)")
    ap.add_argument("--input-size", type=int, default=None, help="override every model's input size")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    names = args.models or list_models()
    rows = []
    for name in names:
        steps = args.steps or (3 if name.startswith("resnet50") else 10)
        rows.append(bench_one(name, batch=args.batch, steps=steps, input_size=args.input_size))
        r = rows[-1]
        if not args.json:
            print(
                f"{r['model']:<20} {r['input_size']:>4} px  batch {r['batch']}  params {r['parameters']:>11,}  "
                f"step median {r['step_s_median']:.4f} s  min {r['step_s_min']:.4f} s  "
                f"(first step {r['first_step_s']:.2f} s, build {r['build_s']:.2f} s, {r['steps']} steps)",
                flush=True,
            )
    if args.json:
        print(json.dumps({"cpu_count": os.cpu_count(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
