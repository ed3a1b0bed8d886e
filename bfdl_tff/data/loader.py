"""Loader for datasets in the NIH ChestX-ray14 layout (real data, the NIH sample, the synthetic
stand-in) or the task layout (a MedMNIST export), paper 3.1 / issue 15.

Dataset root layout (what NIH / Kaggle ship, what :mod:`bfdl_tff.data.synth` writes):

- metadata (read by :mod:`bfdl_tff.data.metadata`, whose names are re-exported here):
  ``Data_Entry_2017.csv`` (2017 or v2020 layout, plain or ``.csv.gz``) **or** the CheXNet label
  lists **or** ``task.json`` + ``image_labels.csv``;
- images: ``images/*.png`` or Kaggle's ``images_001/images/*.png`` ... ``images_012/images/*.png``;
- optional: ``BBox_List_2017.csv`` (boxes -> lesion masks), ``masks/<image>.png`` (lesion masks,
  written by the synthetic generator), ``synthetic_sites.csv`` (acquisition site per patient).

Every :class:`ImageSet` carries its task (:mod:`bfdl_tff.data.tasks`; NIH: 14 findings).
PNGs are decoded with TensorFlow ops (``tf.io.decode_png``; 1- to 16-bit files, 16-bit by the
IHDR bit depth; gray, gray+alpha, palette, RGB, RGBA), converted to grayscale (alpha dropped),
resized to ``image_size`` (area averaging when downsampling, bilinear when upsampling) and
scaled to [0, 1]. Masks: a ``masks/`` PNG wins;
else the NIH boxes of the image (scaled from the PNG's own size) are filled; else the mask is all
**-1** ("unknown", ignored by the segmentation loss).
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from bfdl_tff.data.labels import canonical_finding
from bfdl_tff.data.manifest import check_against_metadata, read_manifest, validate_manifest
from bfdl_tff.data.metadata import (  # noqa: F401 - re-exported: the loader is the public entry point
    CHEXNET_LISTS,
    DATA_ENTRY_NAMES,
    LABELS_NAME,
    SITES_NAME,
    _stamp,
    detect_data_entry_layout,
    find_metadata,
    metadata_label_frame,
    metadata_task,
    read_chexnet_lists,
    read_data_entry,
    read_metadata,
    read_task_labels,
)
from bfdl_tff.data.tasks import NIH_TASK, Task
from bfdl_tff.errors import DataError

BBOX_NAME = "BBox_List_2017.csv"


@dataclass
class ImageSet:
    """Decoded images of one manifest split (see INTERFACES.md, Data API)."""

    images: list[str]
    patient_ids: np.ndarray  # int64 [N]
    x: np.ndarray  # float32 [N, S, S, 1] in [0, 1]
    y: np.ndarray  # float32 [N, len(task.labels)] (NIH: [N, 14]); see bfdl_tff.data.tasks
    mask: np.ndarray | None = None  # float32 [N, S, S, 1] in {0, 1}, or -1 where unknown
    task: Task = NIH_TASK

    def __post_init__(self) -> None:
        if np.ndim(self.y) != 2 or np.shape(self.y)[1] != self.task.num_outputs:
            raise ValueError(f"ImageSet: y has shape {np.shape(self.y)}, the {self.task.describe()} task needs "
                             f"[N, {self.task.num_outputs}]")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: Sequence[int] | np.ndarray) -> "ImageSet":
        idx = np.asarray(idx, dtype=np.int64)
        return ImageSet(
            images=[self.images[i] for i in idx],
            patient_ids=self.patient_ids[idx],
            x=self.x[idx],
            y=self.y[idx],
            mask=None if self.mask is None else self.mask[idx],
            task=self.task,
        )


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _image_dirs(root: Path) -> list[Path]:
    dirs = []
    if (root / "images").is_dir():
        dirs.append(root / "images")
    dirs += sorted(p / "images" for p in root.glob("images_*") if (p / "images").is_dir())
    return dirs


@functools.lru_cache(maxsize=8)
def _index_cached(stamp: tuple) -> dict[str, str]:
    out: dict[str, str] = {}
    for d, _, _ in stamp:
        with os.scandir(d) as it:
            for e in it:
                if e.name.endswith(".png"):
                    out.setdefault(e.name, e.path)
    return out


def index_images(root: str | Path) -> dict[str, str]:
    """image name -> path for ``images/`` and Kaggle's ``images_*/images/`` folders."""
    root = Path(root)
    dirs = _image_dirs(root)
    if not dirs:
        raise DataError(f"{root}: no images/ folder (nor Kaggle-style images_001/images/)")
    return _index_cached(_stamp(dirs))


def resolve_image_paths(root: str | Path, images: Sequence[str], *, source: str) -> list[str]:
    """Paths for ``images``; raises naming how many are missing and the first few."""
    idx = index_images(root)
    missing = [n for n in images if n not in idx]
    if missing:
        raise DataError(
            f"{source}: {len(missing)} of {len(images)} image file(s) missing under {Path(root)}/images "
            f"(or images_*/images), first: {', '.join(missing[:5])}"
        )
    return [idx[n] for n in images]


@functools.lru_cache(maxsize=4)
def _read_bbox_cached(stamp: tuple) -> dict[str, list[tuple[float, float, float, float]]]:
    path = Path(stamp[0][0])
    boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    with open(path, encoding="utf-8-sig") as fh:
        header = fh.readline().strip().rstrip(",")
        if not header.startswith("Image Index,Finding Label,Bbox [x,y,w,h]"):
            raise DataError(f"{path}: unknown bounding-box file layout (header {header[:80]!r})")
        for ln, line in enumerate(fh, 2):
            parts = [p for p in line.strip().split(",")]
            while parts and parts[-1] == "":
                parts.pop()
            if not parts:
                continue
            if len(parts) != 6:
                raise DataError(f"{path}: line {ln}: expected 6 fields, got {len(parts)}")
            canonical_finding(parts[1], source=f"{path}: line {ln}")
            try:
                x, y, w, h = (float(v) for v in parts[2:])
            except ValueError:
                raise DataError(f"{path}: line {ln}: box coordinates are not numbers") from None
            boxes.setdefault(parts[0], []).append((x, y, w, h))
    return boxes


def read_bboxes(root: str | Path) -> dict[str, list[tuple[float, float, float, float]]]:
    """``BBox_List_2017.csv`` of ``root`` as image -> boxes (x, y, w, h in PNG pixels); {} if absent."""
    p = Path(root) / BBOX_NAME
    return _read_bbox_cached(_stamp([p])) if p.is_file() else {}


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _decode_graph(image_size: int) -> Any:
    import tensorflow as tf

    def decode(path: Any, mask_path: Any):
        raw = tf.io.read_file(path)
        # IHDR bit depth (byte 24): decode 16-bit files as uint16, the usual 8-bit ones as uint8
        deep = tf.equal(tf.strings.substr(raw, 24, 1), b"\x10")
        img = tf.cond(
            deep,
            lambda: tf.cast(tf.io.decode_png(raw, channels=0, dtype=tf.uint16), tf.float32) / 65535.0,
            lambda: tf.cast(tf.io.decode_png(raw, channels=0, dtype=tf.uint8), tf.float32) / 255.0,
        )
        hw = tf.shape(img)[:2]
        c = tf.shape(img)[-1]
        gray = tf.cond(c >= 3, lambda: tf.image.rgb_to_grayscale(img[..., :3]), lambda: img[..., :1])
        gray.set_shape([None, None, 1])
        same = tf.logical_and(tf.equal(hw[0], image_size), tf.equal(hw[1], image_size))
        down = tf.logical_and(hw[0] >= image_size, hw[1] >= image_size)
        gray = tf.case(
            [
                (same, lambda: gray),
                # area averaging: exact box filter for downsampling, ~4x cheaper than antialias
                (down, lambda: tf.image.resize(gray, [image_size, image_size], method="area")),
            ],
            default=lambda: tf.image.resize(gray, [image_size, image_size], method="bilinear"),
        )
        gray = tf.ensure_shape(tf.clip_by_value(gray, 0.0, 1.0), [image_size, image_size, 1])

        def load_mask():
            m = tf.io.decode_png(tf.io.read_file(mask_path), channels=1)
            m = tf.image.resize(tf.cast(m, tf.float32) / 255.0, [image_size, image_size], method="area")
            return tf.ensure_shape(tf.cast(m >= 0.5, tf.float32), [image_size, image_size, 1])

        mask = tf.cond(tf.strings.length(mask_path) > 0, load_mask, lambda: -tf.ones([image_size, image_size, 1], tf.float32))
        return gray, mask, hw

    return decode


def decode_images(paths: Sequence[str], *, image_size: int, mask_paths: Sequence[str] | None = None,
                  names: Sequence[str] | None = None, batch: int = 256) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Decode PNGs with a parallel ``tf.data`` pipeline -> (x [N,S,S,1], masks or None, hw [N,2]).

    An undecodable file raises :class:`DataError` naming it (found by re-decoding the failing batch
    one file at a time)."""
    import tensorflow as tf

    n = len(paths)
    with_masks = mask_paths is not None
    mp = list(mask_paths) if with_masks else [""] * n
    x = np.empty((n, image_size, image_size, 1), dtype=np.float32)
    m = np.empty((n, image_size, image_size, 1), dtype=np.float32) if with_masks else None
    hw = np.empty((n, 2), dtype=np.int64)
    if n == 0:
        return x, m, hw
    fn = _decode_graph(image_size)
    ds = tf.data.Dataset.from_tensor_slices((list(paths), mp))
    ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(batch).prefetch(2)
    done = 0
    try:
        for gx, gm, ghw in ds:
            k = int(gx.shape[0])
            x[done:done + k] = gx.numpy()
            if with_masks:
                m[done:done + k] = gm.numpy()
            hw[done:done + k] = ghw.numpy()
            done += k
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.DataLossError, tf.errors.UnknownError):
        for i in range(done, min(n, done + batch + 16)):
            for p in (paths[i], mp[i]):
                if not p:
                    continue
                try:
                    tf.io.decode_png(tf.io.read_file(p), channels=0, dtype=tf.uint16)
                except tf.errors.OpError as e:
                    why = e.message.split("[Op:")[0].split("}}")[-1].strip()
                    raise DataError(f"{p}: cannot decode PNG ({why or type(e).__name__}); file is truncated or corrupt") from None
        raise
    return x, m, hw


def _fill_boxes(mask: np.ndarray, hw: np.ndarray, boxes: list[tuple[float, float, float, float]]) -> None:
    s = mask.shape[0]
    h, w = int(hw[0]), int(hw[1])
    mask[...] = 0.0
    for bx, by, bw, bh in boxes:
        x0 = int(np.floor(bx * s / w))
        y0 = int(np.floor(by * s / h))
        x1 = int(np.ceil((bx + bw) * s / w))
        y1 = int(np.ceil((by + bh) * s / h))
        mask[max(0, y0):min(s, max(y1, y0 + 1)), max(0, x0):min(s, max(x1, x0 + 1)), 0] = 1.0


def _check_labels_against_metadata(df: pd.DataFrame, meta: pd.DataFrame, task: Task, *, source: str,
                                   max_label_mismatch: float) -> None:
    msrc = meta.attrs.get("source", "<metadata>")
    metadata_task(meta).check_compatible(task, source=msrc, other_source=source)
    check_against_metadata(df, pd.Index(meta["image"]), source=source, metadata=msrc)
    by_image = meta.set_index("image")
    ref = by_image.loc[df["image"], list(task.labels)].to_numpy()
    diff = np.flatnonzero((ref != df[list(task.labels)].to_numpy()).any(axis=1))
    if len(diff):
        msg = f"{source}: labels of {len(diff)} image(s) differ from {msrc}, first: {df['image'].iloc[diff[0]]}"
        if len(diff) > max_label_mismatch * len(df):
            raise DataError(msg + f" (more than {max_label_mismatch:.1%} of the rows: stale or foreign manifest?)")
        warnings.warn(msg + "; using the manifest's labels", stacklevel=3)
    pat = by_image.loc[df["image"], "patient_id"].to_numpy()
    bad = np.flatnonzero(pat != df["patient_id"].to_numpy())
    if len(bad):
        raise DataError(f"{source}: patient_id of {df['image'].iloc[bad[0]]} differs from {msrc}")


def load_image_set(root: str | Path, manifest: str | Path | pd.DataFrame, *, image_size: int,
                   split: str | Sequence[str] | None = None, with_masks: bool = False,
                   check_metadata: bool = True, max_label_mismatch: float = 0.01,
                   task: Task | None = None) -> ImageSet:
    """Decode the images a manifest lists (rows of ``split`` only, if given) from ``root``.

    The manifest is validated against its task (``task``, else a path's directory ``task.json``,
    else a DataFrame's ``attrs['task']``, else the NIH task); with ``check_metadata`` the
    dataset's task must be the same, every image must be listed in the dataset's metadata (else
    :class:`DataError`), and its labels are compared with the metadata's: more than
    ``max_label_mismatch`` (fraction of rows) differing raises (a stale or foreign manifest);
    fewer give a warning and the manifest's labels are used. The tolerance exists because NIH's
    label revisions differ on ~0.1 % of images (the checked-in manifests carry the 2017 CheXNet
    labels; Kaggle's / v2020 ``Data_Entry_2017.csv`` differ slightly)."""
    root = Path(root)
    meta = read_metadata(root) if check_metadata else None
    if isinstance(manifest, pd.DataFrame):
        source = manifest.attrs.get("source", "<manifest DataFrame>")
        task = task or manifest.attrs.get("task") or (metadata_task(meta) if meta is not None else NIH_TASK)
        df = validate_manifest(manifest, source=source, task=task)
    else:
        source = str(manifest)
        df = read_manifest(manifest, task=task)
        task = df.attrs["task"]
    if split is not None:
        keep = [split] if isinstance(split, str) else list(split)
        df = df[df["split"].isin(keep)].reset_index(drop=True)
    if meta is not None:
        _check_labels_against_metadata(df, meta, task, source=source, max_label_mismatch=max_label_mismatch)
    images = df["image"].tolist()
    paths = resolve_image_paths(root, images, source=source)
    mask_paths = None
    if with_masks:
        mdir = root / "masks"
        have = set(os.listdir(mdir)) if mdir.is_dir() else set()
        mask_paths = [str(mdir / n) if n in have else "" for n in images]
    x, m, hw = decode_images(paths, image_size=image_size, mask_paths=mask_paths, names=images)
    if with_masks and m is not None:
        boxes = read_bboxes(root)
        for i, n in enumerate(images):
            if not mask_paths[i] and n in boxes:
                _fill_boxes(m[i], hw[i], boxes[n])
    return ImageSet(images=images, patient_ids=df["patient_id"].to_numpy(np.int64), x=x,
                    y=df[list(task.labels)].to_numpy(np.float32), mask=m, task=task)


def make_dataset(image_set: ImageSet, *, batch_size: int, shuffle_seed: int | None = None, epochs: int = 1,
                 with_masks: bool = False) -> Any:
    """``tf.data`` pipeline over an :class:`ImageSet`: cache -> seeded shuffle (reshuffled each
    epoch, deterministic for a seed) -> repeat(epochs) -> batch -> prefetch. Yields ``(x, y)`` or,
    with masks, ``(x, (y, mask))``."""
    import tensorflow as tf

    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if with_masks:
        if image_set.mask is None:
            raise DataError("make_dataset(with_masks=True): the image set was loaded without masks")
        ds = tf.data.Dataset.from_tensor_slices((image_set.x, (image_set.y, image_set.mask)))
    else:
        ds = tf.data.Dataset.from_tensor_slices((image_set.x, image_set.y))
    ds = ds.cache()
    if shuffle_seed is not None and len(image_set) > 1:
        ds = ds.shuffle(len(image_set), seed=shuffle_seed, reshuffle_each_iteration=True)
    if epochs != 1:
        ds = ds.repeat(epochs)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
