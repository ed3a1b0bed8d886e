"""One-command reproduction of the paper's results (issue 9): ``scripts/reproduce_all.sh``.

Stages, in order (each writes under the runs root and ``results/``; layout in
:mod:`paper_figures.results` and ``docs/reproduction.md``):

=================  =========================================================================
``data``           prepare the dataset (synthetic NIH layout, or check the NIH root) once
``arms``           centralized / federated / B-FDL × seeds (Table 3.3, Fig. 2, 5; C1-C5)
``ledger_off``     B-FDL with the ledger hook disabled (Fig. 5 with/without ledger; C4)
``client_dp``      B-FDL with client-level DP at epsilon = 1 (CLAIMS note 2)
``attacks``        gradient inversion + membership inference on the arms' runs (Fig. 3; C3)
``ledger_bench``   ``ledger.bench.run_bench`` = ``bfdl ledger bench --json`` (C4, C6)
``scalability``    B-FDL with K = 3..10 hospitals (Fig. 4; C10)
``audit``          ``bfdl audit verify`` on every B-FDL ledger (``audit/verify.json``; C7)
``privacy_budget`` noise multiplier needed for epsilon = 1 at client and sample level (C9)
``figures``        ``bfdl figures`` (Table 3.3, Fig. 2-5, ledger / communication / privacy tables)
``report``         ``bfdl report`` -> ``results/REPORT.md``
=================  =========================================================================

Every stage runs in its own Python process (``python -m bfdl_tff.reproduce --worker STAGE``)
whose stdout/stderr go to ``<runs>/logs/<stage>.log`` (never a pipe: TFF's worker_binary would
hold it open); the orchestrator prints the worker's ``[progress]`` lines and records status,
runtime, config and outputs in ``results/stages.json``. A stage whose status is ``done`` with the
same config (hash) and whose outputs exist is skipped unless ``--force``; inside a stage, a run
directory whose ``summary.json`` exists for the same config is skipped, an unfinished one is
resumed. ``figures`` and ``report`` are pure functions of the result files and always rerun.

Stages call the other areas' real entry points, imported lazily:
``bfdl_tff.data.prepare.prepare_data``, ``bfdl_tff.federated.runner.run_experiment`` with
``bfdl_tff.integration.hook.attach_hooks`` (the ledger hook for the ``bfdl`` arm with the ledger
on), ``bfdl_tff.privacy_eval.run_attacks`` (``inversion_on_run``, ``membership_on_run``),
``bfdl_tff.integration.audit.verify_run``, ``ledger.bench.run_bench`` and
``bfdl_tff.federated.accounting``. A stage whose producer is not
available fails with :class:`ProducerMissing` naming it; nothing is fabricated.

Profiles: ``quick`` (CI-sized), ``default`` (synthetic data, small CNN, >= 3 seeds, about 20
minutes on 2 cores), ``paper`` (``--data-root`` NIH ChestX-ray14, ResNet-50 + U-Net at 224 px, a
GPU job; see :data:`PROFILES` for the expected runtime).
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import hashlib
import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bfdl_tff.config import ARMS, REPO_ROOT, ExperimentConfig, from_dict, load_config, to_dict
from bfdl_tff.errors import BfdlError, RunDirError
from bfdl_tff.io_utils import atomic_write_json



class ProducerMissing(BfdlError):
    """A stage's producer (another area's entry point) is not available yet."""

    exit_code = 3


# --------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------


@dataclass
class Profile:
    name: str
    description: str
    expected_runtime: str
    base: dict  # ExperimentConfig overrides shared by every run
    seeds: list[int]
    ledger_off_seeds: list[int]
    client_dp_seeds: list[int]
    scalability_ks: list[int]
    scalability_rounds: int
    attack_seeds: list[int]
    attack: dict = field(default_factory=dict)  # options for the privacy-evaluation stage
    bench: dict = field(default_factory=dict)  # options for `bfdl ledger bench`
    budget_rounds: list[int] = field(default_factory=lambda: [50])
    nih_examples_per_hospital: int = 30000  # NIH-like hospital size for the noise table (stated)


def _synthetic_base(*, images: int, size: int, rounds: int, batch: int, model: str = "small_cnn",
                    client_lr: float | None = None) -> dict:
    federated: dict[str, Any] = {"rounds": rounds, "local_epochs": 1, "batch_size": batch}
    if client_lr is not None:
        federated["client_lr"] = client_lr
    return {
        "data": {"source": "synthetic", "image_size": size, "hospitals": 3, "scheme": "dirichlet",
                 "alpha": 0.5, "synth_images": images},
        "model": {"config": model, "overrides": {"input_size": size}},
        "federated": federated,
        "privacy": {"target_epsilon": 1.0, "delta": 1e-5, "accountant": "rdp"},
        "ledger": {"replicas": 4},
    }


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        name="quick",
        description="CI-sized smoke of every stage: synthetic 32 px images, small CNN, 2 rounds, 1 seed",
        expected_runtime="a few minutes on 2 CPU cores",
        base=_synthetic_base(images=800, size=32, rounds=2, batch=16),
        seeds=[0], ledger_off_seeds=[0], client_dp_seeds=[0], scalability_ks=[3, 4], scalability_rounds=1,
        attack_seeds=[0], attack={"inversion": {"n_updates": 1, "batch_sizes": [1], "local_steps": [1],
                                                "iterations": 30, "restarts": 1},
                                  "membership": {"n_shadows": 2, "max_per_class": 50}},
        bench={"transactions": 200}, budget_rounds=[2, 50],
    ),
    "default": Profile(
        name="default",
        description="synthetic NIH-layout data (64 px), small CNN, 3 hospitals, 10 rounds, 3 seeds per arm",
        expected_runtime="about 20 minutes on 2 CPU cores",
        # client_lr 0.2 (SGD, momentum 0.9; the FederatedConfig default 0.05 barely learns here).
        # Measured with `bfdl train` on this data, 10 rounds, final test macro AUC of plain FedAvg:
        # lr 0.05: 0.538 (seed 0), 0.528 (seed 1); lr 0.1: 0.610 (seed 0); lr 0.2: 0.642 / 0.569 /
        # 0.578 (seeds 0 / 1 / 2); lr 0.4: 0.534 (diverges). Centralized at 0.2: 0.605 (seed 0);
        # B-FDL (DP-SGD, epsilon 1) stays near chance at either lr (0.512 at 0.2, seed 0).
        base=_synthetic_base(images=1500, size=64, rounds=10, batch=16, client_lr=0.2),
        seeds=[0, 1, 2], ledger_off_seeds=[0], client_dp_seeds=[0], scalability_ks=list(range(3, 11)),
        scalability_rounds=2, attack_seeds=[0],
        attack={"inversion": {"n_updates": 2, "batch_sizes": [1], "local_steps": [1], "iterations": 150,
                              "restarts": 1},
                "membership": {"n_shadows": 2, "max_per_class": 200, "shadow_epochs": 5}},
        bench={"transactions": 2000, "sweep": True}, budget_rounds=[10, 50],
    ),
    "paper": Profile(
        name="paper",
        description="NIH ChestX-ray14 (--data-root), ResNet-50 + U-Net at 224 px, 3 hospitals, 50 rounds, 3 seeds",
        expected_runtime=("a GPU job: roughly 2-4 GPU-days on one V100/A100-class GPU for 3 arms x 3 seeds "
                          "x 50 rounds plus the K = 3..10 sweep (estimate from the CPU step cost of "
                          "ResNet-50 + U-Net, not measured here); not feasible on 2 CPU cores"),
        base={
            "data": {"source": "nih", "image_size": 224, "hospitals": 3, "scheme": "dirichlet", "alpha": 0.5},
            "model": {"config": "resnet50_unet", "overrides": {"input_size": 224}},
            "federated": {"rounds": 50, "local_epochs": 1, "batch_size": 64},
            "privacy": {"target_epsilon": 1.0, "delta": 1e-5, "accountant": "rdp"},
            "ledger": {"replicas": 4},
        },
        seeds=[0, 1, 2], ledger_off_seeds=[0, 1, 2], client_dp_seeds=[0], scalability_ks=list(range(3, 11)),
        scalability_rounds=5, attack_seeds=[0, 1, 2],
        attack={"inversion": {"n_updates": 8, "batch_sizes": [1, 4, 16], "local_steps": [1, 4], "iterations": 1000,
                              "restarts": 4},
                "membership": {"n_shadows": 8, "max_per_class": 1000}},
        bench={"transactions": 5000, "sweep": True}, budget_rounds=[50, 100],
    ),
}

ARM_OVERRIDES: dict[str, dict] = {
    # Paper 3.3 columns: centralized (pooled data), federated without blockchain (plain FedAvg),
    # B-FDL (FedAvg + DP-SGD at epsilon = 1 + secure aggregation + the PBFT ledger).
    "centralized": {"arm": "centralized", "privacy": {"mode": "none", "secure_sum": False}, "ledger": {"enabled": False}},
    "federated": {"arm": "federated", "privacy": {"mode": "none", "secure_sum": False}, "ledger": {"enabled": False}},
    "bfdl": {"arm": "bfdl", "privacy": {"mode": "sample", "secure_sum": True}, "ledger": {"enabled": True}},
}


def _merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


@dataclass
class Context:
    profile: Profile
    runs: Path
    out: Path
    data_root: Path | None
    force: bool = False

    def log(self, msg: str) -> None:
        print(f"[progress] {msg}", flush=True)

    def data_dir(self) -> Path:
        if self.profile.base["data"]["source"] == "synthetic":
            return (self.runs / "data" / f"synthetic-{self.profile.name}").resolve()
        if self.data_root is None:
            raise BfdlError(f"profile {self.profile.name} needs --data-root DIR (NIH ChestX-ray14 in its original layout)")
        return self.data_root.resolve()

    def config(self, arm: str, seed: int, *, name: str, extra: dict | None = None) -> ExperimentConfig:
        d = _merge(self.profile.base, ARM_OVERRIDES[arm])
        d = _merge(d, {"name": name, "seed": seed, "data": {"root": str(self.data_dir())}})
        if extra:
            d = _merge(d, extra)
        return from_dict(ExperimentConfig, d, source=f"reproduce profile {self.profile.name}")


# --------------------------------------------------------------------------------------------
# Producers (lazy imports of the other areas' entry points)
# --------------------------------------------------------------------------------------------


def _import(module: str, attr: str, *, what: str) -> Any:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            raise ProducerMissing(f"{what}: module {module} is not available yet (needed: {module}.{attr})") from None
        raise
    if not hasattr(mod, attr):
        raise ProducerMissing(f"{what}: {module}.{attr} is not available yet")
    return getattr(mod, attr)


def run_one(ctx: Context, cfg: ExperimentConfig, run_path: Path) -> Path:
    """Run (or skip / resume) one experiment into ``run_path`` via the federated runner."""
    from bfdl_tff.runs import RunDir

    summary = run_path / "summary.json"
    cfg_file = run_path / "config.yaml"
    if summary.is_file() and cfg_file.is_file() and not ctx.force:
        if to_dict(load_config(cfg_file)) == to_dict(cfg):
            ctx.log(f"{run_path}: finished earlier, skipped")
            return run_path
        raise RunDirError(f"{run_path}: finished with a different config; rerun with --force (moves it aside)")
    resume = run_path.exists() and cfg_file.is_file() and not ctx.force
    overwrite = ctx.force and run_path.exists()
    if resume and to_dict(load_config(cfg_file)) != to_dict(cfg):
        # an unfinished run of another config holds no result: move it aside (never deleted)
        ctx.log(f"{run_path}: unfinished run with a different config, moved aside to {run_path.name}.old-*")
        resume, overwrite = False, True
    rd = RunDir.create(run_path, cfg, resume=resume, overwrite=overwrite)
    ctx.log(f"{run_path}: {'resuming' if resume else 'starting'} arm={cfg.arm} seed={cfg.seed} "
            f"rounds={cfg.federated.rounds} hospitals={cfg.data.hospitals}")
    t0 = time.perf_counter()
    from bfdl_tff.experiment import train_arm

    train_arm(cfg, rd, resume=resume, progress=True)
    if not summary.is_file():
        raise BfdlError(f"{run_path}: the runner finished without writing summary.json")
    ctx.log(f"{run_path}: done in {time.perf_counter() - t0:.1f}s")
    return run_path


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------


class _Failures:
    """Keep going after one run fails (the others still produce results); raise at the end."""

    def __init__(self, ctx: Context, stage: str) -> None:
        self.ctx, self.stage, self.errors = ctx, stage, []

    def run(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except ProducerMissing:
            raise
        except Exception as e:  # noqa: BLE001 - recorded, re-raised as one error at the end
            if not isinstance(e, BfdlError):
                traceback.print_exc()
            self.errors.append(f"{what}: {type(e).__name__}: {e}" if not isinstance(e, BfdlError) else f"{what}: {e}")
            self.ctx.log(f"{what} FAILED: {self.errors[-1]}")
            return None

    def check(self) -> None:
        if self.errors:
            raise BfdlError(f"{len(self.errors)} failure(s) in stage {self.stage}: " + " | ".join(self.errors))


def stage_data(ctx: Context) -> list[Path]:
    root = ctx.data_dir()
    out = ctx.runs / "data" / "data.json"
    if ctx.profile.base["data"]["source"] != "synthetic":
        entry = root / "Data_Entry_2017.csv"
        if not entry.is_file() or not (root / "images").is_dir():
            raise BfdlError(f"{root}: not an NIH ChestX-ray14 root (needs Data_Entry_2017.csv and images/)")
        atomic_write_json(out, {"root": str(root), "synthetic": False})
        return [out]
    prepare_data = _import("bfdl_tff.data.prepare", "prepare_data", what="data preparation")
    # The runner partitions (and, for synthetic data, generates) per run with the run's partition
    # seed; generating every seed's dataset here once keeps the training stages from racing.
    done = {}
    for seed in sorted(set(ctx.profile.seeds + ctx.profile.client_dp_seeds + ctx.profile.ledger_off_seeds + [0])):
        cfg = ctx.config("bfdl", seed, name="data")
        pseed = cfg.resolved_seeds()["partition"]
        t0 = time.perf_counter()
        ctx.log(f"synthetic data for seed {seed} (partition seed {pseed}): {cfg.data.synth_images} images, "
                f"{cfg.data.image_size} px under {root}")
        prepared = prepare_data(cfg.data, seed=pseed, manifest_dir=ctx.runs / "data" / f"manifests-s{seed}")
        done[str(seed)] = {"root": str(prepared.root), "manifest_dir": str(prepared.manifest_dir),
                           "synthetic": bool(prepared.synthetic), "seconds": round(time.perf_counter() - t0, 2)}
    atomic_write_json(out, {"synthetic": True, "datasets": done})
    return [out]


def _run_all(ctx: Context, stage: str, jobs: list[tuple[ExperimentConfig, Path]]) -> list[Path]:
    fails = _Failures(ctx, stage)
    outs = []
    for cfg, path in jobs:
        if fails.run(str(path), lambda c=cfg, p=path: run_one(ctx, c, p)) is not None:
            outs.append(path / "summary.json")
    fails.check()
    return outs


def stage_arms(ctx: Context) -> list[Path]:
    return _run_all(ctx, "arms", [(ctx.config(arm, seed, name=f"{arm}-s{seed}"), ctx.runs / "arms" / f"{arm}-s{seed}")
                                  for seed in ctx.profile.seeds for arm in ARMS])


def stage_ledger_off(ctx: Context) -> list[Path]:
    return _run_all(ctx, "ledger_off", [
        (ctx.config("bfdl", seed, name=f"bfdl-noledger-s{seed}", extra={"ledger": {"enabled": False}}),
         ctx.runs / "ledger_off" / f"bfdl-s{seed}") for seed in ctx.profile.ledger_off_seeds])


def stage_client_dp(ctx: Context) -> list[Path]:
    return _run_all(ctx, "client_dp", [
        (ctx.config("bfdl", seed, name=f"bfdl-clientdp-s{seed}", extra={"privacy": {"mode": "client"}}),
         ctx.runs / "client_dp" / f"bfdl-s{seed}") for seed in ctx.profile.client_dp_seeds])


def stage_scalability(ctx: Context) -> list[Path]:
    jobs = []
    for k in ctx.profile.scalability_ks:
        # One synthetic dataset (generated for 3 sites by the data stage) split among K hospitals:
        # the sweep measures time, and regenerating images per K would only add generation time.
        extra: dict[str, Any] = {"data": {"hospitals": k}, "federated": {"rounds": ctx.profile.scalability_rounds}}
        if ctx.profile.base["data"]["source"] == "synthetic":
            extra["data"]["synth_sites"] = 3
        jobs.append((ctx.config("bfdl", 0, name=f"bfdl-k{k}", extra=extra), ctx.runs / "scalability" / f"k{k}"))
    return _run_all(ctx, "scalability", jobs)


def stage_attacks(ctx: Context) -> list[Path]:
    """Inversion + membership inference on each arm's run (``attacks/`` inside the run dir)."""
    inversion_on_run = _import("bfdl_tff.privacy_eval.run_attacks", "inversion_on_run", what="privacy attacks")
    membership_on_run = _import("bfdl_tff.privacy_eval.run_attacks", "membership_on_run", what="privacy attacks")
    inv_opts = dict(ctx.profile.attack.get("inversion", {}))
    for k in ("batch_sizes", "local_steps"):
        if k in inv_opts:
            inv_opts[k] = tuple(inv_opts[k])
    mia_opts = dict(ctx.profile.attack.get("membership", {}))
    outs = []
    fails = _Failures(ctx, "attacks")
    for seed in ctx.profile.attack_seeds:
        for arm in ARMS:
            run = ctx.runs / "arms" / f"{arm}-s{seed}"
            if not (run / "summary.json").is_file():
                fails.errors.append(f"{run}: no summary.json; run the arms stage first")
                continue
            for fn, opts, name in ((inversion_on_run, inv_opts, "inversion.json"),
                                   (membership_on_run, mia_opts, "membership.json")):
                f = run / "attacks" / name
                if f.is_file() and not ctx.force:
                    ctx.log(f"{f}: finished earlier, skipped")
                    outs.append(f)
                    continue
                ctx.log(f"{run}: {name.split('.')[0]} attack ({arm})")
                t0 = time.perf_counter()
                ok = fails.run(str(f), lambda fn=fn, opts=opts, seed=seed, run=run:
                               fn(run, seed=seed, progress=lambda m: ctx.log(f"  {m}"), **opts))
                if ok is not None and f.is_file():
                    ctx.log(f"{f}: written in {time.perf_counter() - t0:.1f}s")
                    outs.append(f)
    fails.check()
    return outs


def stage_audit(ctx: Context) -> list[Path]:
    """``bfdl audit verify`` on every B-FDL run with a ledger: ``audit/verify.json`` (claim C7)."""
    verify_run = _import("bfdl_tff.integration.audit", "verify_run", what="ledger audit")
    outs = []
    for group in ("arms", "client_dp", "scalability"):
        d = ctx.runs / group
        if not d.is_dir():
            continue
        for run in sorted(p for p in d.iterdir() if (p / "ledger" / "genesis.json").is_file() and ".old-" not in p.name):
            res = verify_run(run)
            ctx.log(f"{run}: audit ok={res.ok}" + (f" first failure: {res.first_failure}" if not res.ok else ""))
            outs.append(run / "audit" / "verify.json")
    if not outs:
        raise BfdlError(f"{ctx.runs}: no B-FDL run with a ledger to audit; run the arms stage first")
    return outs


def stage_ledger_bench(ctx: Context) -> list[Path]:
    """``ledger.bench.run_bench`` (what ``bfdl ledger bench --json`` prints) -> ``ledger_bench/bench.json``."""
    run_bench = _import("ledger.bench", "run_bench", what="ledger benchmark")
    opts = {"replicas": 4, "transport": "inproc", **ctx.profile.bench}
    ctx.log(f"ledger benchmark {opts}")
    res = run_bench(**opts)
    out = ctx.runs / "ledger_bench" / "bench.json"
    atomic_write_json(out, res)
    ctx.log(f"{res.get('tx_per_s', float('nan')):.0f} tx/s, p50 {res.get('latency_ms_p50', float('nan')):.2f} ms")
    return [out]


def stage_privacy_budget(ctx: Context) -> list[Path]:
    acc = _import("bfdl_tff.federated.accounting", "calibrate_noise", what="privacy accounting")
    from bfdl_tff.federated import accounting as A

    del acc
    base = ctx.profile.base
    delta = float(base["privacy"]["delta"])
    target = float(base["privacy"]["target_epsilon"])
    accountant = base["privacy"].get("accountant", "rdp")
    k = int(base["data"]["hospitals"])
    batch = int(base["federated"]["batch_size"])
    settings = []

    def add(name: str, level: str, rounds: int, q: float, steps: int, fn: Callable[[float], float], **extra: Any) -> None:
        ctx.log(f"calibrating {name}")
        try:
            z = A.calibrate_noise(target, delta, epsilon_fn=fn, max_noise_multiplier=1000.0)
            settings.append({"name": name, "level": level, "rounds": rounds, "sampling_rate": q, "steps": steps,
                             "noise_multiplier": z, "epsilon_at_noise": fn(z), **extra})
        except A.PrivacyBudgetError as e:
            settings.append({"name": name, "level": level, "rounds": rounds, "sampling_rate": q, "steps": steps,
                             "noise_multiplier": None, "error": str(e), **extra})

    for rounds in ctx.profile.budget_rounds:
        add(f"client_level_{k}_hospitals_{rounds}_rounds", "client", rounds, 1.0, rounds,
            lambda z, r=rounds: A.client_level_epsilon(noise_multiplier=z, clients_per_round=k, num_clients=k,
                                                       rounds=r, delta=delta, accountant=accountant),
            hospitals=k)
    # sample level for this run's own hospitals (sizes read from the B-FDL summaries when recorded)
    sizes: list[int] = []
    for seed in ctx.profile.seeds[:1]:
        s = ctx.runs / "arms" / f"bfdl-s{seed}" / "summary.json"
        if s.is_file():
            ne = json.loads(s.read_text(encoding="utf-8")).get("num_examples")
            if isinstance(ne, dict):
                sizes = [int(v) for v in ne.values()]
    if sizes:
        n = min(sizes)
        rounds = int(base["federated"]["rounds"])
        steps = A.dp_sgd_steps(num_examples=n, batch_size=batch, local_epochs=1, rounds=rounds)
        add(f"sample_level_this_run_{rounds}_rounds_batch{batch}_n{n}", "sample", rounds, min(1.0, batch / n), steps,
            lambda z: A.sample_level_epsilon(noise_multiplier=z, batch_size=batch, num_examples=n, steps=steps,
                                             delta=delta, accountant=accountant),
            examples_per_hospital=n, batch_size=batch, source=str(s))
    n = ctx.profile.nih_examples_per_hospital
    for rounds in ctx.profile.budget_rounds:
        if rounds < 50:
            continue
        steps = A.dp_sgd_steps(num_examples=n, batch_size=64, local_epochs=1, rounds=rounds)
        add(f"sample_level_nih_like_{n}_per_hospital_{rounds}_rounds_batch64", "sample", rounds, 64 / n, steps,
            lambda z, st=steps: A.sample_level_epsilon(noise_multiplier=z, batch_size=64, num_examples=n, steps=st,
                                                       delta=delta, accountant=accountant),
            examples_per_hospital=n, batch_size=64)
    out = ctx.runs / "privacy_budget" / "noise_for_eps1.json"
    atomic_write_json(out, {"target_epsilon": target, "delta": delta, "accountant": accountant,
                            "poisson_sampling": True, "settings": settings,
                            "note": "noise multipliers calibrated with bfdl_tff.federated.accounting (dp_accounting); "
                                    "the NIH-like hospital size is an assumption stated in the setting name"})
    return [out]


def stage_figures(ctx: Context) -> list[Path]:
    from bfdl_tff.commands.figures import import_paper_figures

    manifest = import_paper_figures().generate_all(ctx.runs, ctx.out)
    for name, d in manifest.items():
        ctx.log(f"{name}: {', '.join(d['files'])}" + (f" (missing: {', '.join(d['missing'])})" if d["missing"] else ""))
    return [ctx.out / "figures_manifest.json"]


def stage_report(ctx: Context) -> list[Path]:
    from bfdl_tff.commands.figures import import_paper_figures

    import_paper_figures()
    from paper_figures.report import build_expected_results, build_report

    path = build_report(ctx.runs, ctx.out)
    ctx.log(f"wrote {path}")
    exp = build_expected_results(ctx.runs, ctx.out)
    ctx.log(f"wrote {exp} (README 'Expected results' section)")
    return [path, exp]


@dataclass(frozen=True)
class Stage:
    name: str
    fn: Callable[[Context], list[Path]]
    help: str
    always: bool = False  # pure function of result files: recomputed every time


STAGES: tuple[Stage, ...] = (
    Stage("data", stage_data, "prepare the dataset"),
    Stage("arms", stage_arms, "three arms x seeds"),
    Stage("ledger_off", stage_ledger_off, "B-FDL without the ledger hook"),
    Stage("client_dp", stage_client_dp, "client-level DP demonstration"),
    Stage("attacks", stage_attacks, "privacy attacks on the arms"),
    Stage("ledger_bench", stage_ledger_bench, "ledger benchmark"),
    Stage("scalability", stage_scalability, "K = 3..10 hospitals"),
    Stage("audit", stage_audit, "audit the B-FDL ledgers (verify.json)"),
    Stage("privacy_budget", stage_privacy_budget, "noise for epsilon = 1"),
    Stage("figures", stage_figures, "figures and tables", always=True),
    Stage("report", stage_report, "results/REPORT.md", always=True),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def stage_config(ctx: Context, stage: str) -> dict:
    """What determines a stage's outputs (hashed for the skip decision)."""
    p = ctx.profile
    d: dict[str, Any] = {"profile": p.name, "data_root": str(ctx.data_root or "")}
    if stage != "ledger_bench":
        d["base"] = p.base
    d.update({
        "arms": {"seeds": p.seeds, "arm_overrides": ARM_OVERRIDES},
        "ledger_off": {"seeds": p.ledger_off_seeds},
        "client_dp": {"seeds": p.client_dp_seeds},
        "audit": {"groups": ["arms", "client_dp", "scalability"]},
        "attacks": {"seeds": p.attack_seeds, "attack": p.attack},
        "ledger_bench": {"bench": p.bench},
        "scalability": {"ks": p.scalability_ks, "rounds": p.scalability_rounds},
        "privacy_budget": {"rounds": p.budget_rounds, "nih_examples_per_hospital": p.nih_examples_per_hospital},
    }.get(stage, {}))
    return d


def config_hash(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# stages.json and the skip decision
# --------------------------------------------------------------------------------------------


def load_stages(out: Path) -> dict:
    p = out / "stages.json"
    if p.is_file():
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except ValueError:
            pass
    return {"stages": {}}


def should_skip(record: dict | None, *, cfg_hash: str, force: bool, always: bool, base: Path) -> bool:
    """True if a stage finished with the same config and all its recorded outputs still exist."""
    if force or always or not record or record.get("status") != "done" or record.get("config_hash") != cfg_hash:
        return False
    outs = record.get("outputs") or []
    return bool(outs) and all((base / o).exists() for o in outs)


def _rel(p: Path | str, base: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(base))
    except ValueError:
        return str(p)


# --------------------------------------------------------------------------------------------
# Worker and orchestrator
# --------------------------------------------------------------------------------------------


def _on_sigterm(signum: int, frame: Any) -> None:  # noqa: ARG001
    raise SystemExit(128 + signum)  # unwinds through the worker's ``finally`` (stops TFF workers)


def _worker(args: argparse.Namespace) -> int:
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    ctx = _context(args)
    stage = {s.name: s for s in STAGES}[args.worker]
    result_file = ctx.runs / "logs" / f"{stage.name}.result.json"
    t0 = time.perf_counter()
    status, error, outs = "done", None, []
    code = 0
    try:
        outs = stage.fn(ctx)
    except ProducerMissing as e:
        status, error, code = "missing_producer", str(e), 3
    except BfdlError as e:
        status, error, code = "failed", str(e), 2
    except Exception as e:  # noqa: BLE001 - record any failure, with the traceback in the log
        traceback.print_exc()
        status, error, code = "failed", f"{type(e).__name__}: {e}", 1
    except SystemExit as e:
        status, error, code = "failed", f"terminated (exit {e.code})", int(e.code or 1)
    finally:
        if "bfdl_tff.tff_runtime" in sys.modules:
            sys.modules["bfdl_tff.tff_runtime"].shutdown_workers()
    if error:
        print(f"[progress] stage {stage.name} {status}: {error}", flush=True)
    atomic_write_json(result_file, {"status": status, "error": error, "seconds": time.perf_counter() - t0,
                                    "outputs": [str(Path(o).resolve()) for o in outs]})
    return code


def _context(args: argparse.Namespace) -> Context:
    prof = PROFILES[args.profile]
    runs, out = Path(args.runs).resolve(), Path(args.out).resolve()
    data_root = Path(args.data_root) if args.data_root else None
    if prof.name == "paper" and data_root is None:
        raise BfdlError("--profile paper needs --data-root DIR (NIH ChestX-ray14: Data_Entry_2017.csv + images/)")
    return Context(profile=prof, runs=runs, out=out, data_root=data_root, force=bool(args.force))


def _follow(proc: subprocess.Popen, log: Path, stage: str) -> int:
    """Wait for the worker, echoing its ``[progress]`` lines from the log file."""
    pos = 0
    while True:
        rc = proc.poll()
        try:
            with open(log, encoding="utf-8", errors="replace") as fh:
                fh.seek(pos)
                chunk = fh.read()
                pos = fh.tell()
        except FileNotFoundError:
            chunk = ""
        for line in chunk.splitlines():
            if line.startswith("[progress] "):
                print(f"  [{stage}] {line[len('[progress] '):]}", flush=True)
        if rc is not None:
            return rc
        time.sleep(2.0)


def orchestrate(args: argparse.Namespace) -> int:
    ctx = _context(args)
    base = REPO_ROOT.resolve() if str(ctx.runs).startswith(str(REPO_ROOT.resolve())) else ctx.runs.parent
    selected = args.stage or list(STAGE_NAMES)
    for s in selected:
        if s not in STAGE_NAMES:
            raise BfdlError(f"--stage {s}: unknown stage (known: {', '.join(STAGE_NAMES)})")
    (ctx.runs / "logs").mkdir(parents=True, exist_ok=True)
    ctx.out.mkdir(parents=True, exist_ok=True)
    state = load_stages(ctx.out)
    if state.get("profile") not in (None, ctx.profile.name):
        print(f"reproduce: note: {ctx.out}/stages.json was written by profile {state.get('profile')}; "
              f"stages whose config differs will be recomputed", flush=True)
    state["profile"] = ctx.profile.name
    state["runs"] = _rel(ctx.runs, base)
    state["results"] = _rel(ctx.out, base)
    state.setdefault("stages", {})
    print(f"reproduce: profile {ctx.profile.name}: {ctx.profile.description}", flush=True)
    print(f"reproduce: expected runtime {ctx.profile.expected_runtime}", flush=True)
    print(f"reproduce: runs -> {ctx.runs}, results -> {ctx.out}, logs -> {ctx.runs / 'logs'}", flush=True)
    t_all = time.perf_counter()
    failed: list[str] = []
    order = [s for s in STAGES if s.name in selected]
    for i, stage in enumerate(order, start=1):
        cfg = stage_config(ctx, stage.name)
        h = config_hash(cfg)
        rec = state["stages"].get(stage.name)
        if should_skip(rec, cfg_hash=h, force=ctx.force, always=stage.always, base=base):
            print(f"[{i}/{len(order)}] {stage.name}: done earlier in {rec.get('seconds', 0):.0f}s, skipped "
                  "(--force to recompute)", flush=True)
            continue
        log = ctx.runs / "logs" / f"{stage.name}.log"
        result_file = ctx.runs / "logs" / f"{stage.name}.result.json"
        if result_file.exists():
            result_file.unlink()
        print(f"[{i}/{len(order)}] {stage.name}: {stage.help} (log: {log})", flush=True)
        cmd = [sys.executable, "-m", "bfdl_tff.reproduce", "--worker", stage.name, "--profile", ctx.profile.name,
               "--runs", str(ctx.runs), "--out", str(ctx.out)]
        if ctx.data_root:
            cmd += ["--data-root", str(ctx.data_root)]
        if ctx.force:
            cmd.append("--force")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0", PYTHONUNBUFFERED="1")
        t0 = time.perf_counter()
        with open(log, "w", encoding="utf-8") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=REPO_ROOT, env=env)
            try:
                rc = _follow(proc, log, stage.name)
            except KeyboardInterrupt:
                proc.terminate()  # the worker's SIGTERM handler stops its TFF worker_binary
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                raise
        seconds = time.perf_counter() - t0
        res = json.loads(result_file.read_text(encoding="utf-8")) if result_file.is_file() else {
            "status": "failed", "error": f"worker exited {rc} without a result (see {log})", "outputs": []}
        record = {
            "status": res["status"], "seconds": round(seconds, 1), "config_hash": h, "config": cfg,
            "outputs": [_rel(o, base) for o in res.get("outputs", [])], "log": _rel(log, base),
            "error": res.get("error"), "exit_code": rc,
            "finished_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        state["stages"][stage.name] = record
        atomic_write_json(ctx.out / "stages.json", state)
        if res["status"] == "done":
            print(f"[{i}/{len(order)}] {stage.name}: done in {seconds:.0f}s", flush=True)
        else:
            failed.append(stage.name)
            print(f"[{i}/{len(order)}] {stage.name}: {res['status'].upper()} after {seconds:.0f}s: {res.get('error')}"
                  f" (log: {log})", flush=True)
    total = time.perf_counter() - t_all
    state["last_invocation_seconds"] = round(total, 1)
    atomic_write_json(ctx.out / "stages.json", state)
    _summary(ctx, state, total, failed)
    return 1 if failed else 0


def _summary(ctx: Context, state: dict, total: float, failed: list[str]) -> None:
    print("\nreproduce: summary", flush=True)
    for name in STAGE_NAMES:
        rec = state["stages"].get(name)
        if rec:
            print(f"  {name:<15} {rec['status']:<17} {rec.get('seconds', 0):>7.0f}s  {rec.get('log', '')}")
    print(f"  this invocation: {total:.0f}s; stage status: {ctx.out / 'stages.json'}")
    for f, what in (("REPORT.md", "report (paper vs measured)"), ("table33.md", "Table 3.3"),
                    ("fig2_performance.png", "Figure 2"), ("fig3_privacy.png", "Figure 3"),
                    ("fig4_scalability.png", "Figure 4"), ("fig5_convergence.png", "Figure 5"),
                    ("ledger_tables.md", "ledger tables"), ("communication.md", "communication"),
                    ("privacy_budget.md", "privacy budget")):
        p = ctx.out / f
        print(f"  {what:<28} {p}{'' if p.exists() else '  (not written)'}")
    if failed:
        print(f"reproduce: FAILED stages: {', '.join(failed)} (their report rows say 'not measured')", flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bfdl_tff.reproduce", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=sorted(PROFILES), default="default")
    p.add_argument("--data-root", default="", help="NIH ChestX-ray14 root (profile paper)")
    p.add_argument("--stage", action="append", default=[], metavar="NAME",
                   help=f"run only this stage (repeatable): {', '.join(STAGE_NAMES)}")
    p.add_argument("--force", action="store_true", help="recompute finished stages (old run dirs are moved aside)")
    p.add_argument("--runs", default=str(REPO_ROOT / "runs"), help="runs root (default: <repo>/runs)")
    p.add_argument("--out", default=str(REPO_ROOT / "results"), help="results directory (default: <repo>/results)")
    p.add_argument("--list", action="store_true", help="list stages and profiles, then exit")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.list:
            for s in STAGES:
                print(f"{s.name:<15} {s.help}{' (always rerun)' if s.always else ''}")
            for p in PROFILES.values():
                print(f"profile {p.name}: {p.description}; expected runtime {p.expected_runtime}")
            return 0
        if args.worker:
            return _worker(args)
        return orchestrate(args)
    except BfdlError as e:
        print(f"reproduce: error: {e}", file=sys.stderr)
        return e.exit_code


__all__ = ["PROFILES", "STAGES", "STAGE_NAMES", "Context", "Profile", "ProducerMissing", "config_hash",
           "load_stages", "main", "orchestrate", "run_one", "should_skip", "stage_config"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
