"""DP-SGD step time versus a non-private step (prints numbers; no asserts). Issue 14.5.

Same model, same batch, plain TensorFlow (``tf.function``), median of timed steps after a warm-up:

- ``plain``: forward + backward of the mean loss + SGD update (the non-private step);
- ``fast_image``: :func:`bfdl_tff.models.clipping.clipped_gradient_sum` with one unit per image,
  Gaussian noise, division by the expected batch, SGD update (what the B-FDL client runs);
- ``fast_patient``: the same with images grouped into patients (the default ``privacy.unit``),
  NIH-like images per patient capped at 4;
- ``naive_vmap``: per-example gradients of the whole model with ``tf.vectorized_map`` (the
  fallback path), clipped, noised.

Target (issue 14): ``fast_*`` <= 1.5x ``plain`` on the default model at the default size.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_dp_sgd.py [--config default] [--batch 32] [--steps 40]
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


def _interleaved(fns: dict, steps: int) -> dict[str, list[float]]:
    """Time the functions in turn, ``steps`` rounds (the machine is shared: interleaving exposes
    every variant to the same load; ratios are taken per round)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(steps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def _patient_segments(b: int, rng) -> "list[int]":
    """Segment ids of ``b`` images grouped like NIH patients (1, 1, 2, 4, ...; capped at 4)."""
    seg, u = [], 0
    while len(seg) < b:
        k = int(min(4, rng.choice([1, 1, 1, 2, 2, 3, 4, 6, 10])))
        seg += [u] * k
        u += 1
    return seg[:b]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="default", help="experiment config (model and batch size)")
    ap.add_argument("--batch", type=int, default=0, help="default: federated.batch_size of the config")
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from bfdl_tff.config import load_config, resolve_experiment_config
    from bfdl_tff.federated import model_bridge
    from bfdl_tff.models import clipping, registry

    cfg = load_config(resolve_experiment_config(args.config))
    mcfg = registry.load_model_config(cfg.model.config, **cfg.model.overrides)
    bundle = model_bridge.build_bundle(mcfg)
    b = args.batch or cfg.federated.batch_size
    rng = np.random.default_rng(0)
    s = mcfg.input_size
    x = tf.constant(rng.random((b, s, s, mcfg.channels)).astype(np.float32))
    y = tf.constant((rng.random((b, mcfg.num_findings)) < 0.1).astype(np.float32))
    model = bundle.keras(seed=0)
    vars_ = model.trainable_variables
    opt = tf.keras.optimizers.SGD(0.05)
    image_seg = tf.range(b, dtype=tf.int32)
    pseg = _patient_segments(b, rng)
    patient_seg, n_pat = tf.constant(pseg, tf.int32), tf.constant(max(pseg) + 1, tf.int32)

    @tf.function
    def plain():
        with tf.GradientTape() as tape:
            loss = bundle.per_example_loss(y, model(x, training=True)) / b
        opt.apply_gradients(zip(tape.gradient(loss, vars_), vars_))

    def fast(seg, n_seg):
        @tf.function
        def step():
            g, _, _ = clipping.clipped_gradient_sum(model, x, y, bundle.per_example_loss, segment_ids=seg,
                                                    num_segments=n_seg, l2_clip=1.0)
            noisy = [(t + tf.random.normal(tf.shape(t), stddev=1.0)) / b for t in g]
            opt.apply_gradients(zip(noisy, vars_))

        return step

    @tf.function
    def naive():
        def per_example(ex):
            xi, yi = ex
            with tf.GradientTape() as tape:
                lo = bundle.per_example_loss(yi[None], model(xi[None], training=False))
            g = tape.gradient(lo, vars_)
            norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(t)) for t in g]))
            return [t * tf.minimum(1.0, 1.0 / tf.maximum(norm, 1e-12)) for t in g]

        gs = tf.vectorized_map(per_example, (x, y))
        opt.apply_gradients(zip([(tf.reduce_sum(t, 0) + tf.random.normal(tf.shape(t)[1:])) / b for t in gs], vars_))

    fns = {"plain": plain, "fast_image": fast(image_seg, b), "fast_patient": fast(patient_seg, n_pat), "naive_vmap": naive}
    times = _interleaved(fns, args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = {k: statistics.median([t / p for t, p in zip(v, times["plain"])]) for k, v in times.items() if k != "plain"}
    out = {
        "config": str(resolve_experiment_config(args.config)), "model": mcfg.name, "input_size": s, "batch": b,
        "parameters": int(sum(int(np.prod(v.shape)) for v in vars_)), "patients_in_batch": int(n_pat),
        "fast_clipping_supported": clipping.supports_fast_clipping(model), "cpu_count": os.cpu_count(),
        "step_s_median": {k: round(v, 5) for k, v in med.items()},
        "step_s_min": {k: round(min(v), 5) for k, v in times.items()},
        "images_per_s": {k: round(b / v) for k, v in med.items()},
        "ratio_vs_plain_median_of_pairs": {k: round(v, 3) for k, v in ratio.items()},
        "ratio_vs_plain_of_minima": {k: round(min(v) / min(times["plain"]), 3) for k, v in times.items() if k != "plain"},
        "target": "fast_* <= 1.5x plain",
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
