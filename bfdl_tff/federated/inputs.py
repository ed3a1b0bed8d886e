"""What the runner trains and evaluates on, and the checks before training (paper 2.1: hospitals
with patient-disjoint splits; 3.2: the test split).

``load_data`` prepares (partitions / generates) and loads the federation with the data API and
records the dataset root and manifests in the run directory; ``validate_setup`` refuses a setup
that cannot train, with one line naming the config file and the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bfdl_tff.config import ARMS, ExperimentConfig
from bfdl_tff.errors import ConfigError, DataError
from bfdl_tff.runs import RunDir


@dataclass
class FederationData:
    """The hospitals' splits (``bfdl_tff.data.federation.Federation``-like)."""

    names: list[str]
    train: dict[str, Any]  # name -> ImageSet (x, y, mask, images)
    val: dict[str, Any]
    test: Any
    root: Path | None = None
    synthetic: bool = False
    task: Any = None  # bfdl_tff.data.tasks.Task (issue 15); None = NIH's 14 findings (in-memory data)

    def resolved_task(self) -> Any:
        """The federation's task: ``task``, else the first hospital's ImageSet's, else
        :data:`bfdl_tff.data.tasks.NIH_TASK`."""
        from bfdl_tff.data.tasks import NIH_TASK

        if self.task is not None:
            return self.task
        first = self.train.get(self.names[0]) if self.names else None
        return getattr(first, "task", None) or NIH_TASK


def load_data(cfg: ExperimentConfig, run_dir: RunDir, *, with_masks: bool) -> FederationData:
    """Prepare and load ``cfg.data``; write ``data.json`` (root, manifests, synthetic)."""
    from bfdl_tff.data import federation as fed_mod
    from bfdl_tff.data import prepare as prep_mod

    seeds = cfg.resolved_seeds()
    # prepare_data uses cfg.data.manifests if set, else partitions into RUN_DIR/manifests.
    prepared = prep_mod.prepare_data(cfg.data, seed=seeds["partition"], manifest_dir=run_dir.manifests_dir)
    fed = fed_mod.load_federation(prepared.root, prepared.manifest_dir, image_size=cfg.data.image_size, with_masks=with_masks)
    run_dir.write_data_record(root=Path(prepared.root), manifest_dir=Path(prepared.manifest_dir), synthetic=bool(prepared.synthetic),
                              task=fed.task.to_record())
    return FederationData(
        names=list(fed.names),
        train=dict(fed.train),
        val=dict(fed.val),
        test=fed.test,
        root=Path(prepared.root),
        synthetic=bool(prepared.synthetic),
        task=fed.task,
    )


def concat_sets(sets: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(x, y, mask) of several ImageSets pooled (empty arrays if there is none)."""
    sets = [s for s in sets if s is not None and len(s)]
    if not sets:
        return np.zeros((0,)), np.zeros((0,)), None
    x = np.concatenate([s.x for s in sets])
    y = np.concatenate([s.y for s in sets])
    masks = [s.mask for s in sets]
    m = np.concatenate(masks) if all(mm is not None for mm in masks) else None
    return x, y, m


def validate_setup(cfg: ExperimentConfig, data: FederationData, model_cfg: Any, *, source: str) -> None:
    """Refuse what cannot train: unknown arm, no or empty hospitals, empty test split, input size
    or output count different from the data, more clients per round than hospitals."""
    if cfg.arm not in ARMS:
        raise ConfigError(source, "arm", f"unknown arm {cfg.arm!r} (one of {', '.join(ARMS)})")
    if not data.names:
        raise DataError(f"{source}: no hospitals in the federation")
    for name in data.names:
        ts = data.train.get(name)
        if ts is None or len(ts) == 0:
            raise DataError(f"{source}: hospital {name!r} has an empty training dataset (0 images); remove it or repartition")
    if data.test is None or len(data.test) == 0:
        raise DataError(f"{source}: the test split is empty")
    x0 = data.train[data.names[0]].x
    want = (model_cfg.input_size, model_cfg.input_size, model_cfg.channels)
    for name in data.names:
        got = tuple(data.train[name].x.shape[1:])
        if got != want:
            raise ConfigError(
                source,
                "model",
                f"model {model_cfg.name or model_cfg.architecture} expects input {list(want)} but hospital "
                f"{name!r} images are {list(got)} (data.image_size={cfg.data.image_size}); set model.overrides.input_size",
            )
    if tuple(data.test.x.shape[1:]) != tuple(x0.shape[1:]):
        raise ConfigError(source, "data.image_size", "test images differ in size from training images")
    task = data.resolved_task()
    if data.train[data.names[0]].y.shape[1] != model_cfg.num_findings:
        raise ConfigError(source, "model", f"model has {model_cfg.num_findings} outputs, labels have {data.train[data.names[0]].y.shape[1]}"
                          f" (the data's task: {task.describe()})")
    want_head = "softmax" if task.kind == "multiclass" else "sigmoid"
    if getattr(model_cfg, "head", "sigmoid") != want_head:
        raise ConfigError(source, "model", f"model head {model_cfg.head} does not fit the data's {task.describe()} task (needs {want_head})")
    if cfg.federated.clients_per_round > len(data.names):
        raise ConfigError(source, "federated.clients_per_round", f"{cfg.federated.clients_per_round} > {len(data.names)} hospitals")


__all__ = ["FederationData", "concat_sets", "load_data", "validate_setup"]
