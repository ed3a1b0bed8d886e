"""What a dataset's labels mean: the task (issue 15.1; the paper's task, 3.1, is NIH's 14-finding
multi-label classification).

Every :class:`~bfdl_tff.data.loader.ImageSet` carries a :class:`Task` and its ``y`` is float32
``[N, len(task.labels)]``:

- ``multilabel``: one 0/1 column per label, any number of 1s per row (NIH ChestX-ray14, the
  synthetic stand-in, ChestMNIST);
- ``binary``: one 0/1 column, the positive class (PneumoniaMNIST: ``("pneumonia",)``);
- ``multiclass``: one-hot, exactly one 1 per row (e.g. OrganAMNIST's 11 organs).

A manifest directory or a dataset in the task layout stores its task in ``task.json``
(``{"kind": ..., "labels": [...]}``); a directory without one holds the NIH task (the checked-in
NIH manifests predate tasks).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, get_args

import numpy as np

from bfdl_tff.data.labels import FINDINGS
from bfdl_tff.errors import DataError
from bfdl_tff.io_utils import atomic_write_json

TaskKind = Literal["multilabel", "binary", "multiclass"]
TASK_KINDS: tuple[str, ...] = get_args(TaskKind)
TASK_FILE = "task.json"


@dataclass(frozen=True)
class Task:
    """A dataset's task: its kind and the names of ``y``'s columns, in order."""

    kind: TaskKind
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task kind must be one of {', '.join(TASK_KINDS)}, got {self.kind!r}")
        labels = tuple(self.labels)
        object.__setattr__(self, "labels", labels)
        if not labels or not all(isinstance(s, str) and s.strip() for s in labels):
            raise ValueError(f"task labels must be non-empty strings, got {labels!r}")
        if len(set(labels)) != len(labels):
            raise ValueError(f"task labels must be unique, got {labels!r}")
        if self.kind == "binary" and len(labels) != 1:
            raise ValueError(f"a binary task has one label (the positive class), got {len(labels)}")
        if self.kind == "multiclass" and len(labels) < 2:
            raise ValueError(f"a multiclass task has at least 2 classes, got {len(labels)}")

    @property
    def num_outputs(self) -> int:
        """Columns of ``y`` (and of a model's output for this task)."""
        return len(self.labels)

    def describe(self) -> str:
        """``"binary (pneumonia)"``, ``"multilabel over 14 labels"``, ..."""
        if self.kind == "binary":
            return f"binary ({self.labels[0]})"
        return f"{self.kind} over {len(self.labels)} {'classes' if self.kind == 'multiclass' else 'labels'}"

    def to_record(self) -> dict[str, Any]:
        return {"kind": self.kind, "labels": list(self.labels)}

    @classmethod
    def from_record(cls, rec: Mapping[str, Any], *, source: str = "<task>") -> "Task":
        """Inverse of :meth:`to_record`; a malformed record raises :class:`DataError` naming ``source``."""
        if not isinstance(rec, Mapping) or set(rec) - {"kind", "labels"} or "kind" not in rec or "labels" not in rec:
            raise DataError(f"{source}: a task is {{'kind': ..., 'labels': [...]}}, got {rec!r:.120}")
        labels = rec["labels"]
        if not isinstance(labels, (list, tuple)):
            raise DataError(f"{source}: task labels must be a list, got {type(labels).__name__}")
        try:
            return cls(kind=rec["kind"], labels=tuple(labels))
        except ValueError as e:
            raise DataError(f"{source}: {e}") from None

    def check_y(self, y: np.ndarray, *, source: str) -> None:
        """Raise :class:`DataError` unless ``y`` is ``[N, len(labels)]`` 0/1 (one-hot if multiclass)."""
        y = np.asarray(y)
        if y.ndim != 2 or y.shape[1] != len(self.labels):
            raise DataError(f"{source}: labels have shape {y.shape}, the {self.describe()} task needs [N, {len(self.labels)}]")
        if y.size and not np.isin(y, (0, 1)).all():
            raise DataError(f"{source}: labels must be 0 or 1 for the {self.describe()} task")
        if self.kind == "multiclass" and len(y):
            bad = np.flatnonzero(y.sum(axis=1) != 1)
            if len(bad):
                raise DataError(f"{source}: row {int(bad[0])} is not one-hot ({int(y[bad[0]].sum())} classes set); "
                                f"a multiclass task needs exactly one")

    def check_compatible(self, other: "Task", *, source: str, other_source: str) -> None:
        """Raise :class:`DataError` if ``other`` (e.g. a model's task) differs from this one."""
        if self != other:
            raise DataError(f"{source}: task {self.describe()} [{_short(self.labels)}] differs from "
                            f"{other_source}'s {other.describe()} [{_short(other.labels)}]")


def _short(labels: Sequence[str], n: int = 4) -> str:
    return ", ".join(labels[:n]) + (", ..." if len(labels) > n else "")


#: NIH ChestX-ray14 (and the synthetic stand-in, and ChestMNIST): 14 findings, multi-label.
NIH_TASK = Task("multilabel", FINDINGS)


def read_task_file(directory: str | Path) -> Task | None:
    """The task stored in ``directory/task.json``, or ``None`` if there is no such file."""
    p = Path(directory) / TASK_FILE
    if not p.is_file():
        return None
    try:
        rec = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{p}: unreadable task file: {e}") from None
    return Task.from_record(rec, source=str(p))


def directory_task(directory: str | Path) -> Task:
    """The task of a manifest directory or dataset root: its ``task.json``, else :data:`NIH_TASK`."""
    return read_task_file(directory) or NIH_TASK


def write_task_file(directory: str | Path, task: Task) -> Path:
    """Write ``directory/task.json`` atomically (sorted keys, so regeneration is byte-identical)."""
    p = Path(directory) / TASK_FILE
    atomic_write_json(p, task.to_record())
    return p


def infer_task(labels: Sequence[np.ndarray], *, kind: str | None = None, names: Sequence[str] | None = None,
               source: str = "<labels>") -> Task:
    """The task of raw integer label arrays (MedMNIST style: ``(N, 1)`` class indices or ``(N, C)`` 0/1).

    Inferred: one column with values {0, 1} -> binary; one column with more values -> multiclass
    over ``max + 1`` classes; ``C > 1`` columns of 0/1 -> multilabel. ``kind`` overrides the
    inference (e.g. a 2-class problem as ``multiclass``, or a one-column 0/1 set as binary);
    ``names`` gives the label names (binary: the positive class; else one per column/class),
    otherwise generic names (``label_1`` for binary, ``class_<i>`` / ``label_<i>``)."""
    arrs = [np.asarray(a) for a in labels]
    cols = {a.shape[1] if a.ndim == 2 else (1 if a.ndim == 1 else -1) for a in arrs}
    if len(cols) != 1 or -1 in cols:
        raise DataError(f"{source}: label arrays must all be (N,) or (N, C) with the same C, got shapes {[a.shape for a in arrs]}")
    c = cols.pop()
    allv = np.concatenate([a.reshape(len(a), -1) for a in arrs]) if arrs else np.zeros((0, c))
    if allv.size and (allv.min() < 0 or not np.array_equal(allv, np.round(allv))):
        raise DataError(f"{source}: labels must be non-negative integers")
    vmax = int(allv.max()) if allv.size else 1
    if c == 1:
        guess = "binary" if vmax <= 1 else "multiclass"
        n_classes = max(vmax + 1, 2)
    else:
        if vmax > 1:
            raise DataError(f"{source}: {c} label columns must be 0/1 (multi-label), found value {vmax}")
        guess, n_classes = "multilabel", c
    kind = kind or guess
    if kind not in TASK_KINDS:
        raise DataError(f"{source}: task kind must be one of {', '.join(TASK_KINDS)}, got {kind!r}")
    if kind == "binary" and (c != 1 or vmax > 1):
        raise DataError(f"{source}: a binary task needs one 0/1 label column, got {c} column(s) with values up to {vmax}")
    if kind == "multiclass" and c != 1:
        raise DataError(f"{source}: a multiclass task needs one column of class indices, got {c} columns")
    if kind == "multilabel" and vmax > 1:
        raise DataError(f"{source}: a multilabel task needs 0/1 columns, found value {vmax}")
    width = 1 if kind == "binary" else (n_classes if kind == "multiclass" else c)
    if names is None:
        names = ("label_1",) if kind == "binary" else tuple(f"{'class' if kind == 'multiclass' else 'label'}_{i}" for i in range(width))
    names = tuple(names)
    if kind == "multiclass" and len(names) > width:
        width = len(names)  # classes absent from this file (e.g. a subset) still get their column
    if len(names) != width:
        raise DataError(f"{source}: {len(names)} label name(s) given for a {kind} task with {width} column(s)")
    try:
        return Task(kind, names)  # type: ignore[arg-type]
    except ValueError as e:
        raise DataError(f"{source}: {e}") from None


def encode_labels(raw: np.ndarray, task: Task, *, source: str = "<labels>") -> np.ndarray:
    """Raw integer labels -> float32 ``y`` ``[N, len(task.labels)]`` (multiclass: one-hot)."""
    a = np.asarray(raw)
    if a.ndim == 1:
        a = a[:, None]
    if task.kind == "multiclass":
        if a.shape[1] != 1:
            raise DataError(f"{source}: a multiclass task needs one column of class indices, got {a.shape}")
        idx = a[:, 0].astype(np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(task.labels)):
            raise DataError(f"{source}: class index {int(idx.max() if idx.max() >= len(task.labels) else idx.min())} "
                            f"outside 0..{len(task.labels) - 1}")
        y = np.zeros((len(idx), len(task.labels)), dtype=np.float32)
        y[np.arange(len(idx)), idx] = 1.0
        return y
    y = a.astype(np.float32)
    task.check_y(y, source=source)
    return y
