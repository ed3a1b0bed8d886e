"""A federation: every hospital's train / validation images plus the shared held-out test split
(paper 3.1: Hospital-A/B/C, each training on its own silo; evaluation on a common test set), and
the task they share (issue 15: NIH's 14 findings, or e.g. PneumoniaMNIST's binary label)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bfdl_tff.data.loader import ImageSet, load_image_set
from bfdl_tff.data.manifest import TEST_NAME, manifest_task, read_manifest_dir
from bfdl_tff.data.tasks import NIH_TASK, Task


@dataclass
class Federation:
    names: list[str]
    train: dict[str, ImageSet]
    val: dict[str, ImageSet]
    test: ImageSet
    root: Path | None = None
    manifest_dir: Path | None = None
    num_examples: dict[str, int] = field(default_factory=dict)
    task: Task = NIH_TASK

    def pooled_train(self) -> ImageSet:
        """All hospitals' training images together (the centralized arm)."""
        parts = [self.train[n] for n in self.names]
        return ImageSet(
            images=[i for p in parts for i in p.images],
            patient_ids=np.concatenate([p.patient_ids for p in parts]),
            x=np.concatenate([p.x for p in parts]),
            y=np.concatenate([p.y for p in parts]),
            mask=None if any(p.mask is None for p in parts) else np.concatenate([p.mask for p in parts]),
            task=self.task,
        )


def load_federation(root: str | Path, manifest_dir: str | Path, *, image_size: int, with_masks: bool = False) -> Federation:
    """Decode every hospital's images once and split them into train / val by the manifest.

    Manifests are validated against the directory's task and cross-checked (patient-disjoint
    hospitals and test) first; the dataset at ``root`` must hold the same task."""
    frames = read_manifest_dir(manifest_dir)
    task = manifest_task(manifest_dir)
    names = [n for n in frames if n != TEST_NAME]
    train: dict[str, ImageSet] = {}
    val: dict[str, ImageSet] = {}
    for n in names:
        df = frames[n]
        df.attrs["source"] = f"{manifest_dir}/{n}"
        s = load_image_set(root, df, image_size=image_size, with_masks=with_masks, task=task)
        split = df["split"].to_numpy()
        train[n] = s.subset(np.flatnonzero(split == "train"))
        val[n] = s.subset(np.flatnonzero(split == "val"))
    t = frames[TEST_NAME]
    t.attrs["source"] = f"{manifest_dir}/{TEST_NAME}"
    test = load_image_set(root, t, image_size=image_size, with_masks=with_masks, task=task)
    return Federation(names=names, train=train, val=val, test=test, root=Path(root), manifest_dir=Path(manifest_dir),
                      num_examples={n: len(train[n]) for n in names}, task=task)
