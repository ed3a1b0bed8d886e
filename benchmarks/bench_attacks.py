"""Privacy attacks: measured rates and runtimes (prints numbers; no asserts).

Part 1 (``--part toy``): the inversion sweep on the tiny in-memory model (16 px toy images,
3.6k parameters) for plain_update / secure_sum / dp_update at batch sizes and local steps
{1, 4}, plus loss-threshold / LiRA on an overfit and a non-member-trained MLP.

Part 2 (``--part run``): the *default* ``bfdl attack inversion`` and ``bfdl attack membership``
settings on a run directory (``--run RUN_DIR``; without it, a synthetic 64 px run directory with
a randomly initialised ``small_cnn`` is built in a temporary directory -- runtime only, not a
result).

    .venv/bin/python benchmarks/bench_attacks.py --part toy > /tmp/bench_attacks.log 2>&1
    .venv/bin/python benchmarks/bench_attacks.py --part run [--run RUN_DIR] > /tmp/b.log 2>&1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from a checkout


def part_toy(n_updates: int) -> None:
    from bfdl_tff.privacy_eval import membership as MI
    from bfdl_tff.privacy_eval import toy
    from bfdl_tff.privacy_eval.inversion import AttackConfig
    from bfdl_tff.privacy_eval.inversion_sweep import run_sweep
    from bfdl_tff.privacy_eval.observation import DPSetting

    size = 16
    gal = [toy.toy_images(110, size, seed=10 + k) for k in range(3)]
    model = toy.tiny_model(size, seed=0)
    cfg = AttackConfig(iterations=200, restarts=2)
    t0 = time.perf_counter()
    rows, _ = run_sweep(
        model, gal, batch_sizes=(1, 4), local_steps=(1, 4), n_updates=n_updates, client_lr=0.05,
        dp=DPSetting("sample", 1.0, 1.0), cfg=cfg, seed=0, progress=lambda m: print("  " + m, flush=True),
    )
    print(f"toy inversion sweep: {time.perf_counter() - t0:.1f}s ({model.count_params()} params, {size} px)")
    print("target        B  steps  success       rate   [95% CI]         SSIM   PSNR  labels")
    for r in rows:
        print(f"{r.target:13s} {r.batch_size:<2d} {r.local_steps:<5d}  {r.successes:3d}/{r.n_targets:<4d}  "
              f"{r.success_rate:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]  {r.mean_ssim:.3f}  {r.mean_psnr:5.1f}  "
              f"{r.label_recovery_rate:.2f}")

    x, _ = toy.toy_images(240, size, seed=5)
    y = (np.random.default_rng(0).uniform(size=(240, 14)) < 0.3).astype(np.float32)
    mem, non, other = (x[:80], y[:80]), (x[80:160], y[80:160]), (x[160:], y[160:])
    recipe = MI.ShadowRecipe(epochs=60, batch_size=16, lr=0.01, optimizer="adam")
    build = lambda: toy.mlp_model(size, hidden=64)  # noqa: E731
    for name, train in (("overfit (members = training set)", mem), ("random split (trained on neither)", other)):
        t0 = time.perf_counter()
        target = MI.train_keras(build, *train, recipe=recipe, seed=1)
        lt = MI.loss_threshold_attack(target, mem, non)
        li = MI.lira_attack(target, build, mem, non, n_shadows=4, recipe=recipe, seed=0)
        print(f"membership, {name}: loss AUC {lt['auc']:.3f} adv {lt['advantage']:.3f} "
              f"TPR@1%FPR {lt['tpr_at_fpr_0.01']:.3f} | LiRA(4) AUC {li['auc']:.3f} adv {li['advantage']:.3f} "
              f"TPR@1%FPR {li['tpr_at_fpr_0.01']:.3f} ({time.perf_counter() - t0:.1f}s)")


def build_synthetic_run(base: Path, size: int = 64, n_images: int = 650) -> Path:
    from bfdl_tff.config import ExperimentConfig, from_dict
    from bfdl_tff.data import loader, manifest, partition, synth
    from bfdl_tff.federated.accounting import schedule_for_config
    from bfdl_tff.privacy_eval.run_attacks import model_builder
    from bfdl_tff.runs import RunDir

    synth.synthesize(base / "data", n_images=n_images, size=size, seed=0)
    parts = partition.partition(loader.read_metadata(base / "data"), hospitals=3, scheme="iid", seed=0)
    partition.write_partition(base / "manifests", parts)
    cfg = from_dict(ExperimentConfig, {
        "name": "bench", "arm": "bfdl",
        "data": {"root": str(base / "data"), "image_size": size, "manifests": str(base / "manifests")},
        "model": {"config": "small_cnn"}, "federated": {"rounds": 10, "batch_size": 16},
        "privacy": {"mode": "sample", "noise_multiplier": 1.1},
    })
    run = RunDir.create(base / "run", cfg)
    run.save_model(model_builder(cfg)().get_weights())
    run.write_data_record(root=base / "data", manifest_dir=base / "manifests", synthetic=True)
    mdir = base / "manifests"
    counts = {n: int((manifest.read_manifest(manifest.manifest_path(mdir, n))["split"] == "train").sum())
              for n in manifest.hospital_names(mdir)}
    run.write_privacy(schedule_for_config(cfg, counts, source=str(run.config_file)).to_record())
    return run.path


def part_run(run_dir: str | None) -> None:
    from bfdl_tff import cli

    tmp = None
    if run_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_attacks_")
        t0 = time.perf_counter()
        run_dir = str(build_synthetic_run(Path(tmp.name)))
        print(f"synthetic 64 px run dir (random-init small_cnn, runtime only) built in {time.perf_counter() - t0:.1f}s")
    for argv in (["attack", "inversion", "--run", run_dir], ["attack", "membership", "--run", run_dir]):
        t0 = time.perf_counter()
        rc = cli.main(argv)
        print(f"bfdl {' '.join(argv[:2])} (defaults): rc={rc} {time.perf_counter() - t0:.1f}s", flush=True)
    from bfdl_tff.privacy_eval.run_attacks import result_file
    from bfdl_tff.runs import RunDir

    inv = json.loads(result_file(RunDir.open(run_dir), "inversion").read_text())
    print("inversion setting seconds:", round(inv["setting"].get("seconds", 0.0), 1))
    if tmp is not None:
        tmp.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=("toy", "run", "all"), default="all")
    ap.add_argument("--run", default=None)
    ap.add_argument("--updates", type=int, default=6, help="toy part: attacked updates per setting")
    a = ap.parse_args()
    if a.part in ("toy", "all"):
        part_toy(a.updates)
    if a.part in ("run", "all"):
        part_run(a.run)


if __name__ == "__main__":
    main()
