"""Hospital manifests: which images each simulated hospital holds (paper 3.1, "simulated
institutional silos" Hospital-A/B/C).

A manifest directory holds ``hospital_a.csv``, ``hospital_b.csv``, ... and ``test.csv`` (or the
same names with ``.csv.gz``; both are read), and ``task.json`` (:mod:`bfdl_tff.data.tasks`; a
directory without one holds the NIH task). Columns: ``image,patient_id,split,<task labels as
0/1>`` (NIH: the 14 findings); ``split`` is ``train`` or ``val`` inside hospital files and
``test`` in ``test.csv``.
Every file is validated on read (columns, values, duplicates) and every write is atomic (temp
file + rename), so a failing command never leaves a partial manifest behind. ``.csv.gz`` files
are written deterministically (gzip mtime 0, no file name) so regeneration is byte-identical.
"""

from __future__ import annotations

import gzip
import io
import re
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from bfdl_tff.data.tasks import NIH_TASK, Task, directory_task
from bfdl_tff.errors import DataError
from bfdl_tff.io_utils import atomic_write_bytes

KEY_COLUMNS: tuple[str, ...] = ("image", "patient_id", "split")


def manifest_columns(task: Task = NIH_TASK) -> tuple[str, ...]:
    """``image, patient_id, split, <task labels>``."""
    return (*KEY_COLUMNS, *task.labels)


#: Columns of an NIH-task manifest.
MANIFEST_COLUMNS: tuple[str, ...] = manifest_columns(NIH_TASK)
SPLITS = ("train", "val", "test")
TEST_NAME = "test"
_HOSPITAL_RE = re.compile(r"^hospital_[a-z]$")
_EXTS = (".csv", ".csv.gz")


def hospital_name(index: int) -> str:
    """0 -> ``hospital_a`` (the paper's Hospital-A), 1 -> ``hospital_b``, ..."""
    if not 0 <= index < 26:
        raise ValueError(f"hospital index {index} out of range 0..25")
    return f"hospital_{chr(ord('a') + index)}"


def display_name(name: str) -> str:
    """``hospital_a`` -> ``Hospital-A``."""
    if _HOSPITAL_RE.match(name):
        return f"Hospital-{name[-1].upper()}"
    return name


def _stem(path: Path) -> str:
    name = path.name
    for ext in (".csv.gz", ".csv"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return path.stem


def manifest_path(manifest_dir: str | Path, name: str) -> Path:
    """The file for ``name`` (``hospital_a`` / ``test``) in ``manifest_dir``, ``.csv`` or ``.csv.gz``."""
    d = Path(manifest_dir)
    found = [d / f"{name}{ext}" for ext in _EXTS if (d / f"{name}{ext}").is_file()]
    if not found:
        raise DataError(f"{d / (name + '.csv')}: manifest not found (nor {name}.csv.gz)")
    if len(found) > 1:
        raise DataError(f"{d}: both {found[0].name} and {found[1].name} exist; keep one")
    return found[0]


def hospital_names(manifest_dir: str | Path) -> list[str]:
    """Sorted hospital names (``hospital_a``, ...) present in ``manifest_dir``."""
    d = Path(manifest_dir)
    if not d.is_dir():
        raise DataError(f"{d}: manifest directory not found")
    names = sorted({_stem(p) for p in d.iterdir() if p.is_file() and _HOSPITAL_RE.match(_stem(p))
                    and any(p.name.endswith(e) for e in _EXTS)})
    if not names:
        raise DataError(f"{d}: no hospital manifests (hospital_a.csv, ...) in this directory")
    return names


def _expected_splits(path: Path) -> tuple[str, ...]:
    stem = _stem(path)
    if stem == TEST_NAME:
        return ("test",)
    if _HOSPITAL_RE.match(stem):
        return ("train", "val")
    return SPLITS


def validate_manifest(df: pd.DataFrame, *, source: str, expected_splits: Iterable[str] = SPLITS,
                      task: Task = NIH_TASK) -> pd.DataFrame:
    """Check columns and values against ``task``; return a normalised copy (int dtypes) with
    ``attrs['task']`` set. Raises :class:`DataError`."""
    cols = list(df.columns)
    want = manifest_columns(task)
    if cols != list(want):
        missing = [c for c in want if c not in cols]
        extra = [c for c in cols if c not in want]
        detail = []
        if missing:
            detail.append(f"missing columns {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if extra:
            detail.append(f"unknown columns {extra[:5]}{' ...' if len(extra) > 5 else ''}")
        if not detail:
            detail.append("columns out of order")
        what = "<14 findings>" if task == NIH_TASK else f"<{task.describe()}: {','.join(task.labels[:5])}>"
        raise DataError(f"{source}: not a manifest ({'; '.join(detail)}); expected {','.join(KEY_COLUMNS)},{what}")
    out = df.copy()
    img = out["image"].astype(str)
    if (img.str.strip() == "").any() or out["image"].isna().any():
        raise DataError(f"{source}: empty image name in row {int(np.flatnonzero((img.str.strip() == '') | out['image'].isna())[0]) + 2}")
    dup = img[img.duplicated()]
    if len(dup):
        raise DataError(f"{source}: {len(dup)} duplicate image(s), first: {', '.join(dup.iloc[:5])}")
    out["image"] = img
    pid = pd.to_numeric(out["patient_id"], errors="coerce")
    bad = pid.isna() | (pid < 0) | (pid != pid.round())
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{source}: row {i + 2}: patient_id {df['patient_id'].iloc[i]!r} is not a non-negative integer")
    out["patient_id"] = pid.astype(np.int64)
    allowed = tuple(expected_splits)
    split = out["split"].astype(str)
    badsplit = ~split.isin(allowed)
    if badsplit.any():
        i = int(np.flatnonzero(badsplit.to_numpy())[0])
        raise DataError(f"{source}: row {i + 2}: split {split.iloc[i]!r} not allowed here (allowed: {', '.join(allowed)})")
    out["split"] = split
    for f in task.labels:
        v = pd.to_numeric(out[f], errors="coerce")
        badv = ~v.isin((0, 1))
        if badv.any():
            i = int(np.flatnonzero(badv.to_numpy())[0])
            raise DataError(f"{source}: row {i + 2}: column {f} must be 0 or 1, got {df[f].iloc[i]!r}")
        out[f] = v.astype(np.int8)
    if task.kind == "multiclass" and len(out):
        nset = out[list(task.labels)].sum(axis=1).to_numpy()
        if (nset != 1).any():
            i = int(np.flatnonzero(nset != 1)[0])
            raise DataError(f"{source}: row {i + 2}: {int(nset[i])} classes set; a multiclass manifest is one-hot")
    # a patient lives in exactly one split of a file (no leakage train <-> val)
    per_patient = out.groupby("patient_id")["split"].nunique()
    leaky = per_patient[per_patient > 1]
    if len(leaky):
        raise DataError(f"{source}: {len(leaky)} patient(s) appear in more than one split, first: {list(leaky.index[:5])}")
    out = out.reset_index(drop=True)
    out.attrs["task"] = task
    return out


def read_manifest(path: str | Path, *, task: Task | None = None) -> pd.DataFrame:
    """Read and validate one manifest (``.csv`` or ``.csv.gz``) against ``task`` (default: the
    task of its directory, see :func:`bfdl_tff.data.tasks.directory_task`)."""
    path = Path(path)
    if not path.is_file():
        alt = [path.with_name(path.name + ".gz")] if path.name.endswith(".csv") else []
        for a in alt:
            if a.is_file():
                path = a
                break
        else:
            raise DataError(f"{path}: manifest not found")
    try:
        df = pd.read_csv(path, dtype={"image": str, "split": str}, compression="infer", keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: unreadable manifest: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    task = task or directory_task(path.parent)
    return validate_manifest(df, source=str(path), expected_splits=_expected_splits(path), task=task)


def _task_of(df: pd.DataFrame, task: Task | None) -> Task:
    return task or df.attrs.get("task") or NIH_TASK


def manifest_bytes(df: pd.DataFrame, *, gzip_output: bool, task: Task | None = None) -> bytes:
    """Canonical serialisation (LF line ends, fixed column order; gzip mtime 0 if asked).
    ``task`` defaults to ``df.attrs['task']``, else the NIH task."""
    buf = io.StringIO()
    df.loc[:, list(manifest_columns(_task_of(df, task)))].to_csv(buf, index=False, lineterminator="\n")
    data = buf.getvalue().encode("utf-8")
    if not gzip_output:
        return data
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return out.getvalue()


def write_manifest(path: str | Path, df: pd.DataFrame, *, task: Task | None = None) -> Path:
    """Validate ``df`` and write it atomically; gzip-compressed when ``path`` ends in ``.gz``.
    (The directory's ``task.json`` is written by :func:`bfdl_tff.data.partition.write_partition`.)"""
    path = Path(path)
    task = _task_of(df, task)
    df = validate_manifest(df, source=str(path), expected_splits=_expected_splits(path), task=task)
    atomic_write_bytes(path, manifest_bytes(df, gzip_output=path.name.endswith(".gz"), task=task))
    return path


def read_manifest_dir(manifest_dir: str | Path) -> dict[str, pd.DataFrame]:
    """All manifests of a directory (hospitals in order, then ``test``), cross-validated:
    no image and no patient may appear in two files (patient-disjoint hospitals and test)."""
    d = Path(manifest_dir)
    task = directory_task(d)
    frames = {n: read_manifest(manifest_path(d, n), task=task) for n in hospital_names(d)}
    frames[TEST_NAME] = read_manifest(manifest_path(d, TEST_NAME), task=task)
    check_disjoint(frames, source=str(d))
    return frames


def manifest_task(manifest_dir: str | Path) -> Task:
    """The task of a manifest directory (``task.json``, else the NIH task)."""
    return directory_task(manifest_dir)


def check_disjoint(frames: Mapping[str, pd.DataFrame], *, source: str) -> None:
    """Raise :class:`DataError` if two manifests share an image or a patient."""
    owner_img: dict[str, str] = {}
    owner_pat: dict[int, str] = {}
    for name, df in frames.items():
        for img in df["image"]:
            prev = owner_img.setdefault(img, name)
            if prev != name:
                raise DataError(f"{source}: image {img} is in both {prev} and {name}")
        pats = pd.unique(df["patient_id"])
        shared = [int(p) for p in pats if owner_pat.setdefault(int(p), name) != name]
        if shared:
            other = owner_pat[shared[0]]
            raise DataError(
                f"{source}: {len(shared)} patient(s) of {name} also in {other} (hospitals and test must be "
                f"patient-disjoint), first: {shared[:5]}"
            )


def check_against_metadata(df: pd.DataFrame, known_images: Iterable[str] | pd.Index, *, source: str, metadata: str) -> None:
    """Raise if ``df`` references images that the dataset metadata does not list."""
    known = known_images if isinstance(known_images, pd.Index) else pd.Index(list(known_images))
    absent = df["image"][~df["image"].isin(known)]
    if len(absent):
        raise DataError(
            f"{source}: {len(absent)} image(s) not in the dataset metadata {metadata}, first: {', '.join(absent.iloc[:5])}"
        )
