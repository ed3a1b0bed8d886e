"""MedMNIST ChestMNIST (``chestmnist.npz``): the NIH ChestX-ray14 images downscaled, with the
CheXNet split and the same 14 findings in the same order (paper 3.1 dataset, small variant).

Kept for compatibility: ChestMNIST is one MedMNIST dataset (:mod:`bfdl_tff.data.medmnist`) whose
task is the NIH task (14 findings, multi-label); ``data.source: chestmnist`` is the same as
``data.source: medmnist`` with that task. ChestMNIST does not publish patient IDs, so each image
is its own pseudo-patient (documented limitation).
"""

from __future__ import annotations

import os
from typing import Any

from bfdl_tff.data import medmnist
from bfdl_tff.data.loader import ImageSet
from bfdl_tff.data.medmnist import EXPORT_MARKER, SPLITS, image_name  # noqa: F401 - re-exported
from bfdl_tff.data.tasks import NIH_TASK


def load_chestmnist(path: str | os.PathLike[str], *, split: str, image_size: int | None = None) -> ImageSet:
    """One split of a ChestMNIST ``.npz`` (labels must be ``(N, 14)`` 0/1)."""
    return medmnist.load_medmnist(path, split=split, image_size=image_size, task=NIH_TASK)


def export_chestmnist(path: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """:func:`bfdl_tff.data.medmnist.export_medmnist` with the NIH task."""
    return medmnist.export_medmnist(path, out_dir, task=NIH_TASK)
