"""What every reproduction stage works with: the profile, the runs root, the results directory,
and running one experiment into a run directory (skip if finished, resume if interrupted)."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bfdl_tff.config import Arm, ExperimentConfig, load_config, to_dict
from bfdl_tff.errors import BfdlError, RunDirError
from bfdl_tff.reproduce.profiles import Profile
from bfdl_tff.runs import RunDir


@dataclass
class Context:
    """One invocation of a stage: ``profile`` run into ``runs`` (run directories) and ``out``."""

    profile: Profile
    runs: Path
    out: Path
    data_root: Path | None
    force: bool = False
    _base: ExperimentConfig | None = field(default=None, repr=False)

    def log(self, msg: str) -> None:
        """A ``[progress]`` line: the orchestrator echoes these from the stage's log file."""
        print(f"[progress] {msg}", flush=True)

    @property
    def base(self) -> ExperimentConfig:
        """The profile's experiment config (shared by every run)."""
        if self._base is None:
            self._base = self.profile.base_config()
        return self._base

    def data_dir(self) -> Path:
        """The dataset root of every run: generated under the runs root for synthetic data."""
        if self.base.data.source == "synthetic":
            return (self.runs / "data" / f"synthetic-{self.profile.name}").resolve()
        if self.data_root is None:
            raise BfdlError(f"profile {self.profile.name} needs --data-root DIR "
                            f"(data.source {self.base.data.source} in {self.profile.experiment_file()})")
        return self.data_root.resolve()

    def config(self, arm: Arm, seed: int, *, name: str, stage: str = "arms",
               extra: dict[str, Any] | None = None) -> ExperimentConfig:
        """One run's config (:meth:`Profile.run_config`)."""
        return self.profile.run_config(arm, seed, name=name, data_root=self.data_dir(), stage=stage, extra=extra)


def run_one(ctx: Context, cfg: ExperimentConfig, run_path: Path) -> Path:
    """Run (or skip / resume) one experiment into ``run_path`` with :func:`bfdl_tff.experiment.train_arm`.

    Finished with the same config: skipped. Finished with another config: an error (``--force``
    moves it aside). Unfinished with the same config: resumed; with another config: moved aside."""
    planned = RunDir(run_path, cfg)
    has_config = planned.config_file.is_file()
    same = has_config and to_dict(load_config(planned.config_file)) == to_dict(cfg)
    if has_config and planned.summary_file.is_file() and not ctx.force:
        if same:
            ctx.log(f"{run_path}: finished earlier, skipped")
            return run_path
        raise RunDirError(f"{run_path}: finished with a different config; rerun with --force (moves it aside)")
    resume = run_path.exists() and has_config and not ctx.force
    overwrite = ctx.force and run_path.exists()
    if resume and not same:
        # an unfinished run of another config holds no result: move it aside (never deleted)
        ctx.log(f"{run_path}: unfinished run with a different config, moved aside to {run_path.name}.old-*")
        resume, overwrite = False, True
    rd = RunDir.create(run_path, cfg, resume=resume, overwrite=overwrite)
    ctx.log(f"{run_path}: {'resuming' if resume else 'starting'} arm={cfg.arm} seed={cfg.seed} "
            f"rounds={cfg.federated.rounds} hospitals={cfg.data.hospitals}")
    t0 = time.perf_counter()
    from bfdl_tff.experiment import train_arm

    train_arm(cfg, rd, resume=resume, progress=True)
    if not rd.summary_file.is_file():
        raise BfdlError(f"{run_path}: the runner finished without writing {rd.summary_file.name}")
    ctx.log(f"{run_path}: done in {time.perf_counter() - t0:.1f}s")
    return run_path


class Failures:
    """Keep going after one run fails (the others still produce results); raise at the end."""

    def __init__(self, ctx: Context, stage: str) -> None:
        self.ctx, self.stage, self.errors = ctx, stage, []

    def add(self, message: str) -> None:
        self.errors.append(message)
        self.ctx.log(f"FAILED: {message}")

    def run(self, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, or ``None`` after recording its error."""
        try:
            return fn()
        except BfdlError as e:
            self.add(f"{what}: {e}")
        except Exception as e:  # noqa: BLE001 - recorded with its traceback, re-raised as one error at the end
            traceback.print_exc()
            self.add(f"{what}: {type(e).__name__}: {e}")
        return None

    def check(self) -> None:
        if self.errors:
            raise BfdlError(f"{len(self.errors)} failure(s) in stage {self.stage}: " + " | ".join(self.errors))


def run_all(ctx: Context, stage: str, jobs: list[tuple[ExperimentConfig, Path]]) -> list[Path]:
    """Run every ``(config, run directory)``; the finished runs' summaries are the outputs."""
    fails = Failures(ctx, stage)
    outs = []
    for cfg, path in jobs:
        if fails.run(str(path), lambda c=cfg, p=path: run_one(ctx, c, p)) is not None:
            outs.append(RunDir(path, cfg).summary_file)
    fails.check()
    return outs


__all__ = ["Context", "Failures", "run_all", "run_one"]
