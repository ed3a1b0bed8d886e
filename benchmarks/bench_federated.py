"""Benchmarks of the federated core at the default profile's size (prints numbers; no asserts).

1. Round wall time of the ``federated`` arm (TFF weighted FedAvg, one TFF computation per hospital
   + the aggregation, as the runner does; and TFF's composed ``process.next``) versus plain Keras
   training of the same model on the same examples (each hospital's local epoch, one after the
   other, ``model.fit`` with the same optimizer and batch). Target (issue 14): TFF <= 1.25x Keras.
2. The ``bfdl`` arm's DP-SGD round (patient-level Poisson sampling, fast clipping, per-hospital
   noise) versus the FedAvg round; secure sum in the test context versus the plain mean.
3. Images per second per arm: centralized (Keras fit on the pooled images), federated (TFF round),
   bfdl (TFF DP-SGD round, images actually sampled).

Rounds of the variants are interleaved (the machine is shared; every variant sees the same load).
The data are random images of the default profile's size (``--per-hospital`` images per hospital,
NIH-like images-per-patient groups), so learning is not measured here.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_federated.py [--config default] [--rounds 4] > out.txt
(redirect output to a file: TFF's worker process keeps pipes open).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _hospitals(sizes, *, size: int, seed: int):
    """Random images with NIH-like patients (1 image: 60 %, up to 10) per hospital."""
    import numpy as np

    from bfdl_tff.data.loader import ImageSet

    rng = np.random.default_rng(seed)
    out, pid0 = [], 0
    for n in sizes:
        per = rng.choice([1, 1, 1, 1, 1, 1, 2, 2, 3, 4, 6, 10], size=n)
        pid = np.repeat(np.arange(pid0, pid0 + n), per)[:n]
        pid0 += n
        x = rng.random((n, size, size, 1)).astype(np.float32)
        y = (rng.random((n, 14)) < 0.1).astype(np.float32)
        out.append(ImageSet(images=[f"{i:08d}_000.png" for i in range(n)], patient_ids=pid, x=x, y=y))
    return out


def _build(cfg, bundle):
    from bfdl_tff.federated import processes

    client_opt, server_opt = processes.arm_optimizers(cfg)
    fedavg = processes.build_fedavg(bundle.model_fn, client_optimizer=client_opt, server_optimizer=server_opt)
    fedavg_sec = processes.build_fedavg(bundle.model_fn, client_optimizer=client_opt, server_optimizer=server_opt,
                                        secure_sum=True)
    dp_cfg = dataclasses.replace(cfg, arm="bfdl")
    dp_client, dp_server = processes.arm_optimizers(dp_cfg)
    dpsgd = processes.build_dp_sgd_fedavg(
        bundle.model_fn, per_example_loss=bundle.per_example_loss, batch_spec=bundle.batch_spec,
        client_optimizer=dp_client, server_optimizer=dp_server, noise_multiplier=1.0, l2_clip=cfg.privacy.l2_clip,
        batch_size=cfg.federated.batch_size, secure_sum=False, keras_model_fn=bundle.keras,
    )
    return fedavg, fedavg_sec, dpsgd


def _time_native(fedavg, dpsgd, mw, keras_model, names, batches, dp_steps, rounds):
    """Interleaved rounds: Keras fit, TFF per-hospital round, TFF process.next, TFF DP-SGD round."""
    from bfdl_tff import tff_runtime
    from bfdl_tff.federated import processes

    times: dict[str, list[float]] = {k: [] for k in ("keras", "tff_per_hospital", "tff_composed", "tff_dp_sgd")}
    dp_images: list[int] = []
    with tff_runtime.execution_context("native"):
        trainers = {k: processes.FederatedTrainer(a) for k, a in (("fed", fedavg), ("dp", dpsgd))}
        states = {k: tr.initialize(mw) for k, tr in trainers.items()}
        for r in range(rounds + 1):
            data, dpd = batches(r), dp_steps(r)
            t0 = time.perf_counter()
            for n in names:
                keras_model.fit(data[n], epochs=1, verbose=0)
            times["keras"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            states["fed"] = trainers["fed"].run_round(states["fed"], data).state
            times["tff_per_hospital"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            states["fed"] = trainers["fed"].algorithm.process.next(states["fed"], list(data.values())).state
            times["tff_composed"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            out = trainers["dp"].run_round(states["dp"], dpd)
            times["tff_dp_sgd"].append(time.perf_counter() - t0)
            states["dp"] = out.state
            dp_images.append(int(sum(c.metrics.get("train/num_examples", 0) for c in out.clients.values())))
    return times, dp_images


def _time_secure(fedavg, fedavg_sec, mw, batches, rounds):
    """Interleaved rounds in TFF's test context: plain weighted mean vs secure sum."""
    from bfdl_tff import tff_runtime
    from bfdl_tff.federated import processes

    sec: dict[str, list[float]] = {"plain_mean": [], "secure_sum": []}
    with tff_runtime.execution_context("test"):
        trs = {"plain_mean": processes.FederatedTrainer(fedavg), "secure_sum": processes.FederatedTrainer(fedavg_sec)}
        sts = {k: tr.initialize(mw) for k, tr in trs.items()}
        for r in range(rounds + 1):
            data = batches(r)
            for k, tr in trs.items():
                t0 = time.perf_counter()
                sts[k] = tr.run_round(sts[k], data).state
                sec[k].append(time.perf_counter() - t0)
    return sec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="default")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--per-hospital", type=int, default=0, help="default: the profile's mean training images per hospital")
    args = ap.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from bfdl_tff.config import load_config, resolve_experiment_config
    from bfdl_tff.data.loader import make_dataset
    from bfdl_tff.federated import dp_sgd, model_bridge, processes
    from bfdl_tff.models import losses, registry

    cfg = load_config(resolve_experiment_config(args.config))
    f = cfg.federated
    d = cfg.data
    per = args.per_hospital or int(d.synth_images * (1 - d.test_fraction) * (1 - d.val_fraction) / d.hospitals)
    mcfg = registry.load_model_config(cfg.model.config, **cfg.model.overrides)
    bundle = model_bridge.build_bundle(mcfg)
    sets = _hospitals([per] * d.hospitals, size=mcfg.input_size, seed=0)
    names = [f"hospital_{chr(97 + k)}" for k in range(d.hospitals)]
    results: dict = {"config": str(resolve_experiment_config(args.config)), "model": mcfg.name, "per_hospital": per,
                     "hospitals": d.hospitals, "batch": f.batch_size, "cpu_count": os.cpu_count()}
    t = time.perf_counter()
    fedavg, fedavg_sec, dpsgd = _build(cfg, bundle)
    results["build_s_3_processes"] = round(time.perf_counter() - t, 1)
    init = bundle.keras(seed=0)
    mw = processes.KerasOrder(init).from_keras(init.get_weights())
    keras_model = bundle.keras()
    loss, _ = losses.build_loss(mcfg)
    keras_opt = model_bridge.keras_optimizer(f.client_optimizer, learning_rate=f.client_lr, momentum=f.client_momentum)
    keras_model.compile(optimizer=keras_opt, loss=loss)

    def batches(r):
        return {n: make_dataset(s, batch_size=f.batch_size, shuffle_seed=r) for n, s in zip(names, sets)}

    def dp_steps(r):
        return {n: dp_sgd.round_dataset(s, batch_size=f.batch_size, local_epochs=1, rng=np.random.default_rng(r),
                                        noise_multiplier=1.0, unit=cfg.privacy.unit,
                                        max_images_per_patient=cfg.privacy.max_images_per_patient)
                for n, s in zip(names, sets)}

    times, dp_images = _time_native(fedavg, dpsgd, mw, keras_model, names, batches, dp_steps, args.rounds)
    sec = _time_secure(fedavg, fedavg_sec, mw, batches, args.rounds)
    images = per * d.hospitals
    med = {k: statistics.median(v[1:]) for k, v in {**times, **{f"test_context_{k}": v for k, v in sec.items()}}.items()}
    ratio = lambda a, b: statistics.median([x / y for x, y in zip(times[a][1:], times[b][1:])])  # noqa: E731
    results["round_s_median"] = {k: round(v, 3) for k, v in med.items()}
    results["ratios_median_of_rounds"] = {
        "tff_per_hospital_vs_keras": round(ratio("tff_per_hospital", "keras"), 3),
        "tff_composed_vs_keras": round(ratio("tff_composed", "keras"), 3),
        "dp_sgd_round_vs_fedavg_round": round(ratio("tff_dp_sgd", "tff_per_hospital"), 3),
        "secure_sum_vs_plain_mean_test_context": round(med["test_context_secure_sum"] / med["test_context_plain_mean"], 3),
    }
    results["images_per_s"] = {
        "centralized_keras_fit": round(images / med["keras"]),
        "federated_tff_round": round(images / med["tff_per_hospital"]),
        "bfdl_tff_dp_sgd_round": round(statistics.median(dp_images[1:]) / med["tff_dp_sgd"]),
    }
    results["targets"] = "tff_per_hospital_vs_keras <= 1.25 (issue 14)"
    print(json.dumps(results, indent=2))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
