"""MedMNIST 2D ``.npz`` datasets (issue 15.1; MedMNIST v2, Yang et al., Scientific Data 2023):
binary (PneumoniaMNIST, BreastMNIST), multi-class (OrganAMNIST, BloodMNIST, ...) and multi-label
(ChestMNIST: NIH ChestX-ray14 downscaled, the paper's 3.1 dataset in small form).

An ``.npz`` holds ``train_images``, ``train_labels``, ``val_images``, ``val_labels``,
``test_images``, ``test_labels``; images ``(N, S, S)`` or ``(N, S, S, 3)`` uint8, labels ``(N, 1)``
class indices (binary / multi-class) or ``(N, C)`` 0/1 (multi-label). The task is inferred from
the labels (:func:`bfdl_tff.data.tasks.infer_task`) with the kind and label names of the known
MedMNIST datasets (file name ``pneumoniamnist.npz``, ``pneumoniamnist_64.npz``, ...), or given
explicitly. RGB images are converted to gray like every other image here (ITU-R 601 weights).

MedMNIST publishes no patient IDs: each image is its own **pseudo-patient** (ID = running index
over train, val, test). MedMNIST's official splits are patient-disjoint where the source data
allowed it, but hospitals dealt out of them cannot be made patient-disjoint (a documented
limitation, recorded in the export's ``medmnist_export.json``).

:func:`export_medmnist` writes the ``.npz`` in the task layout (``images/*.png``,
``image_labels.csv`` with the official split, ``task.json``) so the same manifests, partition
schemes and loader apply; :func:`load_medmnist` reads one split straight from the ``.npz``.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bfdl_tff.data.labels import FINDINGS
from bfdl_tff.data.loader import ImageSet
from bfdl_tff.data.metadata import LABELS_NAME
from bfdl_tff.data.tasks import Task, encode_labels, infer_task, write_task_file
from bfdl_tff.errors import DataError
from bfdl_tff.io_utils import atomic_write_bytes, atomic_write_json

SPLITS = ("train", "val", "test")
ARRAYS = tuple(f"{s}_{k}" for s in SPLITS for k in ("images", "labels"))
EXPORT_MARKER = "medmnist_export.json"
_GRAY = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)  # tf.image.rgb_to_grayscale's weights

# Kind and class names of the MedMNIST v2 2D datasets (medmnist/info.py, "task" and "label").
# RetinaMNIST is ordinal regression in MedMNIST; here it is a 5-class problem. ChestMNIST uses the
# NIH spelling of its 14 findings (same order), so its task equals the NIH task.
KNOWN: dict[str, tuple[str, tuple[str, ...]]] = {
    "pneumoniamnist": ("binary", ("normal", "pneumonia")),
    "breastmnist": ("binary", ("malignant", "normal, benign")),
    "chestmnist": ("multilabel", FINDINGS),
    "pathmnist": ("multiclass", ("adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                                 "normal colon mucosa", "cancer-associated stroma",
                                 "colorectal adenocarcinoma epithelium")),
    "dermamnist": ("multiclass", ("actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                                  "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
                                  "vascular lesions")),
    "octmnist": ("multiclass", ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal")),
    "retinamnist": ("multiclass", ("0", "1", "2", "3", "4")),
    "bloodmnist": ("multiclass", ("basophil", "eosinophil", "erythroblast",
                                  "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
                                  "lymphocyte", "monocyte", "neutrophil", "platelet")),
    "tissuemnist": ("multiclass", ("Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
                                   "Glomerular endothelial cells", "Interstitial endothelial cells", "Leukocytes",
                                   "Podocytes", "Proximal Tubule Segments", "Thick Ascending Limb")),
}
_ORGAN = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left",
          "lung-right", "pancreas", "spleen")
KNOWN.update({n: ("multiclass", _ORGAN) for n in ("organamnist", "organcmnist", "organsmnist")})


def dataset_name(path: str | os.PathLike[str]) -> str:
    """``.../pneumoniamnist_64.npz`` -> ``pneumoniamnist`` (MedMNIST+ size suffixes dropped)."""
    return re.sub(r"_(28|64|128|224)$", "", Path(path).name.lower().removesuffix(".npz"))


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The six arrays of a MedMNIST ``.npz``, checked; a problem raises one :class:`DataError` line."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: MedMNIST .npz not found")
    try:
        with np.load(p, allow_pickle=False) as z:
            found = list(z.files)
            missing = [a for a in ARRAYS if a not in found]
            if missing:
                raise DataError(f"{p}: missing array{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)} "
                                f"(a MedMNIST .npz holds {', '.join(ARRAYS)}; this file has: {', '.join(found) or 'none'})")
            data = {k: z[k] for k in ARRAYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{p}: not a readable .npz file: {e}") from None
    size = None
    for s in SPLITS:
        x, y = data[f"{s}_images"], data[f"{s}_labels"]
        ok = x.dtype == np.uint8 and (x.ndim == 3 or (x.ndim == 4 and x.shape[3] in (1, 3))) and x.shape[1] == x.shape[2]
        if not ok:
            raise DataError(f"{p}: {s}_images must be (N, S, S) or (N, S, S, 3) uint8, got {x.shape} {x.dtype}")
        if size is not None and x.shape[1:] != size:
            raise DataError(f"{p}: {s}_images are {x.shape[1:]}, train_images are {size}")
        size = x.shape[1:]
        if y.ndim not in (1, 2) or len(y) != len(x) or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
            raise DataError(f"{p}: {s}_labels must be (N,) or (N, C) numbers with N = {len(x)}, got {y.shape} {y.dtype}")
    return data


def npz_task(data: dict[str, np.ndarray], *, path: str | os.PathLike[str], kind: str | None = None,
             names: tuple[str, ...] | None = None) -> Task:
    """The task of an ``.npz``: inferred from its labels, with a known MedMNIST dataset's kind and
    names (binary: the positive class, e.g. PneumoniaMNIST ``("pneumonia",)``) unless overridden."""
    known = KNOWN.get(dataset_name(path))
    kind = kind or (known[0] if known else None)
    if names is None and known is not None:
        classes = known[1]
        if kind != "binary":
            names = classes
        elif len(classes) == 2:
            names = (classes[1],)  # the positive class
    return infer_task([data[f"{s}_labels"] for s in SPLITS], kind=kind, names=names, source=str(path))


def image_name(index: int) -> str:
    """Pseudo-NIH name of the ``index``-th image (running over train, val, test)."""
    return f"{index + 1:08d}_000.png"


def _offsets(data: dict[str, np.ndarray]) -> dict[str, int]:
    off, out = 0, {}
    for s in SPLITS:
        out[s] = off
        off += len(data[f"{s}_labels"])
    return out


def _to_gray_float(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32) / 255.0
    if x.ndim == 3:
        return x[..., None]
    if x.shape[3] == 3:
        return (x @ _GRAY)[..., None]
    return x


def load_medmnist(path: str | os.PathLike[str], *, split: str, image_size: int | None = None,
                  task: Task | None = None, kind: str | None = None) -> ImageSet:
    """One split of a MedMNIST ``.npz`` as an :class:`ImageSet` (x gray in [0, 1], resized like the
    PNG loader if asked: area averaging down, bilinear up)."""
    if split not in SPLITS:
        raise DataError(f"{path}: split must be one of {SPLITS}, got {split!r}")
    data = read_npz(path)
    task = task or npz_task(data, path=path, kind=kind)
    y = encode_labels(data[f"{split}_labels"], task, source=f"{path}: {split}_labels")
    x = _to_gray_float(data[f"{split}_images"])
    if image_size is not None and image_size != x.shape[1]:
        import tensorflow as tf

        method = "area" if image_size < x.shape[1] else "bilinear"
        x = tf.image.resize(x, [image_size, image_size], method=method).numpy().clip(0, 1)
    start = _offsets(data)[split]
    ids = np.arange(start + 1, start + 1 + len(y), dtype=np.int64)
    return ImageSet(images=[image_name(i - 1) for i in ids], patient_ids=ids, x=x.astype(np.float32), y=y,
                    mask=None, task=task)


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    Image.fromarray(img, mode="L" if img.ndim == 2 else "RGB").save(buf, format="PNG")
    return buf.getvalue()


def export_medmnist(path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, task: Task | None = None,
                    kind: str | None = None) -> dict[str, Any]:
    """Write the ``.npz`` in the task layout under ``out_dir``: ``images/*.png``,
    ``image_labels.csv`` (``image,patient_id,split,<labels>``; ``split`` = the official split),
    ``task.json``, and last ``medmnist_export.json`` (its presence = a complete export).
    Returns the export record (source, SHA-256, counts and positives per split, task)."""
    p = Path(path)
    data = read_npz(p)
    task = task or npz_task(data, path=p, kind=kind)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    offs = _offsets(data)
    frames, counts, positives = [], {}, {}
    for s in SPLITS:
        y = encode_labels(data[f"{s}_labels"], task, source=f"{p}: {s}_labels")
        names = [image_name(offs[s] + k) for k in range(len(y))]
        for name, img in zip(names, data[f"{s}_images"]):
            (out / "images" / name).write_bytes(_png_bytes(img))
        df = pd.DataFrame({"image": names, "patient_id": np.arange(offs[s] + 1, offs[s] + 1 + len(y)), "split": s})
        df = pd.concat([df, pd.DataFrame(y.astype(np.int8), columns=list(task.labels))], axis=1)
        frames.append(df)
        counts[s] = len(y)
        positives[s] = {lab: int(v) for lab, v in zip(task.labels, y.sum(axis=0))}
    buf = io.StringIO()
    pd.concat(frames, ignore_index=True).to_csv(buf, index=False, lineterminator="\n")
    atomic_write_bytes(out / LABELS_NAME, buf.getvalue().encode("utf-8"))
    write_task_file(out, task)
    info = {"source": str(p), "sha256": file_sha256(p), "dataset": dataset_name(p), "task": task.to_record(),
            "counts": counts, "positives": positives, "size": int(data["train_images"].shape[1]),
            "channels": 1 if data["train_images"].ndim == 3 else int(data["train_images"].shape[3]),
            "pseudo_patients": True,
            "patients_note": "MedMNIST has no patient IDs: each image is its own pseudo-patient"}
    atomic_write_json(out / EXPORT_MARKER, info)
    return info
