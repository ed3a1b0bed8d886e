"""The orchestrator of ``scripts/reproduce_all.sh`` (``python -m bfdl_tff.reproduce``).

Every stage (:mod:`bfdl_tff.reproduce.stages`) runs in its own Python process
(``python -m bfdl_tff.reproduce --worker STAGE``) whose stdout/stderr go to
``<runs>/logs/<stage>.log`` (never a pipe: TFF's worker_binary would hold it open); the
orchestrator prints the worker's ``[progress]`` lines and records status, runtime, config and
outputs in ``results/stages.json`` (:mod:`bfdl_tff.reproduce.records`). A stage whose status is
``done`` with the same config (hash) and whose outputs exist is skipped unless ``--force``; inside
a stage, a run directory whose ``summary.json`` exists for the same config is skipped, an
unfinished one is resumed. ``figures`` and ``report`` are pure functions of the result files and
always rerun.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bfdl_tff.config import REPO_ROOT
from bfdl_tff.errors import BfdlError
from bfdl_tff.io_utils import atomic_write_json
from bfdl_tff.reproduce.context import Context
from bfdl_tff.reproduce.profiles import STAGE_VARIES, load_profile, profile_names
from bfdl_tff.reproduce.records import config_hash, load_stages, records_base, rel, should_skip
from bfdl_tff.reproduce.stages import STAGE_NAMES, STAGES, Stage, stage_config

RESULT_FILES = (("REPORT.md", "report (paper vs measured)"), ("table33.md", "Table 3.3"),
                ("fig2_performance.png", "Figure 2"), ("fig3_privacy.png", "Figure 3"),
                ("fig4_scalability.png", "Figure 4"), ("fig5_convergence.png", "Figure 5"),
                ("ledger_tables.md", "ledger tables"), ("communication.md", "communication"),
                ("privacy_budget.md", "privacy budget"), ("privacy_utility.png", "privacy-utility curve"))


def context_from_args(args: argparse.Namespace) -> Context:
    prof = load_profile(args.profile)
    data_root = Path(args.data_root) if args.data_root else (REPO_ROOT / prof.data_root if prof.data_root else None)
    if not prof.synthetic and data_root is None and getattr(args, "dry_run", False):
        data_root = Path("DATA_ROOT")  # a dry run reads no data: the path only appears in the configs
    elif not prof.synthetic and data_root is None:
        raise BfdlError(f"--profile {prof.name} needs --data-root DIR (NIH ChestX-ray14: Data_Entry_2017.csv + images/)")
    if data_root is not None and not data_root.exists() and not getattr(args, "dry_run", False):
        raise BfdlError(f"--data-root {data_root}: no such file or directory (profile {prof.name})")
    runs = args.runs or str(REPO_ROOT / (prof.runs or "runs"))
    out = args.out or str(REPO_ROOT / (prof.results or "results"))
    return Context(profile=prof, runs=Path(runs).resolve(), out=Path(out).resolve(), data_root=data_root,
                   force=bool(args.force))


# --------------------------------------------------------------------------------------------
# Worker: one stage in this process
# --------------------------------------------------------------------------------------------


def _on_sigterm(signum: int, frame: Any) -> None:  # noqa: ARG001
    raise SystemExit(128 + signum)  # unwinds through the worker's ``finally`` (stops TFF workers)


def worker(args: argparse.Namespace) -> int:
    """Run stage ``args.worker``; write ``<runs>/logs/<stage>.result.json``; return its exit code."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    ctx = context_from_args(args)
    stage = {s.name: s for s in STAGES}[args.worker]
    t0 = time.perf_counter()
    status, error, outs, code = "done", None, [], 0
    try:
        outs = stage.fn(ctx)
    except BfdlError as e:
        status, error, code = "failed", str(e), e.exit_code
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
    atomic_write_json(_result_file(ctx, stage), {"status": status, "error": error, "seconds": time.perf_counter() - t0,
                                                 "outputs": [str(Path(o).resolve()) for o in outs]})
    return code


def _result_file(ctx: Context, stage: Stage) -> Path:
    return ctx.runs / "logs" / f"{stage.name}.result.json"


# --------------------------------------------------------------------------------------------
# Orchestrator: every selected stage in a worker process
# --------------------------------------------------------------------------------------------


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


def _worker_argv(ctx: Context, stage: Stage) -> list[str]:
    cmd = [sys.executable, "-m", "bfdl_tff.reproduce", "--worker", stage.name, "--profile", ctx.profile.source,
           "--runs", str(ctx.runs), "--out", str(ctx.out)]
    if ctx.data_root:
        cmd += ["--data-root", str(ctx.data_root)]
    return cmd + (["--force"] if ctx.force else [])


def run_stage(ctx: Context, stage: Stage, *, base: Path) -> dict[str, Any]:
    """Run one stage in a worker process; its ``stages.json`` record."""
    log = ctx.runs / "logs" / f"{stage.name}.log"
    result_file = _result_file(ctx, stage)
    result_file.unlink(missing_ok=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0", PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(_worker_argv(ctx, stage), stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=REPO_ROOT, env=env)
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
    res = json.loads(result_file.read_text(encoding="utf-8")) if result_file.is_file() else {
        "status": "failed", "error": f"worker exited {rc} without a result (see {log})", "outputs": []}
    cfg = stage_config(ctx, stage.name)
    return {"status": res["status"], "seconds": round(time.perf_counter() - t0, 1), "config_hash": config_hash(cfg),
            "config": cfg, "outputs": [rel(o, base) for o in res.get("outputs", [])], "log": rel(log, base),
            "error": res.get("error"), "exit_code": rc,
            "finished_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def _select(args: argparse.Namespace) -> list[Stage]:
    for s in args.stage:
        if s not in STAGE_NAMES:
            raise BfdlError(f"--stage {s}: unknown stage (known: {', '.join(STAGE_NAMES)})")
    if args.stage:
        return [s for s in STAGES if s.name in args.stage]
    only = load_profile(args.profile).stages  # a real-data profile may skip stages that make no sense for it
    return [s for s in STAGES if not only or s.name in only]


def _open_state(ctx: Context, base: Path) -> dict[str, Any]:
    state = load_stages(ctx.out)
    if state.get("profile") not in (None, ctx.profile.name):
        print(f"reproduce: note: {ctx.out}/stages.json was written by profile {state.get('profile')}; "
              f"stages whose config differs will be recomputed", flush=True)
    state.update(profile=ctx.profile.name, runs=rel(ctx.runs, base), results=rel(ctx.out, base))
    state.setdefault("stages", {})
    return state


def dry_run(args: argparse.Namespace) -> int:
    """Print the stages, their configs and the estimated work; check every run's config; train nothing."""
    from bfdl_tff.reproduce.plan import check_configs, planned_runs

    ctx = context_from_args(args)
    order = _select(args)
    runs = planned_runs(ctx, [s.name for s in order])
    check_configs(ctx, runs)
    b = ctx.base
    print(f"reproduce: DRY RUN of profile {ctx.profile.name} ({ctx.profile.source}): nothing is trained", flush=True)
    print(f"  {ctx.profile.description}; expected runtime {ctx.profile.expected_runtime}")
    print(f"  experiment {ctx.profile.experiment_file()}: data {b.data.source} {b.data.image_size} px, "
          f"{b.data.hospitals} hospitals; model {b.model.config} {b.model.overrides or ''}; {b.federated.rounds} rounds; "
          f"privacy {b.privacy.mode} epsilon {b.privacy.target_epsilon:g}, aggregation {b.privacy.aggregation}")
    total_runs = total_work = 0
    for i, stage in enumerate(order, start=1):
        mine = [r for r in runs if r.stage == stage.name]
        varies = STAGE_VARIES.get(stage.name)
        print(f"[{i}/{len(order)}] {stage.name}: {stage.help}" + (f" (varies {varies})" if varies else ""))
        for r in mine:
            imgs = r.train_images()
            work = None if imgs is None else r.passes() * imgs
            total_work += work or 0
            print(f"    {r.run:<32} arm {r.cfg.arm:<11} seed {r.cfg.seed} hospitals {r.cfg.data.hospitals} "
                  f"rounds {r.cfg.federated.rounds} eps {r.cfg.privacy.target_epsilon:g} "
                  f"z {r.cfg.privacy.noise_multiplier or 'calibrated'} ledger {'on' if r.cfg.ledger.enabled else 'off'}: "
                  f"{r.passes()} passes x {imgs if imgs is not None else '?'} training images = "
                  f"{work if work is not None else '?'} image passes")
        total_runs += len(mine)
    print(f"reproduce: dry run: {total_runs} training runs, {total_work:,} image passes (passes x training images; "
          f"an estimate from the configs); every run config passed the config check", flush=True)
    if getattr(args, "one_round", False):
        from bfdl_tff.reproduce.one_round import one_round

        return one_round(ctx, n_images=args.one_round_images, keep=Path(args.runs).resolve() if args.runs else None)
    return 0


def orchestrate(args: argparse.Namespace) -> int:
    """Run the selected stages in order; 0 only if every one succeeded."""
    from bfdl_tff.reproduce.plan import check_configs, planned_runs

    ctx = context_from_args(args)
    order = _select(args)
    check_configs(ctx, planned_runs(ctx, [s.name for s in order]))  # a bad config fails before any training
    base = records_base(ctx.runs)
    (ctx.runs / "logs").mkdir(parents=True, exist_ok=True)
    ctx.out.mkdir(parents=True, exist_ok=True)
    state = _open_state(ctx, base)
    print(f"reproduce: profile {ctx.profile.name}: {ctx.profile.description}", flush=True)
    print(f"reproduce: expected runtime {ctx.profile.expected_runtime}", flush=True)
    print(f"reproduce: runs -> {ctx.runs}, results -> {ctx.out}, logs -> {ctx.runs / 'logs'}", flush=True)
    t_all = time.perf_counter()
    failed: list[str] = []
    for i, stage in enumerate(order, start=1):
        tag = f"[{i}/{len(order)}] {stage.name}"
        rec = state["stages"].get(stage.name)
        if should_skip(rec, cfg_hash=config_hash(stage_config(ctx, stage.name)), force=ctx.force,
                       always=stage.always, base=base):
            print(f"{tag}: done earlier in {rec.get('seconds', 0):.0f}s, skipped (--force to recompute)", flush=True)
            continue
        print(f"{tag}: {stage.help} (log: {ctx.runs / 'logs' / f'{stage.name}.log'})", flush=True)
        rec = state["stages"][stage.name] = run_stage(ctx, stage, base=base)
        atomic_write_json(ctx.out / "stages.json", state)
        if rec["status"] == "done":
            print(f"{tag}: done in {rec['seconds']:.0f}s", flush=True)
        else:
            failed.append(stage.name)
            print(f"{tag}: {rec['status'].upper()} after {rec['seconds']:.0f}s: {rec['error']} (log: {rec['log']})",
                  flush=True)
    total = time.perf_counter() - t_all
    state["last_invocation_seconds"] = round(total, 1)
    atomic_write_json(ctx.out / "stages.json", state)
    print_summary(ctx, state, total, failed)
    return 1 if failed else 0


def print_summary(ctx: Context, state: dict[str, Any], total: float, failed: list[str]) -> None:
    print("\nreproduce: summary", flush=True)
    for name in STAGE_NAMES:
        rec = state["stages"].get(name)
        if rec:
            print(f"  {name:<15} {rec['status']:<17} {rec.get('seconds', 0):>7.0f}s  {rec.get('log', '')}")
    print(f"  this invocation: {total:.0f}s; stage status: {ctx.out / 'stages.json'}")
    for f, what in RESULT_FILES:
        p = ctx.out / f
        print(f"  {what:<28} {p}{'' if p.exists() else '  (not written)'}")
    if failed:
        print(f"reproduce: FAILED stages: {', '.join(failed)} (their report rows say 'not measured')", flush=True)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bfdl_tff.reproduce",
                                description="One-command reproduction of the paper's results (scripts/reproduce_all.sh).")
    p.add_argument("--profile", default="default",
                   help=f"a profile under configs/profiles/ ({', '.join(profile_names())}) or a profile YAML file")
    p.add_argument("--data-root", default="", help="dataset root for profiles on real data (NIH ChestX-ray14)")
    p.add_argument("--stage", action="append", default=[], metavar="NAME",
                   help=f"run only this stage (repeatable): {', '.join(STAGE_NAMES)}")
    p.add_argument("--force", action="store_true", help="recompute finished stages (old run dirs are moved aside)")
    p.add_argument("--runs", default="", help="runs root (default: the profile's, else <repo>/runs)")
    p.add_argument("--out", default="", help="results directory (default: the profile's, else <repo>/results)")
    p.add_argument("--list", action="store_true", help="list stages and profiles, then exit")
    p.add_argument("--dry-run", action="store_true",
                   help="print the stages, their run configs and the estimated work; check the configs; train nothing")
    p.add_argument("--one-round", action="store_true",
                   help="with --dry-run: also train one round of every arm exactly as the profile would, on a tiny "
                        "synthetic dataset at the profile's image size (docs/reproduction.md); a temporary directory "
                        "unless --runs is given (then <runs>/one_round/)")
    p.add_argument("--one-round-images", type=int, default=24, metavar="N",
                   help="synthetic images of the one-round check (default 24: about 4-6 training images per hospital)")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    return p


def _list() -> int:
    for s in STAGES:
        print(f"{s.name:<15} {s.help}{' (always rerun)' if s.always else ''}")
    for name in profile_names():
        p = load_profile(name)
        print(f"profile {p.name} (experiment {p.experiment}): {p.description}; expected runtime {p.expected_runtime}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.list:
            return _list()
        if args.worker:
            return worker(args)
        if args.one_round and args.one_round_images < 10:
            raise BfdlError(f"--one-round-images {args.one_round_images}: need at least 10 images")
        if args.one_round:  # implies --dry-run
            args.dry_run = True
        if args.dry_run:
            return dry_run(args)
        return orchestrate(args)
    except BfdlError as e:
        print(f"reproduce: error: {e}", file=sys.stderr)
        return e.exit_code


__all__ = ["build_parser", "context_from_args", "dry_run", "main", "orchestrate", "print_summary", "run_stage", "worker"]
