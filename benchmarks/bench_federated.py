"""Benchmarks of the federated core (prints numbers; no asserts).

1. Per-round wall time of the ``federated`` arm (TFF weighted FedAvg, one TFF computation per
   hospital + the aggregation, as the runner does; and TFF's composed ``process.next``) versus
   plain Keras training of the same model on the same examples (each hospital's local epoch run
   one after the other with ``model.fit``). Target: TFF <= 1.25x Keras.
2. DP-SGD step time (vectorised per-example gradients + clipping + noise) versus a non-private
   step of the same model and batch, in plain TensorFlow; and a DP-SGD TFF round versus a FedAvg
   round. Target: <= 2.5x.
3. Secure-sum overhead per round: FedAvg with ``SecureSumFactory`` (test context) versus the plain
   weighted mean, in the same (test) context and in the native context.

Usage: ``.venv/bin/python benchmarks/bench_federated.py [--rounds 5] [--per-hospital 160] [--size 64]``
(redirect output to a file: TFF's worker process keeps pipes open).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _med(xs):
    return statistics.median(xs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--per-hospital", type=int, default=160)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--model", default="small_cnn")
    args = ap.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from bfdl_tff import tff_runtime
    from bfdl_tff.federated import dp_sgd, model_bridge, processes, testing
    from bfdl_tff.models import registry

    results: dict = {"setting": vars(args), "cpu_count": os.cpu_count()}
    mcfg = registry.load_model_config(args.model, input_size=args.size)
    bundle = model_bridge.build_bundle(mcfg)
    fed = testing.toy_federation((args.per_hospital,) * 3, size=args.size, seed=0)
    B = args.batch
    opt = lambda lr: processes.make_optimizer("sgd", learning_rate=lr)  # noqa: E731

    t = time.perf_counter()
    fedavg = processes.build_fedavg(bundle.model_fn, client_optimizer=opt(0.05), server_optimizer=opt(1.0))
    fedavg_sec = processes.build_fedavg(bundle.model_fn, client_optimizer=opt(0.05), server_optimizer=opt(1.0), secure_sum=True)
    dpsgd = processes.build_dp_sgd_fedavg(
        bundle.model_fn, per_example_loss=bundle.per_example_loss, batch_spec=bundle.batch_spec,
        client_optimizer=opt(0.05), server_optimizer=opt(1.0), noise_multiplier=1.0, l2_clip=1.0, batch_size=B, secure_sum=False,
    )
    results["build_s_4_processes"] = time.perf_counter() - t
    init = bundle.keras(seed=0)
    mw = processes.KerasOrder(init).from_keras(init.get_weights())

    def datasets(r):
        return {n: tf.data.Dataset.from_tensor_slices((fed.train[n].x, fed.train[n].y)).shuffle(args.per_hospital, seed=r).batch(B) for n in fed.names}

    def dp_datasets(r):
        return {n: dp_sgd.poisson_dp_sgd_dataset(fed.train[n].x, fed.train[n].y, batch_size=B, local_epochs=1, rng=np.random.default_rng(r)) for n in fed.names}

    def time_rounds(trainer, make, *, composed=False):
        state = trainer.initialize(mw)
        times = []
        for r in range(args.rounds + 1):
            data = make(r)
            t0 = time.perf_counter()
            if composed:
                state = trainer.algorithm.process.next(state, list(data.values())).state
            else:
                state = trainer.run_round(state, data).state
            times.append(time.perf_counter() - t0)
        return times[1:]  # first round includes one-off tracing

    with tff_runtime.execution_context("native"):
        tr = processes.FederatedTrainer(fedavg)
        fed_split = time_rounds(tr, datasets)
        fed_comp = time_rounds(tr, datasets, composed=True)
        dp_round = time_rounds(processes.FederatedTrainer(dpsgd), dp_datasets)
    with tff_runtime.execution_context("test"):
        fed_test_plain = time_rounds(processes.FederatedTrainer(fedavg), datasets)
        fed_test_secure = time_rounds(processes.FederatedTrainer(fedavg_sec), datasets)

    # Plain Keras on the same examples: each hospital's local epoch, one after another.
    model = bundle.keras()
    model.set_weights(init.get_weights())
    loss, _ = __import__("bfdl_tff.models.losses", fromlist=["build_loss"]).build_loss(mcfg)
    model.compile(optimizer=tf.keras.optimizers.SGD(0.05), loss=loss)
    keras_times = []
    for r in range(args.rounds + 1):
        data = datasets(r)
        t0 = time.perf_counter()
        for n in fed.names:
            model.fit(data[n], epochs=1, verbose=0)
        keras_times.append(time.perf_counter() - t0)
    keras_times = keras_times[1:]

    results["round_s"] = {
        "keras_same_examples": _med(keras_times),
        "tff_fedavg_per_hospital_computations": _med(fed_split),
        "tff_fedavg_composed_process_next": _med(fed_comp),
        "tff_dp_sgd_round": _med(dp_round),
        "tff_fedavg_test_context_plain_mean": _med(fed_test_plain),
        "tff_fedavg_test_context_secure_sum": _med(fed_test_secure),
    }
    results["ratios"] = {
        "tff_per_hospital_vs_keras": _med(fed_split) / _med(keras_times),
        "tff_composed_vs_keras": _med(fed_comp) / _med(keras_times),
        "dp_sgd_round_vs_fedavg_round": _med(dp_round) / _med(fed_split),
        "secure_sum_overhead_s_per_round": _med(fed_test_secure) - _med(fed_test_plain),
        "secure_sum_vs_plain_same_context": _med(fed_test_secure) / _med(fed_test_plain),
    }

    # DP-SGD step vs non-private step, plain TF (same model, batch, data).
    m = bundle.keras()
    x = tf.constant(fed.train[fed.names[0]].x[:B])
    y = tf.constant(fed.train[fed.names[0]].y[:B])
    vars_ = m.trainable_variables
    bce = tf.keras.losses.BinaryCrossentropy()
    sgd = tf.keras.optimizers.SGD(0.05)

    @tf.function
    def plain_step():
        with tf.GradientTape() as tape:
            lo = bce(y, m(x, training=True))
        sgd.apply_gradients(zip(tape.gradient(lo, vars_), vars_))

    @tf.function
    def dp_step():
        def per_example(ex):
            xi, yi = ex
            with tf.GradientTape() as tape:
                lo = bundle.per_example_loss(yi[None], m(xi[None], training=False))
            g = tape.gradient(lo, vars_)
            norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(t)) for t in g]))
            f = tf.minimum(1.0, 1.0 / tf.maximum(norm, 1e-12))
            return [t * f for t in g]

        gs = tf.vectorized_map(per_example, (x, y))
        noisy = [(tf.reduce_sum(g, 0) + tf.random.normal(tf.shape(g)[1:], stddev=1.0)) / B for g in gs]
        sgd.apply_gradients(zip(noisy, vars_))

    def bench(fn, n=30):
        fn()
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return _med(ts)

    sp, sd = bench(plain_step), bench(dp_step)
    results["step_s"] = {"keras_plain_step": sp, "dp_sgd_vectorized_step": sd, "ratio": sd / sp, "batch": B}
    print(json.dumps(results, indent=2))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
