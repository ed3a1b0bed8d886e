"""The privacy-utility curve stage (issue 14.3; paper 3.5 "epsilon = 1.0 keeps accuracy", claim C3/C9):
the B-FDL arm (patient-level DP-SGD, secure sum) at each target epsilon of the profile's
``privacy_utility`` section, plus an optional no-noise DP-SGD point (clipping only).

Run directories: ``<runs>/privacy_utility/eps<epsilon>-s<seed>/`` and ``nonoise-s<seed>/`` (ledger
off: :data:`~bfdl_tff.reproduce.profiles.STAGE_VARIES`). Points at the experiment's own target
epsilon whose seed is one of the arms' seeds reuse ``<runs>/arms/bfdl-s<seed>/``. The index
``<runs>/privacy_utility/points.json`` lists every point's epsilon, seed and run directory (relative
to the runs root); ``paper_figures.privacy_utility`` reads it and the runs' ``summary.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bfdl_tff.config import ExperimentConfig
from bfdl_tff.io_utils import atomic_write_json
from bfdl_tff.reproduce.context import Context, run_all
from bfdl_tff.reproduce.profiles import NO_NOISE_MULTIPLIER

PRIVACY_UTILITY_DIR = "privacy_utility"
POINTS_FILE = "points.json"
ARMS_DIR = "arms"


def point_name(epsilon: float | None, seed: int) -> str:
    """``eps0.5-s0``, ``eps64-s1``, ``nonoise-s0``."""
    return f"nonoise-s{seed}" if epsilon is None else f"eps{epsilon:g}-s{seed}"


def planned_points(ctx: Context) -> list[dict[str, Any]]:
    """Every point of the curve: ``epsilon`` (``None`` = no noise), ``seed``, ``run`` (relative to
    the runs root) and ``reused`` (an arms run) - what the stage runs, in order."""
    opts = ctx.profile.privacy_utility
    target = ctx.base.privacy.target_epsilon
    out = []
    for eps, seeds in opts.points():
        for seed in seeds:
            reuse = eps is not None and eps == target and seed in ctx.profile.arms.seeds
            run = f"{ARMS_DIR}/bfdl-s{seed}" if reuse else f"{PRIVACY_UTILITY_DIR}/{point_name(eps, seed)}"
            out.append({"epsilon": eps, "no_noise": eps is None, "seed": seed, "run": run, "reused": reuse})
    return out


def point_config(ctx: Context, point: dict[str, Any]) -> ExperimentConfig:
    """The config of a point the stage trains (the arms' B-FDL config with the point's privacy)."""
    eps = point["epsilon"]
    privacy = {"noise_multiplier": NO_NOISE_MULTIPLIER} if eps is None else {"target_epsilon": eps, "noise_multiplier": 0.0}
    return ctx.config("bfdl", point["seed"], name=f"bfdl-{point_name(eps, point['seed'])}", stage="privacy_utility",
                      extra={"privacy": privacy})


def stage_privacy_utility(ctx: Context) -> list[Path]:
    """Train every point not reused from the arms (skip/resume as every stage), then write the
    index ``points.json``. A reused arms run must be finished (run the arms stage first)."""
    points = planned_points(ctx)
    jobs = [(point_config(ctx, p), ctx.runs / p["run"]) for p in points if not p["reused"]]
    ctx.log(f"privacy-utility curve: {len(points)} points x seeds, {len(jobs)} to train, "
            f"{len(points) - len(jobs)} reused from the arms")
    for p in points:
        if p["reused"] and not (ctx.runs / p["run"] / "summary.json").is_file():
            ctx.log(f"note: {ctx.runs / p['run']} is not finished (the arms stage trains it)")
    outs = run_all(ctx, "privacy_utility", jobs)
    index = ctx.runs / PRIVACY_UTILITY_DIR / POINTS_FILE
    atomic_write_json(index, {
        "target_epsilon_of_arms": ctx.base.privacy.target_epsilon, "delta": ctx.base.privacy.delta,
        "no_noise_multiplier": NO_NOISE_MULTIPLIER, "points": points,
        "note": "B-FDL arm (patient-level DP-SGD) at each target epsilon; ledger off for the curve's own runs; "
                "points at the arms' epsilon reuse arms/bfdl-s<seed>"})
    return outs + [index]


__all__ = ["POINTS_FILE", "PRIVACY_UTILITY_DIR", "planned_points", "point_config", "point_name",
           "stage_privacy_utility"]
