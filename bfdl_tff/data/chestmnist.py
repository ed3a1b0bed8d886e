"""MedMNIST ChestMNIST (``chestmnist.npz``) loader: the NIH ChestX-ray14 images downscaled, with
the CheXNet split and the same 14 findings in the same order (paper 3.1 dataset, small variant).

The ``.npz`` holds ``train_images``, ``train_labels``, ``val_images``, ``val_labels``,
``test_images``, ``test_labels``; images ``(N, S, S)`` uint8, labels ``(N, 14)`` in {0, 1}.
ChestMNIST does not publish patient IDs, so each image is its own pseudo-patient (ID = running
index over train, val, test); MedMNIST's train/val/test split is patient-disjoint, but hospitals
partitioned out of its train split cannot be made patient-disjoint (documented limitation).

:func:`export_chestmnist` writes the ``.npz`` in the NIH layout (PNG files + CheXNet-style label
lists) so the same manifests, partition schemes and loader apply.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

from bfdl_tff.data.labels import NUM_FINDINGS
from bfdl_tff.data.loader import ImageSet
from bfdl_tff.errors import DataError
from bfdl_tff.io_utils import atomic_write_json, atomic_write_text

SPLITS = ("train", "val", "test")
EXPORT_MARKER = "chestmnist_export.json"


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"{path}: ChestMNIST .npz not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz file: {e}") from None
    for s in SPLITS:
        for kind in ("images", "labels"):
            if f"{s}_{kind}" not in data:
                raise DataError(f"{path}: missing key {s}_{kind} (keys: {sorted(data)})")
        x, y = data[f"{s}_images"], data[f"{s}_labels"]
        if x.ndim != 3 or x.shape[1] != x.shape[2] or x.dtype != np.uint8:
            raise DataError(f"{path}: {s}_images must be (N, S, S) uint8, got {x.shape} {x.dtype}")
        if y.shape != (x.shape[0], NUM_FINDINGS):
            raise DataError(f"{path}: {s}_labels must be ({x.shape[0]}, {NUM_FINDINGS}), got {y.shape}")
        if not np.isin(y, (0, 1)).all():
            raise DataError(f"{path}: {s}_labels must be 0/1")
    return data


def _offsets(data: dict[str, np.ndarray]) -> dict[str, int]:
    off, out = 0, {}
    for s in SPLITS:
        out[s] = off
        off += len(data[f"{s}_labels"])
    return out


def image_name(index: int) -> str:
    """Pseudo-NIH name of the ``index``-th image (running over train, val, test)."""
    return f"{index + 1:08d}_000.png"


def load_chestmnist(path: str | os.PathLike[str], *, split: str, image_size: int | None = None) -> ImageSet:
    """One split of a ChestMNIST ``.npz`` as an :class:`ImageSet` (x in [0, 1], resized if asked)."""
    if split not in SPLITS:
        raise DataError(f"{path}: split must be one of {SPLITS}, got {split!r}")
    p = Path(path)
    data = _load_npz(p)
    x = data[f"{split}_images"].astype(np.float32)[..., None] / 255.0
    y = data[f"{split}_labels"].astype(np.float32)
    if image_size is not None and image_size != x.shape[1]:
        import tensorflow as tf

        x = tf.image.resize(x, [image_size, image_size], method="bilinear", antialias=True).numpy().clip(0, 1)
    start = _offsets(data)[split]
    ids = np.arange(start + 1, start + 1 + len(y), dtype=np.int64)
    return ImageSet(images=[image_name(i - 1) for i in ids], patient_ids=ids, x=x.astype(np.float32), y=y, mask=None)


def export_chestmnist(path: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> dict:
    """Write ``images/*.png`` and ``labels/{train,val,test}_list.txt`` (CheXNet format) from the
    ``.npz``; returns counts. The info file is written last (its presence = complete export)."""
    from PIL import Image

    p = Path(path)
    data = _load_npz(p)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    offs = _offsets(data)
    counts = {}
    for s in SPLITS:
        lines = []
        for k, (img, lab) in enumerate(zip(data[f"{s}_images"], data[f"{s}_labels"])):
            name = image_name(offs[s] + k)
            buf = io.BytesIO()
            Image.fromarray(img, mode="L").save(buf, format="PNG")
            (out / "images" / name).write_bytes(buf.getvalue())
            lines.append(name + " " + " ".join(str(int(v)) for v in lab))
        atomic_write_text(out / "labels" / f"{s}_list.txt", "\n".join(lines) + "\n")
        counts[s] = len(lines)
    info = {"source": str(p), "counts": counts, "pseudo_patients": True, "size": int(data["train_images"].shape[1])}
    atomic_write_json(out / EXPORT_MARKER, info)
    return info
