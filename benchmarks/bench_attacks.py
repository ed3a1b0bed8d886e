"""Privacy attacks: measured rates, intervals and runtimes (prints numbers; no asserts). Issue 16.6.

Parts:

* ``toy``: the inversion sweep on the tiny in-memory model (16 px toy images, 3.6k parameters,
  SGD clients): plain_update / secure_sum / dp_update at batch sizes {1, 4} and local steps
  {1, 4}, ``--images`` targets per setting (the positive control: the attack works where the
  model is invertible), plus loss-threshold / LiRA (32 shadows, and its estimate with the first
  2, 4, ... shadows) on an overfit and a non-member-trained MLP.
* ``engines``: seconds per image-iteration of the batched inversion (``chain``, ``loop``,
  ``vmap`` engines of ``bfdl_tff.privacy_eval.problem_grads``) against one problem at a time,
  on the registry model ``--model`` (default ``small_cnn`` at 32 px).
* ``stage``: the reproduction's attacks stage loop (``bfdl_tff.reproduce.stages.stage_attacks``:
  every arm's run ``RUNS/arms/<arm>-s<seed>``, inversion then membership) with a profile's
  ``attacks`` options, timed per attack (wall and CPU seconds).
* ``shadows``: LiRA on ``--run`` with ``--shadows`` shadows (audited-size training sets), the
  TPR estimate at 0.1 % / 1 % FPR and AUC against the number of shadows used.

    .venv/bin/python benchmarks/bench_attacks.py --part toy > /tmp/bench_attacks.log 2>&1
    .venv/bin/python benchmarks/bench_attacks.py --part stage --runs RUNS --profile default > /tmp/b.log 2>&1
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from a checkout


def _print_rows(rows: list) -> None:
    print("target        B  steps round  success     rate   [95% Wilson]      SSIM   PSNR  labels  s/setting")
    for r in rows:
        print(f"{r.target:13s} {r.batch_size:<2d} {r.local_steps:<5d} {r.round:6s} {r.successes:3d}/{r.n_targets:<4d}  "
              f"{r.success_rate:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]  {r.mean_ssim:.3f}  {r.mean_psnr:5.1f}  "
              f"{r.label_recovery_rate:.2f}  {r.seconds:6.1f}", flush=True)


def part_toy(images: int) -> None:
    from bfdl_tff.privacy_eval import inversion_sweep as S
    from bfdl_tff.privacy_eval import membership as MI
    from bfdl_tff.privacy_eval import toy
    from bfdl_tff.privacy_eval.inversion import AttackConfig
    from bfdl_tff.privacy_eval.observation import ClientSetting, DPSetting

    size = 16
    gal = [toy.toy_images(130, size, seed=10 + k) for k in range(3)]
    model = toy.tiny_model(size, seed=0)
    settings = [S.Setting(t, b, s, "final") for t in ("plain_update", "secure_sum", "dp_update")
                for b in (1, 4) for s in (1, 4)]
    t0 = time.perf_counter()
    rows, _ = S.run_settings({"final": (model, 1)}, gal, settings, n_images=images,
                             client=ClientSetting(lr=0.05), dp=DPSetting("sample", 1.0, 1.0),
                             cfg=AttackConfig(iterations=200, restarts=2), seed=0)
    print(f"toy inversion sweep: {time.perf_counter() - t0:.1f}s ({model.count_params()} params, {size} px, "
          f">= {images} images per setting, 200 iterations, 2 restarts)")
    _print_rows(rows)
    x, _ = toy.toy_images(240, size, seed=5)
    y = (np.random.default_rng(0).uniform(size=(240, 14)) < 0.3).astype(np.float32)
    mem, non, other = (x[:80], y[:80]), (x[80:160], y[80:160]), (x[160:], y[160:])
    recipe = MI.ShadowRecipe(epochs=60, batch_size=16, lr=0.01, optimizer="adam")
    build = lambda: toy.mlp_model(size, hidden=64)  # noqa: E731
    for name, train in (("overfit (members = training set)", mem), ("random split (trained on neither)", other)):
        t0 = time.perf_counter()
        target = MI.train_keras(build, *train, recipe=recipe, seed=1)
        lt = MI.loss_threshold_attack(target, mem, non)
        li = MI.lira_attack(target, build, mem, non, n_shadows=32, recipe=recipe, seed=0)
        print(f"membership, {name}: loss AUC {lt['auc']:.3f} TPR@1%FPR {lt['tpr_at_fpr_0.01']:.3f} "
              f"[{lt['tpr_ci_low_at_fpr_0.01']:.3f}, {lt['tpr_ci_high_at_fpr_0.01']:.3f}] | LiRA(32) AUC {li['auc']:.3f} "
              f"TPR@1%FPR {li['tpr_at_fpr_0.01']:.3f} [{li['tpr_ci_low_at_fpr_0.01']:.3f}, "
              f"{li['tpr_ci_high_at_fpr_0.01']:.3f}] ({time.perf_counter() - t0:.1f}s)")
        print("  LiRA vs shadows: " + "; ".join(f"{st['n_shadows']}: AUC {st['auc']:.3f} TPR@1%FPR "
                                                f"{st['tpr_at_fpr_0.01']:.3f}" for st in li["stability"]))


def part_engines(model_name: str, size: int, images: int, iterations: int) -> None:
    from bfdl_tff.models import registry
    from bfdl_tff.privacy_eval import toy
    from bfdl_tff.privacy_eval.inversion import AttackConfig, invert, invert_batch
    from bfdl_tff.privacy_eval.observation import ClientSetting, local_updates

    model = registry.build_model(registry.load_model_config(model_name, input_size=size), seed=0)
    x, y = toy.toy_images(images, size, seed=1)
    for n in (1, 16):
        p = images // n
        xs, ys = x[: p * n].reshape(p, n, size, size, 1), y[: p * n].reshape(p, n, 14)
        upd = local_updates(model, xs, ys, client=ClientSetting(n, 1, 0.05))
        for engine in (("chain", "vmap") if n == 1 else ("chain", "loop")):
            cfg = AttackConfig(iterations=iterations, restarts=1, engine=engine)
            invert_batch(model, upd, ys, cfg=AttackConfig(iterations=2, restarts=1, engine=engine))  # trace
            t0, c0 = time.perf_counter(), time.process_time()
            invert_batch(model, upd, ys, cfg=cfg)
            w, c = time.perf_counter() - t0, time.process_time() - c0
            print(f"{model_name} {size}px: {p} problems x {n} images, engine {engine}: {w:.1f}s wall, {c:.1f}s cpu = "
                  f"{1e3 * c / (p * n * iterations):.2f} ms cpu per image-iteration", flush=True)
        k = max(1, min(p, 5))
        invert(model, upd[0], ys[0], cfg=AttackConfig(iterations=2, restarts=1))  # trace
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(k):
            invert(model, upd[i], ys[i], cfg=AttackConfig(iterations=iterations, restarts=1, seed=i))
        c = time.process_time() - c0
        print(f"{model_name} {size}px: one problem at a time ({k} of {n} images): "
              f"{1e3 * c / (k * n * iterations):.2f} ms cpu per image-iteration", flush=True)


def part_stage(runs: str, profile: str) -> None:
    from bfdl_tff.config import ARMS
    from bfdl_tff.errors import BfdlError
    from bfdl_tff.privacy_eval import run_attacks as RA
    from bfdl_tff.reproduce.profiles import load_profile

    opts = load_profile(profile).attacks
    t0, c0 = time.perf_counter(), time.process_time()
    for seed in opts.seeds:
        for arm in ARMS:
            path = Path(runs) / "arms" / f"{arm}-s{seed}"
            if not path.is_dir():
                continue
            for attack, fn, o in (("inversion", RA.inversion_on_run, opts.inversion),
                                  ("membership", RA.membership_on_run, opts.membership)):
                t1, c1 = time.perf_counter(), time.process_time()
                try:
                    fn(path, o, seed=seed, progress=lambda m: print(f"    {m}", flush=True))
                    status = "ok"
                except BfdlError as e:
                    status = f"error: {e}"
                print(f"{arm}-s{seed} {attack}: {time.perf_counter() - t1:.1f}s wall, {time.process_time() - c1:.1f}s "
                      f"cpu ({status})", flush=True)
    print(f"attacks stage ({profile}): {time.perf_counter() - t0:.1f}s wall, {time.process_time() - c0:.1f}s cpu")


def part_shadows(run: str, shadows: int, per_class: int) -> None:
    from bfdl_tff.privacy_eval.options import MembershipOptions
    from bfdl_tff.privacy_eval.run_attacks import membership_on_run

    t0 = time.perf_counter()
    res = membership_on_run(run, MembershipOptions(n_shadows=shadows, max_per_class=per_class,
                                                   shadow_data="audited"), seed=0)
    print(f"LiRA on {run}: {res['n_members']} members, {res['n_nonmembers']} non-members, {shadows} shadows, "
          f"{time.perf_counter() - t0:.1f}s")
    print("shadows  AUC     TPR@0.1%FPR [95% CP]         TPR@1%FPR [95% CP]")
    for s in res["lira"]["stability"]:
        print(f"{s['n_shadows']:<7d}  {s['auc']:.4f}  {s['tpr_at_fpr_0.001']:.4f} [{s['tpr_ci_low_at_fpr_0.001']:.4f}, "
              f"{s['tpr_ci_high_at_fpr_0.001']:.4f}]  {s['tpr_at_fpr_0.01']:.4f} [{s['tpr_ci_low_at_fpr_0.01']:.4f}, "
              f"{s['tpr_ci_high_at_fpr_0.01']:.4f}]")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=("toy", "engines", "stage", "shadows"), default="toy")
    ap.add_argument("--images", type=int, default=100, help="toy/engines: target images per setting")
    ap.add_argument("--iterations", type=int, default=20, help="engines: iterations timed")
    ap.add_argument("--model", default="small_cnn", help="engines: registry model")
    ap.add_argument("--size", type=int, default=32, help="engines: image size")
    ap.add_argument("--runs", default=None, help="stage: runs root (with arms/<arm>-s<seed>)")
    ap.add_argument("--profile", default="default", help="stage: reproduction profile")
    ap.add_argument("--run", default=None, help="shadows: run directory")
    ap.add_argument("--shadows", type=int, default=64)
    ap.add_argument("--per-class", type=int, default=1000)
    a = ap.parse_args()
    if a.part == "toy":
        part_toy(a.images)
    elif a.part == "engines":
        part_engines(a.model, a.size, a.images, a.iterations)
    elif a.part == "stage":
        if not a.runs:
            ap.error("--part stage needs --runs")
        part_stage(a.runs, a.profile)
    else:
        if not a.run:
            ap.error("--part shadows needs --run")
        part_shadows(a.run, a.shadows, a.per_class)


if __name__ == "__main__":
    main()
