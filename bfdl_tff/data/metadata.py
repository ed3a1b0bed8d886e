"""Label metadata of a dataset root (paper 3.1: NIH ChestX-ray14's ``Data_Entry_2017.csv``; issue
15: other tasks). Used by :mod:`bfdl_tff.data.loader` (which re-exports these names).

Looked for in this order:

1. NIH ``Data_Entry_2017.csv`` / ``Data_Entry_2017_v2020.csv`` (or the same names ``.csv.gz``):
   the 2017 layout (trailing empty column, as NIH 2017 / Kaggle) or the v2020 layout; the
   complete 112,120-row table is read in about a second;
2. CheXNet label lists ``train_list.txt`` / ``val_list.txt`` / ``test_list.txt``
   (``<image> <14 x 0/1>``) in the root or in ``labels/``;
3. the *task layout* (what :mod:`bfdl_tff.data.medmnist` exports): ``task.json`` plus
   ``image_labels.csv`` with columns ``image,patient_id[,split],<task labels as 0/1>``
   (``split``: the source's official ``train``/``val``/``test``, optional).

The NIH sources hold the NIH task (14 findings, multi-label); the task layout holds its own.
``read_metadata(root).attrs`` carries ``source`` (the file names) and ``task``.
"""

from __future__ import annotations

import csv
import functools
import gzip
import re
from pathlib import Path
from typing import IO, Sequence

import numpy as np
import pandas as pd

from bfdl_tff.data.labels import FINDINGS, NUM_FINDINGS, parse_many
from bfdl_tff.data.tasks import NIH_TASK, TASK_FILE, Task, read_task_file
from bfdl_tff.errors import DataError

DATA_ENTRY_NAMES = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv",
                    "Data_Entry_2017.csv.gz", "Data_Entry_2017_v2020.csv.gz")
CHEXNET_LISTS = ("train_list.txt", "val_list.txt", "test_list.txt")
LABELS_NAME = "image_labels.csv"
SITES_NAME = "synthetic_sites.csv"
_DATA_ENTRY_COLUMNS = (
    "Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
    "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]",
)
_IMAGE_RE = re.compile(r"^\d+_\d+\.png$")
_AGE_RE = re.compile(r"^(\d+)([YMD]?)$")
_GZ_ERRORS = (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile)


def _open_text(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def detect_data_entry_layout(path: str | Path) -> str:
    """``"2017"`` (trailing empty column, as NIH 2017 / Kaggle) or ``"v2020"``; else DataError."""
    path = Path(path)
    try:
        with _open_text(path) as fh:
            header = fh.readline().rstrip("\r\n")
    except _GZ_ERRORS as e:
        raise DataError(f"{path}: cannot read: {e}") from None
    cols = [c.strip() for c in header.split(",")]
    if tuple(cols) == _DATA_ENTRY_COLUMNS:
        return "v2020"
    if tuple(cols[:-1]) == _DATA_ENTRY_COLUMNS and cols[-1] == "":
        return "2017"
    known = set(_DATA_ENTRY_COLUMNS)
    unknown = [c for c in cols if c and c not in known]
    what = f"unknown column(s) {unknown[:5]}" if unknown else f"header {header[:160]!r}"
    raise DataError(
        f"{path}: unknown Data_Entry layout ({what}); expected the 2017 or v2020 NIH layout "
        f"({','.join(_DATA_ENTRY_COLUMNS)}[,])"
    )


def _finish_metadata(df: pd.DataFrame, y: np.ndarray, *, source: str, labels: Sequence[str] = FINDINGS,
                     nih_names: bool = True) -> pd.DataFrame:
    if nih_names:
        bad = ~df["image"].str.match(_IMAGE_RE)
        if bad.any():
            raise DataError(f"{source}: image name {df['image'][bad].iloc[0]!r} is not of the NIH form 00000001_000.png")
    dup = df["image"][df["image"].duplicated()]
    if len(dup):
        raise DataError(f"{source}: {len(dup)} duplicate image(s), first: {', '.join(dup.iloc[:5])}")
    if nih_names:
        prefix = df["image"].str.split("_").str[0].astype(np.int64)
        if "patient_id" in df:
            mism = prefix != df["patient_id"]
            if mism.any():
                i = int(np.flatnonzero(mism.to_numpy())[0])
                raise DataError(f"{source}: row {i + 2}: Patient ID {df['patient_id'].iloc[i]} does not match image {df['image'].iloc[i]}")
        else:
            df["patient_id"] = prefix
    lab = pd.DataFrame(y.astype(np.int8), columns=list(labels), index=df.index)
    return pd.concat([df, lab], axis=1)


def _check_field_counts(path: Path, ncol: int, layout: str) -> None:
    try:
        with _open_text(path) as fh:
            for ln, fields in enumerate(csv.reader(fh), 1):
                if fields and len(fields) != ncol:
                    raise DataError(f"{path}: malformed CSV: line {ln} has {len(fields)} fields, the {layout} layout has {ncol}")
    except (csv.Error, *_GZ_ERRORS) as e:
        raise DataError(f"{path}: unreadable: {e}") from None


def read_data_entry(path: str | Path) -> pd.DataFrame:
    """Read NIH ``Data_Entry_2017.csv`` (either layout, plain or ``.gz``) -> columns ``image,
    patient_id, follow_up, age, gender, view, <14 findings>``; validates names, IDs and labels."""
    path = Path(path)
    layout = detect_data_entry_layout(path)
    ncol = len(_DATA_ENTRY_COLUMNS) + (1 if layout == "2017" else 0)
    _check_field_counts(path, ncol, layout)
    try:
        raw = pd.read_csv(path, header=None, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                          names=[f"c{i}" for i in range(ncol)], skiprows=1, compression="infer")
    except (pd.errors.ParserError, ValueError, *_GZ_ERRORS) as e:
        raise DataError(f"{path}: malformed CSV: {str(e).splitlines()[0]}") from None
    if raw.empty:
        raise DataError(f"{path}: no rows")
    first = raw.iloc[:, :len(_DATA_ENTRY_COLUMNS)]
    short = (first.isna() | (first == "")).any(axis=1)
    if short.any():
        i = int(np.flatnonzero(short.to_numpy())[0])
        raise DataError(f"{path}: row {i + 2}: missing fields (expected {len(_DATA_ENTRY_COLUMNS)})")
    df = pd.DataFrame({"image": raw["c0"].str.strip()})
    pid = pd.to_numeric(raw["c3"], errors="coerce")
    if pid.isna().any():
        i = int(np.flatnonzero(pid.isna().to_numpy())[0])
        raise DataError(f"{path}: row {i + 2}: Patient ID {raw['c3'].iloc[i]!r} is not an integer")
    df["patient_id"] = pid.astype(np.int64)
    df["follow_up"] = pd.to_numeric(raw["c2"], errors="coerce").fillna(-1).astype(np.int64)
    # 2017 files write ages as integers (a few releases as "058Y"); keep years
    age = raw["c4"].str.extract(_AGE_RE)
    years = pd.to_numeric(age[0], errors="coerce")
    years = np.where(age[1] == "M", years / 12.0, np.where(age[1] == "D", years / 365.0, years))
    df["age"] = years
    df["gender"] = raw["c5"].str.strip()
    df["view"] = raw["c6"].str.strip()
    y = parse_many(raw["c1"], source=str(path))
    return _finish_metadata(df, y, source=str(path))


def read_chexnet_lists(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Read CheXNet label lists (``<image> <14 x 0/1>`` per line) -> ``image, patient_id, list, <14>``."""
    frames = []
    for p in paths:
        p = Path(p)
        names, rows = [], []
        opener = gzip.open if p.name.endswith(".gz") else open
        with opener(p, "rt", encoding="utf-8") as fh:
            for ln, line in enumerate(fh, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 1 + NUM_FINDINGS:
                    raise DataError(f"{p}: line {ln}: expected an image name and {NUM_FINDINGS} labels, got {len(parts)} fields")
                if any(v not in ("0", "1") for v in parts[1:]):
                    raise DataError(f"{p}: line {ln}: labels must be 0 or 1")
                names.append(parts[0])
                rows.append([int(v) for v in parts[1:]])
        if not names:
            raise DataError(f"{p}: empty label list")
        df = pd.DataFrame({"image": names})
        df["list"] = p.name.split("_list")[0]
        frames.append((df, np.array(rows, dtype=np.int8)))
    df = pd.concat([f for f, _ in frames], ignore_index=True)
    y = np.concatenate([r for _, r in frames])
    return _finish_metadata(df, y, source=", ".join(str(p) for p in paths))


def read_task_labels(path: str | Path, task: Task) -> pd.DataFrame:
    """Read ``image_labels.csv`` of the task layout -> ``image, patient_id[, split], <labels>``."""
    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, *_GZ_ERRORS) as e:
        raise DataError(f"{path}: malformed CSV: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    cols = list(raw.columns)
    has_split = len(cols) > 2 and cols[2] == "split"
    want = ["image", "patient_id", *(["split"] if has_split else []), *task.labels]
    if cols != want:
        unknown = [c for c in cols if c not in want]
        missing = [c for c in want if c not in cols]
        raise DataError(f"{path}: columns do not match {path.parent / TASK_FILE} "
                        f"({'unknown columns ' + str(unknown[:5]) + '; ' if unknown else ''}"
                        f"{'missing columns ' + str(missing[:5]) + '; ' if missing else ''}"
                        f"expected image,patient_id[,split],{','.join(task.labels[:5])}{',...' if len(task.labels) > 5 else ''})")
    if raw.empty:
        raise DataError(f"{path}: no rows")
    df = pd.DataFrame({"image": raw["image"].str.strip()})
    bad = ~df["image"].str.endswith(".png") | df["image"].str.contains("/", regex=False)
    if bad.any():
        raise DataError(f"{path}: row {int(np.flatnonzero(bad.to_numpy())[0]) + 2}: image {df['image'][bad].iloc[0]!r} is not a .png file name")
    pid = pd.to_numeric(raw["patient_id"], errors="coerce")
    badp = pid.isna() | (pid < 0) | (pid != pid.round())
    if badp.any():
        i = int(np.flatnonzero(badp.to_numpy())[0])
        raise DataError(f"{path}: row {i + 2}: patient_id {raw['patient_id'].iloc[i]!r} is not a non-negative integer")
    df["patient_id"] = pid.astype(np.int64)
    if has_split:
        sp = raw["split"].str.strip()
        bads = ~sp.isin(("train", "val", "test"))
        if bads.any():
            i = int(np.flatnonzero(bads.to_numpy())[0])
            raise DataError(f"{path}: row {i + 2}: split {sp.iloc[i]!r} is not train, val or test")
        df["split"] = sp
    y = raw[list(task.labels)].apply(pd.to_numeric, errors="coerce")
    if y.isna().any().any():
        i = int(np.flatnonzero(y.isna().any(axis=1).to_numpy())[0])
        raise DataError(f"{path}: row {i + 2}: label values must be 0 or 1")
    task.check_y(y.to_numpy(), source=str(path))
    return _finish_metadata(df, y.to_numpy(), source=str(path), labels=task.labels, nih_names=False)


def find_metadata(root: str | Path) -> tuple[str, list[Path]]:
    """Locate the label metadata: ``("data_entry", [csv])``, ``("chexnet", [lists...])`` or
    ``("task", [image_labels.csv, task.json])``."""
    root = Path(root)
    for n in DATA_ENTRY_NAMES:
        if (root / n).is_file():
            return "data_entry", [root / n]
    for d in (root, root / "labels"):
        lists = [d / n for n in CHEXNET_LISTS if (d / n).is_file()]
        if lists:
            return "chexnet", lists
    if (root / LABELS_NAME).is_file():
        if not (root / TASK_FILE).is_file():
            raise DataError(f"{root / LABELS_NAME}: needs {root / TASK_FILE} (the task: kind and labels)")
        return "task", [root / LABELS_NAME, root / TASK_FILE]
    if not root.is_dir():
        raise DataError(f"{root}: dataset directory not found")
    raise DataError(f"{root}: no label metadata (Data_Entry_2017.csv[.gz], CheXNet train/val/test_list.txt in the "
                    f"root or labels/, or {LABELS_NAME} + {TASK_FILE})")


def _stamp(paths: Sequence[Path]) -> tuple:
    return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths)


def _read_sites(df: pd.DataFrame, sp: Path) -> pd.DataFrame:
    try:
        sites = pd.read_csv(sp, dtype={"Patient ID": np.int64, "Site": np.int64})
    except (ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{sp}: malformed site list: {str(e).splitlines()[0]}") from None
    if list(sites.columns) != ["Patient ID", "Site"]:
        raise DataError(f"{sp}: expected columns 'Patient ID,Site', got {list(sites.columns)}")
    m = dict(zip(sites["Patient ID"], sites["Site"]))
    site = df["patient_id"].map(m)
    if site.isna().any():
        raise DataError(f"{sp}: no site for patient {int(df['patient_id'][site.isna()].iloc[0])}")
    df["site"] = site.astype(np.int64)
    return df


@functools.lru_cache(maxsize=8)
def _read_metadata_cached(kind: str, stamp: tuple, sites_stamp: tuple) -> tuple[pd.DataFrame, Task]:
    paths = [Path(s[0]) for s in stamp]
    if kind == "data_entry":
        df, task = read_data_entry(paths[0]), NIH_TASK
    elif kind == "chexnet":
        df, task = read_chexnet_lists(paths), NIH_TASK
    else:
        task = read_task_file(paths[1].parent)
        assert task is not None
        df = read_task_labels(paths[0], task)
    if sites_stamp:
        df = _read_sites(df, Path(sites_stamp[0][0]))
    return df, task


def read_metadata(root: str | Path) -> pd.DataFrame:
    """Labels of every image of the dataset at ``root`` (cached while the files are unchanged).

    Columns: ``image, patient_id, <task labels>`` plus ``site`` for synthetic data and whatever
    the source carries (``age``, ``gender``, ``view`` / ``list`` / ``split``).
    ``df.attrs['source']`` names the file(s), ``df.attrs['task']`` is the :class:`Task`."""
    kind, paths = find_metadata(root)
    sp = Path(root) / SITES_NAME
    df, task = _read_metadata_cached(kind, _stamp(paths), _stamp([sp]) if sp.is_file() else ())
    df = df.copy()
    df.attrs["source"] = ", ".join(str(p) for p in paths if p.name != TASK_FILE)
    df.attrs["task"] = task
    return df


def metadata_task(meta: pd.DataFrame) -> Task:
    """The task of a metadata frame (:data:`NIH_TASK` if it carries none)."""
    return meta.attrs.get("task") or NIH_TASK


def metadata_label_frame(meta: pd.DataFrame) -> pd.DataFrame:
    """The ``image, patient_id, <task labels>`` part of the metadata."""
    return meta.loc[:, ["image", "patient_id", *metadata_task(meta).labels]]
