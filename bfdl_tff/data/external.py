"""External data for validating a released model (issue 15.4, ``bfdl evaluate``): what a hospital
does before trusting a model trained elsewhere (paper 3.3 evaluates on a held-out test split; this
is the same evaluation on someone else's images).

:func:`load_external` reads a dataset in the NIH layout (or the task layout of
:mod:`bfdl_tff.data.metadata`): **every image under the root that has metadata**, or the rows of a
given manifest; decoded at the model's input size, any bit depth / gray / RGB / RGBA -> gray
float [0, 1] (:func:`bfdl_tff.data.loader.decode_images`), with the dataset's task and labels.

Refused with one :class:`~bfdl_tff.errors.DataError` line (the loader writes nothing, so nothing
is written on error): image files under the root that the metadata does not list (names the
count and the first files), a manifest row whose image is not in the metadata or not on disk,
a manifest with unknown columns, metadata with an unknown layout, an unreadable image.
Metadata rows without an image file are skipped: the complete 112,120-row NIH table may describe
a sample of the images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bfdl_tff.data import loader
from bfdl_tff.data.manifest import read_manifest
from bfdl_tff.data.tasks import Task
from bfdl_tff.errors import DataError


@dataclass
class ExternalSet:
    """Images of an external dataset plus where they came from."""

    images: loader.ImageSet
    root: Path
    metadata: str
    manifest: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> Task:
        return self.images.task

    def positives(self) -> dict[str, int]:
        """Positives per label (a binary task: the positive class)."""
        return {lab: int(v) for lab, v in zip(self.task.labels, self.images.y.sum(axis=0))}

    def record(self) -> dict[str, Any]:
        """JSON-ready description: root, metadata, manifest, task, n images / patients, positives."""
        return {"root": str(self.root), "metadata": self.metadata,
                "manifest": str(self.manifest) if self.manifest else None, "task": self.task.to_record(),
                "images": len(self.images), "patients": int(len(np.unique(self.images.patient_ids))),
                "positives": self.positives(), **self.extra}


def unlisted_image_files(root: Path, meta: pd.DataFrame) -> list[str]:
    """Sorted names of the PNG files under ``root``'s image folders that ``meta`` does not list."""
    idx = loader.index_images(root)
    known = set(meta["image"])
    return sorted(n for n in idx if n not in known)


def _manifest_rows(manifest: Path, task: Task) -> pd.DataFrame:
    """Any manifest file (hospital, test or a hand-made list), validated against ``task``."""
    if manifest.is_dir():
        raise DataError(f"{manifest}: is a directory; give one manifest file (e.g. test.csv)")
    return read_manifest(manifest, task=task)


def load_external(root: str | Path, *, image_size: int, manifest: str | Path | None = None,
                  task: Task | None = None) -> ExternalSet:
    """Load an external dataset for evaluation (see the module docstring).

    ``task``: the task the caller expects (e.g. the released model's); if given, the dataset's
    task must equal it (else one line naming both)."""
    root = Path(root)
    meta = loader.read_metadata(root)
    msrc = meta.attrs.get("source", str(root))
    dtask = loader.metadata_task(meta)
    if task is not None:
        dtask.check_compatible(task, source=msrc, other_source="the model")
    unlisted = unlisted_image_files(root, meta)
    if unlisted:
        raise DataError(f"{root}: {len(unlisted)} image file(s) not in the metadata {msrc}, first: {', '.join(unlisted[:5])}")
    extra: dict[str, Any] = {}
    if manifest is not None:
        mpath = Path(manifest)
        df = _manifest_rows(mpath, dtask)
        df.attrs["source"] = str(mpath)
        s = loader.load_image_set(root, df, image_size=image_size, task=dtask)
        return ExternalSet(images=s, root=root, metadata=msrc, manifest=mpath, extra=extra)
    have = set(loader.index_images(root))
    present = meta[meta["image"].isin(have)]
    if present.empty:
        raise DataError(f"{root}: none of the {len(meta)} image(s) in {msrc} is under {root}/images")
    extra["metadata_rows_without_image"] = int(len(meta) - len(present))
    df = pd.DataFrame({"image": present["image"].to_numpy(), "patient_id": present["patient_id"].to_numpy(),
                       "split": "test"})
    for lab in dtask.labels:
        df[lab] = present[lab].to_numpy()
    df = df.sort_values("image", kind="stable").reset_index(drop=True)
    df.attrs["source"] = msrc
    s = loader.load_image_set(root, df, image_size=image_size, task=dtask)
    return ExternalSet(images=s, root=root, metadata=msrc, manifest=None, extra=extra)
