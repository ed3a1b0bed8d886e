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

from pathlib import Path
from typing import Any

from bfdl_tff.config import ExperimentConfig
from bfdl_tff.errors import ConfigError
from bfdl_tff.runs import RunDir


def check_model(cfg: ExperimentConfig, *, source: str) -> None:
    """Load the model config ``cfg.model`` names, with its overrides; a problem is a
    :class:`ConfigError` naming the user's file ``source`` (``model.config`` for an unknown model
    or a missing file, ``model.overrides.<key>`` for a bad override) or, for a problem inside an
    existing model file, that file and key. Cheap (no TensorFlow): run before anything is written."""
    from bfdl_tff.models import registry

    try:
        mcfg = registry.load_model_config(cfg.model.config, **cfg.model.overrides)
    except ConfigError as e:
        top = e.key.split(".", 1)[0].split("[", 1)[0]
        if top and top in cfg.model.overrides:
            raise ConfigError(source, f"model.overrides.{e.key}", e.message) from None
        if not Path(e.source).is_file():
            named = f" ({e.source})" if e.source == str(cfg.model.config) else ""  # a path, not a registry name
            raise ConfigError(source, "model.config", e.message + named) from None
        raise
    check_norm(cfg, mcfg.norm, model_file=mcfg.source, source=source)


def check_norm(cfg: ExperimentConfig, norm: str, *, model_file: str, source: str) -> None:
    """BatchNorm only for the centralized reference (issue 14.6): FedAvg averages trainable weights
    but never BatchNorm's moving statistics, and sample-level DP-SGD's per-example clipping assumes
    examples that do not interact (BatchNorm couples the examples of a batch). A :class:`ConfigError`
    naming ``source`` and ``model.overrides.norm`` (or ``model.config`` when the model file sets it)."""
    if norm != "batch" or cfg.arm == "centralized":
        return
    why = ("sample-level DP-SGD (privacy.mode: sample) and FedAvg" if cfg.arm == "bfdl" and cfg.privacy.mode == "sample"
           else "FedAvg (moving statistics are never averaged)")
    fix = "use norm: group or ws (BatchNorm only for the labelled centralized reference)"
    if "norm" in cfg.model.overrides:
        raise ConfigError(source, "model.overrides.norm", f"norm: batch cannot be used with arm {cfg.arm}: {why}; {fix}")
    raise ConfigError(source, "model.config", f"{model_file or cfg.model.config} sets norm: batch, which cannot be used "
                      f"with arm {cfg.arm}: {why}; set model.overrides.norm: group (or ws); {fix}")


def build_hooks(cfg: ExperimentConfig, run_dir: RunDir) -> list[Any]:
    """The round hooks of an arm: the ledger hook for ``bfdl`` with ``ledger.enabled``."""
    if cfg.arm == "bfdl" and cfg.ledger.enabled:
        from bfdl_tff.integration.hook import attach_hooks

        return list(attach_hooks(cfg, run_dir))
    return []


def train_arm(cfg: ExperimentConfig, run_dir: RunDir, *, resume: bool = False, progress: bool = True,
              config_source: str | None = None) -> dict:
    """Train ``cfg.arm`` into ``run_dir`` with its hooks; return the run summary (``config_source``:
    the user's config file, named by configuration errors; default the run's ``config.yaml``)."""
    from bfdl_tff import tff_runtime
    from bfdl_tff.federated.runner import run_experiment

    check_model(cfg, source=config_source or str(run_dir.config_file))  # before anything trains

    with tff_runtime.terminate_on_signals():
        return run_experiment(cfg, run_dir, hooks=build_hooks(cfg, run_dir), resume=resume, progress=progress,
                              config_source=config_source)


__all__ = ["build_hooks", "check_model", "check_norm", "train_arm"]
