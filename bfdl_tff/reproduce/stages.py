"""The stages of the reproduction, in order (paper Table 3.3, Figures 2-5; claims C1-C14).

=================  =========================================================================
``data``           prepare the dataset (synthetic NIH layout, or check the NIH root) once
``arms``           centralized / federated / B-FDL x seeds (Table 3.3, Fig. 2, 5; C1-C5)
``ledger_off``     B-FDL with the ledger hook disabled (Fig. 5 with/without ledger; C4)
``client_dp``      B-FDL with client-level DP at the same epsilon (CLAIMS note 2)
``attacks``        gradient inversion + membership inference on the arms' runs (Fig. 3; C3)
``ledger_bench``   ``ledger.bench.run_bench`` = ``bfdl ledger bench --json`` (C4, C6)
``scalability``    B-FDL with K hospitals for each K of the profile (Fig. 4; C10)
``privacy_utility`` B-FDL at each epsilon of the profile + a no-noise point (privacy-utility curve)
``audit``          ``bfdl audit verify`` on every B-FDL ledger (``audit/verify.json``; C7)
``privacy_budget`` noise multiplier needed for the target epsilon at client and sample level (C9)
``statistics``     CIs of the arms' test macro AUC over seeds and test images, paired differences
``figures``        ``python -m paper_figures figures`` (Table 3.3, Fig. 2-5, tables)
``report``         ``python -m paper_figures report`` -> ``results/REPORT.md``
=================  =========================================================================

Each stage is ``fn(ctx) -> list of output files``; it calls the other areas' real entry points
(imported inside the stage, so the orchestrator stays light).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from bfdl_tff.config import ARMS
from bfdl_tff.errors import BfdlError
from bfdl_tff.io_utils import atomic_write_json, atomic_write_text
from bfdl_tff.reproduce.budget import privacy_budget_settings
from bfdl_tff.reproduce.context import Context, Failures, run_all
from bfdl_tff.reproduce.privacy_utility import planned_points, stage_privacy_utility
from bfdl_tff.reproduce.profiles import STAGE_VARIES
from bfdl_tff.runs import RunDir

# Groups of the runs root (read by paper_figures.results under the same names).
ARMS_DIR, LEDGER_OFF_DIR, CLIENT_DP_DIR, SCALABILITY_DIR = "arms", "ledger_off", "client_dp", "scalability"


def stage_data(ctx: Context) -> list[Path]:
    """Generate the synthetic dataset and manifests of every seed once (the training stages then
    only read them), or check that ``--data-root`` is an NIH ChestX-ray14 root."""
    root = ctx.data_dir()
    out = ctx.runs / "data" / "data.json"
    if ctx.base.data.source in ("medmnist", "chestmnist"):  # issue 15: the .npz is read (exported once) at run time
        from bfdl_tff.data.prepare import resolve_path

        npz = resolve_path(ctx.config("bfdl", 0, name="data").data.npz)
        if not npz.is_file():
            raise BfdlError(f"{npz}: no such MedMNIST .npz (profile {ctx.profile.name}; --data-root FILE.npz)")
        atomic_write_json(out, {"npz": str(npz.resolve()), "synthetic": False})
        return [out]
    if ctx.base.data.source != "synthetic":
        if not (root / "Data_Entry_2017.csv").is_file() or not (root / "images").is_dir():
            raise BfdlError(f"{root}: not an NIH ChestX-ray14 root (needs Data_Entry_2017.csv and images/)")
        atomic_write_json(out, {"root": str(root), "synthetic": False})
        return [out]
    from bfdl_tff.data.prepare import prepare_data

    p = ctx.profile
    done = {}
    curve_seeds = [pt["seed"] for pt in planned_points(ctx)]
    for seed in sorted(set(p.arms.seeds + p.client_dp.seeds + p.ledger_off.seeds + curve_seeds + [0])):
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


def stage_arms(ctx: Context) -> list[Path]:
    return run_all(ctx, "arms", [(ctx.config(arm, seed, name=f"{arm}-s{seed}"), ctx.runs / ARMS_DIR / f"{arm}-s{seed}")
                                 for seed in ctx.profile.arms.seeds for arm in ARMS])


def stage_ledger_off(ctx: Context) -> list[Path]:
    return run_all(ctx, "ledger_off", [
        (ctx.config("bfdl", seed, name=f"bfdl-noledger-s{seed}", stage="ledger_off"),
         ctx.runs / LEDGER_OFF_DIR / f"bfdl-s{seed}") for seed in ctx.profile.ledger_off.seeds])


def stage_client_dp(ctx: Context) -> list[Path]:
    return run_all(ctx, "client_dp", [
        (ctx.config("bfdl", seed, name=f"bfdl-clientdp-s{seed}", stage="client_dp"),
         ctx.runs / CLIENT_DP_DIR / f"bfdl-s{seed}") for seed in ctx.profile.client_dp.seeds])


def stage_scalability(ctx: Context) -> list[Path]:
    """B-FDL with K hospitals. Synthetic data: one dataset generated for 3 sites, split among K
    hospitals (the sweep measures time; regenerating images per K would only add generation time)."""
    jobs = []
    sc = ctx.profile.scalability
    for k in sc.ks:
        extra: dict[str, Any] = {"data": {"hospitals": k}, "federated": {"rounds": sc.rounds}}
        if ctx.base.data.source == "synthetic":
            extra["data"]["synth_sites"] = 3
        jobs.append((ctx.config("bfdl", 0, name=f"bfdl-k{k}", stage="scalability", extra=extra),
                     ctx.runs / SCALABILITY_DIR / f"k{k}"))
    return run_all(ctx, "scalability", jobs)


def stage_attacks(ctx: Context) -> list[Path]:
    """Inversion + membership inference on each arm's run (``attacks/`` inside the run dir)."""
    from bfdl_tff.privacy_eval import run_attacks as RA

    opts = ctx.profile.attacks
    outs: list[Path] = []
    fails = Failures(ctx, "attacks")
    for seed in opts.seeds:
        for arm in ARMS:
            path = ctx.runs / ARMS_DIR / f"{arm}-s{seed}"
            run = fails.run(str(path), lambda p=path: _finished_run(p))
            if run is None:
                continue
            for attack, fn, o in (("inversion", RA.inversion_on_run, opts.inversion),
                                  ("membership", RA.membership_on_run, opts.membership)):
                f = RA.result_file(run, attack)
                if f.is_file() and not ctx.force:
                    ctx.log(f"{f}: finished earlier, skipped")
                    outs.append(f)
                    continue
                ctx.log(f"{run.path}: {attack} attack ({arm})")
                t0 = time.perf_counter()
                done = fails.run(str(f), lambda fn=fn, o=o, s=seed, r=run:
                                 fn(r.path, o, seed=s, progress=lambda m: ctx.log(f"  {m}")))
                if done is not None and f.is_file():
                    ctx.log(f"{f}: written in {time.perf_counter() - t0:.1f}s")
                    outs.append(f)
    fails.check()
    return outs


def _finished_run(path: Path) -> RunDir:
    run = RunDir.open(path)
    run.summary()  # a clear error when the run is not finished
    return run


def _ledger_runs(ctx: Context) -> Iterator[RunDir]:
    for group in (ARMS_DIR, CLIENT_DP_DIR, SCALABILITY_DIR):
        d = ctx.runs / group
        if d.is_dir():
            for p in sorted(d.iterdir()):
                if ".old-" not in p.name and (p / "config.yaml").is_file():
                    run = RunDir.open(p)
                    if (run.ledger_dir / "genesis.json").is_file():
                        yield run


def stage_audit(ctx: Context) -> list[Path]:
    """``bfdl audit verify`` on every B-FDL run with a ledger: ``audit/verify.json`` (claim C7)."""
    from bfdl_tff.integration.audit import verify_run
    from bfdl_tff.privacy_eval.dp_audit import dp_audit_check

    outs = []
    for run in _ledger_runs(ctx):
        res = verify_run(run.path, extra_checks=[("dp_audit", dp_audit_check)])
        ctx.log(f"{run.path}: audit ok={res.ok}" + (f" first failure: {res.first_failure}" if not res.ok else ""))
        outs.append(run.audit_dir / "verify.json")
    if not outs:
        raise BfdlError(f"{ctx.runs}: no B-FDL run with a ledger to audit; run the arms stage first")
    return outs


def stage_ledger_bench(ctx: Context) -> list[Path]:
    """``ledger.bench.run_bench`` (what ``bfdl ledger bench --json`` prints) -> ``ledger_bench/bench.json``."""
    from ledger.bench import run_bench

    opts = asdict(ctx.profile.ledger_bench)
    ctx.log(f"ledger benchmark {opts}")
    res = run_bench(**opts)
    out = ctx.runs / "ledger_bench" / "bench.json"
    atomic_write_json(out, res)
    ctx.log(f"{res.get('tx_per_s', float('nan')):.0f} tx/s, p50 {res.get('latency_ms_p50', float('nan')):.2f} ms")
    return [out]


def stage_privacy_budget(ctx: Context) -> list[Path]:
    """Noise multipliers for the target epsilon (``privacy_budget/noise_for_eps1.json``; C9)."""
    p = ctx.base.privacy
    out = ctx.runs / "privacy_budget" / "noise_for_eps1.json"
    bfdl_runs = [ctx.runs / ARMS_DIR / f"bfdl-s{seed}" for seed in ctx.profile.arms.seeds[:1]]
    settings = privacy_budget_settings(ctx.base, ctx.profile.privacy_budget, runs=bfdl_runs, log=ctx.log)
    atomic_write_json(out, {"target_epsilon": p.target_epsilon, "delta": p.delta, "accountant": p.accountant,
                            "poisson_sampling": True, "settings": settings,
                            "note": "noise multipliers calibrated with bfdl_tff.federated.accounting (dp_accounting); "
                                    "the NIH-like hospital size is an assumption stated in the setting name"})
    return [out]


def stage_statistics(ctx: Context) -> list[Path]:
    """``statistics/arms_ci.json`` (:mod:`bfdl_tff.reproduce.statistics`; issue 14.4)."""
    from bfdl_tff.reproduce.statistics import STATS_FILE, arms_statistics

    t0 = time.perf_counter()
    doc = arms_statistics(ctx.runs)
    out = ctx.runs / STATS_FILE
    atomic_write_json(out, doc)
    for arm, d in doc["arms"].items():
        s = d["over_seeds"]
        ctx.log(f"{arm}: macro AUC {s['mean']} (95% CI {s['low']}..{s['high']}, n={s['n']})")
    ctx.log(f"macro over {len(doc['macro_labels'])} findings; excluded: {sorted(doc['excluded_labels']) or 'none'}; "
            f"{time.perf_counter() - t0:.1f}s")
    return [out]


def _paper_figures(ctx: Context, action: str, options: list[str]) -> None:
    from bfdl_tff.commands.figures import run_paper_figures

    res = run_paper_figures(action, runs=ctx.runs, out=ctx.out, options=options, capture=True)
    for line in res.stdout.splitlines():
        ctx.log(line)
    print(res.stderr, end="", flush=True)
    if res.returncode != 0:
        err = res.stderr.strip().splitlines()
        raise BfdlError(f"python -m paper_figures {action} exited {res.returncode}: {err[-1] if err else 'no message'}")


def stage_figures(ctx: Context) -> list[Path]:
    _paper_figures(ctx, "figures", [])
    return [ctx.out / "figures_manifest.json"]


def stage_report(ctx: Context) -> list[Path]:
    _paper_figures(ctx, "report", ["--no-figures"])
    return [ctx.out / "REPORT.md", ctx.out / "expected_results.md"]


def stage_real_data(ctx: Context) -> list[Path]:
    """The "Real data" section (issue 15) of a profile on real images (``label`` set): its arms
    with CIs over seeds, beside MedMNIST's published table for PneumoniaMNIST. Nothing otherwise."""
    if not ctx.profile.label:
        ctx.log(f"profile {ctx.profile.name} has no label (synthetic data): no real-data section")
        return []
    _paper_figures(ctx, "real-data", ["--label", ctx.profile.label])
    outs = [ctx.out / "real_data.md", ctx.out / "real_data.json"]
    report = ctx.out / "REPORT.md"
    if report.is_file():  # the profile's REPORT.md gets (or has replaced) its "Real data" section
        text = report.read_text(encoding="utf-8")
        head = text.split("\n## Real data\n", 1)[0].rstrip("\n")
        atomic_write_text(report, head + "\n\n" + outs[0].read_text(encoding="utf-8"))
        outs.append(report)
    return outs


@dataclass(frozen=True)
class Stage:
    name: str
    fn: Callable[[Context], list[Path]]
    help: str
    always: bool = False  # a pure function of result files: recomputed every time


STAGES: tuple[Stage, ...] = (
    Stage("data", stage_data, "prepare the dataset"),
    Stage("arms", stage_arms, "three arms x seeds"),
    Stage("ledger_off", stage_ledger_off, "B-FDL without the ledger hook"),
    Stage("client_dp", stage_client_dp, "client-level DP demonstration"),
    Stage("attacks", stage_attacks, "privacy attacks on the arms"),
    Stage("ledger_bench", stage_ledger_bench, "ledger benchmark"),
    Stage("scalability", stage_scalability, "B-FDL with K hospitals"),
    Stage("privacy_utility", stage_privacy_utility, "B-FDL at each epsilon (privacy-utility curve)"),
    Stage("audit", stage_audit, "audit the B-FDL ledgers (verify.json)"),
    Stage("privacy_budget", stage_privacy_budget, "noise for the target epsilon"),
    Stage("statistics", stage_statistics, "confidence intervals and paired differences", always=True),
    Stage("figures", stage_figures, "figures and tables", always=True),
    Stage("report", stage_report, "results/REPORT.md", always=True),
    Stage("real_data", stage_real_data, "the 'Real data' section (profiles on real images)", always=True),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def stage_config(ctx: Context, stage: str) -> dict[str, Any]:
    """What determines a stage's outputs (hashed for the skip decision)."""
    p = ctx.profile
    d: dict[str, Any] = {"profile": p.name, "data_root": str(ctx.data_root or "")}
    if stage != "ledger_bench":
        d["experiment"] = p.experiment_dict()
    options: dict[str, Any] = {
        "arms": {"seeds": p.arms.seeds, "arms": list(ARMS)},
        "ledger_off": {"seeds": p.ledger_off.seeds},
        "client_dp": {"seeds": p.client_dp.seeds},
        "attacks": asdict(p.attacks),
        "ledger_bench": asdict(p.ledger_bench),
        "scalability": asdict(p.scalability),
        "audit": {"groups": [ARMS_DIR, CLIENT_DP_DIR, SCALABILITY_DIR]},
        "privacy_budget": asdict(p.privacy_budget),
        "privacy_utility": {**asdict(p.privacy_utility), "points": planned_points(ctx)},
    }
    d.update(options.get(stage, {}))
    if stage in STAGE_VARIES:
        d["varies"] = STAGE_VARIES[stage]
    return d


__all__ = ["STAGES", "STAGE_NAMES", "Stage", "stage_config"] + [s.fn.__name__ for s in STAGES]
