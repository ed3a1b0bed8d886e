"""What a profile would run, without training (issue 14.6): ``python -m bfdl_tff.reproduce
--profile paper --dry-run`` (``scripts/reproduce_all.sh --dry-run``) prints every stage, the
configs of its runs and the estimated work (runs x rounds x training images), after checking every
run's config the way training would (:func:`bfdl_tff.experiment.check_model`: the model file, its
overrides and the normalisation rule: BatchNorm only for the centralized reference).

The work estimate counts image passes: ``rounds x local_epochs x training images`` per federated
run and ``epochs x training images`` for the centralized arm, where training images are
``synth_images x (1 - test_fraction) x (1 - val_fraction)`` for synthetic data and the size of
NIH ChestX-ray14 (:data:`NIH_IMAGES`) times the same fractions for ``nih``. An estimate from the
config, not a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from bfdl_tff.config import ARMS, ExperimentConfig
from bfdl_tff.reproduce.context import Context
from bfdl_tff.reproduce.privacy_utility import planned_points, point_config

#: Images in NIH ChestX-ray14 (Wang et al. 2017; ``Data_Entry_2017.csv`` rows).
NIH_IMAGES = 112_120


@dataclass(frozen=True)
class PlannedRun:
    stage: str
    run: str  # relative to the runs root
    cfg: ExperimentConfig

    def train_images(self) -> int | None:
        d = self.cfg.data
        total = d.synth_images if d.source == "synthetic" else NIH_IMAGES if d.source == "nih" else None
        return None if total is None else int(total * (1 - d.test_fraction) * (1 - d.val_fraction))

    def passes(self) -> int:
        """Epochs over the training images (centralized) or rounds x local epochs (federated)."""
        f = self.cfg.federated
        if self.cfg.arm == "centralized":
            return f.centralized_epochs or f.rounds * f.local_epochs
        return f.rounds * f.local_epochs


def _arms(ctx: Context) -> list[PlannedRun]:
    return [PlannedRun("arms", f"arms/{a}-s{s}", ctx.config(a, s, name=f"{a}-s{s}"))
            for s in ctx.profile.arms.seeds for a in ARMS]


def _seeds_stage(stage: str, name: str) -> Callable[[Context], list[PlannedRun]]:
    def runs(ctx: Context) -> list[PlannedRun]:
        return [PlannedRun(stage, f"{stage}/bfdl-s{s}", ctx.config("bfdl", s, name=f"bfdl-{name}-s{s}", stage=stage))
                for s in getattr(ctx.profile, stage).seeds]
    return runs


def _scalability(ctx: Context) -> list[PlannedRun]:
    sc = ctx.profile.scalability
    out = []
    for k in sc.ks:
        extra: dict[str, Any] = {"data": {"hospitals": k}, "federated": {"rounds": sc.rounds}}
        if ctx.base.data.source == "synthetic":
            extra["data"]["synth_sites"] = 3
        out.append(PlannedRun("scalability", f"scalability/k{k}",
                              ctx.config("bfdl", 0, name=f"bfdl-k{k}", stage="scalability", extra=extra)))
    return out


def _privacy_utility(ctx: Context) -> list[PlannedRun]:
    return [PlannedRun("privacy_utility", p["run"], point_config(ctx, p)) for p in planned_points(ctx) if not p["reused"]]


#: The stages that train, and the runs each would train (the others read runs or benchmark).
TRAINING_STAGES: dict[str, Callable[[Context], list[PlannedRun]]] = {
    "arms": _arms, "ledger_off": _seeds_stage("ledger_off", "noledger"),
    "client_dp": _seeds_stage("client_dp", "clientdp"), "scalability": _scalability,
    "privacy_utility": _privacy_utility,
}


def planned_runs(ctx: Context, stages: list[str]) -> list[PlannedRun]:
    return [r for s in stages if s in TRAINING_STAGES for r in TRAINING_STAGES[s](ctx)]


def check_configs(ctx: Context, runs: list[PlannedRun]) -> None:
    """Every planned run's config checked as training would check it (first problem raised as a
    :class:`~bfdl_tff.errors.ConfigError` naming the profile's experiment file and the key)."""
    from bfdl_tff.experiment import check_model

    source = f"{ctx.profile.experiment_file()} (profile {ctx.profile.source or ctx.profile.name})"
    for r in runs:
        check_model(r.cfg, source=source)


__all__ = ["NIH_IMAGES", "PlannedRun", "TRAINING_STAGES", "check_configs", "planned_runs"]
