"""Train one arm of an experiment: the one entry point shared by ``bfdl train`` and the
reproduction (paper 3.3: centralized, federated, B-FDL).

This is the application layer: it composes the training runner
(:mod:`bfdl_tff.federated.runner`) with the B-FDL ledger hook
(:mod:`bfdl_tff.integration.hook`), which the runner itself must not import (dependencies point
one way: data -> training -> hook -> ledger). The runner owns the hooks' lifecycle (it closes
them in its ``finally``).

SIGTERM and SIGINT (in the main thread) stop the run cleanly: they raise
:class:`bfdl_tff.tff_runtime.Terminated` (a ``SystemExit`` with code ``128 + signum``), the
runner closes the hooks, the TFF worker is stopped and the newest checkpoint stays resumable
(``--resume``).
"""

from __future__ import annotations

from typing import Any

from bfdl_tff.config import ExperimentConfig
from bfdl_tff.runs import RunDir


def build_hooks(cfg: ExperimentConfig, run_dir: RunDir) -> list[Any]:
    """The round hooks of an arm: the ledger hook for ``bfdl`` with ``ledger.enabled``."""
    if cfg.arm == "bfdl" and cfg.ledger.enabled:
        from bfdl_tff.integration.hook import attach_hooks

        return list(attach_hooks(cfg, run_dir))
    return []


def train_arm(cfg: ExperimentConfig, run_dir: RunDir, *, resume: bool = False, progress: bool = True) -> dict:
    """Train ``cfg.arm`` into ``run_dir`` with its hooks; return the run summary."""
    from bfdl_tff import tff_runtime
    from bfdl_tff.federated.runner import run_experiment

    with tff_runtime.terminate_on_signals():
        return run_experiment(cfg, run_dir, hooks=build_hooks(cfg, run_dir), resume=resume, progress=progress)


__all__ = ["build_hooks", "train_arm"]
