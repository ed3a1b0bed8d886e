"""Tasks (issue 15.1): kinds, validation, inference from MedMNIST-style labels, encoding, the
task file, compatibility checks, and ImageSet / manifests carrying their task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bfdl_tff.data import manifest, tasks
from bfdl_tff.data.labels import FINDINGS
from bfdl_tff.data.loader import ImageSet
from bfdl_tff.data.tasks import NIH_TASK, Task
from bfdl_tff.errors import DataError


def test_task_validation_and_record_roundtrip():
    t = Task("binary", ("pneumonia",))
    assert t.num_outputs == 1 and t.describe() == "binary (pneumonia)"
    assert Task.from_record(t.to_record()) == t and hash(t) == hash(Task("binary", ["pneumonia"]))  # type: ignore[arg-type]
    assert NIH_TASK.kind == "multilabel" and NIH_TASK.labels == FINDINGS
    for kind, labels, msg in (("binary", ("a", "b"), "one label"), ("multiclass", ("a",), "at least 2"),
                              ("regression", ("a",), "kind must be"), ("multilabel", ("a", "a"), "unique"),
                              ("multilabel", (), "non-empty")):
        with pytest.raises(ValueError, match=msg):
            Task(kind, labels)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"t\.json: a multiclass task has at least 2"):
        Task.from_record({"kind": "multiclass", "labels": ["x"]}, source="t.json")
    with pytest.raises(DataError, match=r"t\.json: a task is"):
        Task.from_record({"kind": "binary"}, source="t.json")


def test_check_y_and_compatibility():
    mc = Task("multiclass", ("a", "b", "c"))
    mc.check_y(np.eye(3)[[0, 2, 1]], source="s")
    with pytest.raises(DataError, match="row 1 is not one-hot"):
        mc.check_y(np.array([[1, 0, 0], [1, 1, 0]]), source="s")
    with pytest.raises(DataError, match=r"shape \(2, 2\), the multiclass over 3 classes task needs \[N, 3\]"):
        mc.check_y(np.zeros((2, 2)), source="s")
    with pytest.raises(DataError, match="must be 0 or 1"):
        Task("binary", ("p",)).check_y(np.array([[2.0]]), source="s")
    with pytest.raises(DataError, match=r"data: task binary \(pneumonia\) \[pneumonia\] differs from model's multilabel over 14 labels"):
        Task("binary", ("pneumonia",)).check_compatible(NIH_TASK, source="data", other_source="model")
    NIH_TASK.check_compatible(Task("multilabel", FINDINGS), source="a", other_source="b")


@pytest.mark.parametrize(
    "arrays, kind, names, want",
    [
        ([np.array([[0], [1], [1]])], None, None, Task("binary", ("label_1",))),
        ([np.array([[0], [1]])], None, ("pneumonia",), Task("binary", ("pneumonia",))),
        ([np.array([[0], [1]])], "multiclass", ("normal", "pneumonia"), Task("multiclass", ("normal", "pneumonia"))),
        ([np.array([[0], [3]]), np.array([[1]])], None, None, Task("multiclass", tuple(f"class_{i}" for i in range(4)))),
        ([np.array([[0, 1], [1, 1]])], None, None, Task("multilabel", ("label_0", "label_1"))),
        ([np.array([0, 1, 1])], None, None, Task("binary", ("label_1",))),
        # a val split that misses the highest class still gets every named class's column
        ([np.array([[0], [1]])], "multiclass", ("a", "b", "c"), Task("multiclass", ("a", "b", "c"))),
    ],
)
def test_infer_task(arrays, kind, names, want):
    assert tasks.infer_task(arrays, kind=kind, names=names) == want


def test_infer_task_rejects_inconsistent_labels():
    with pytest.raises(DataError, match=r"x\.npz: a binary task needs one 0/1 label column, got 1 column\(s\) with values up to 4"):
        tasks.infer_task([np.array([[0], [4]])], kind="binary", source="x.npz")
    with pytest.raises(DataError, match="2 label columns must be 0/1"):
        tasks.infer_task([np.array([[0, 2]])])
    with pytest.raises(DataError, match="same C"):
        tasks.infer_task([np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(DataError, match="non-negative integers"):
        tasks.infer_task([np.array([[0.5]])])
    with pytest.raises(DataError, match=r"1 label name\(s\) given for a multilabel task with 2 column"):
        tasks.infer_task([np.zeros((2, 2))], names=("a",))


def test_encode_labels():
    mc = Task("multiclass", ("a", "b", "c"))
    y = tasks.encode_labels(np.array([[2], [0]]), mc)
    assert y.dtype == np.float32 and y.tolist() == [[0, 0, 1], [1, 0, 0]]
    with pytest.raises(DataError, match=r"class index 3 outside 0\.\.2"):
        tasks.encode_labels(np.array([[3]]), mc)
    b = tasks.encode_labels(np.array([1, 0]), Task("binary", ("p",)))
    assert b.shape == (2, 1) and b[:, 0].tolist() == [1, 0]


def test_task_file(tmp_path: Path):
    assert tasks.read_task_file(tmp_path) is None and tasks.directory_task(tmp_path) == NIH_TASK
    t = Task("binary", ("pneumonia",))
    tasks.write_task_file(tmp_path, t)
    assert tasks.directory_task(tmp_path) == t
    (tmp_path / "task.json").write_text("{not json")
    with pytest.raises(DataError, match=r"task\.json: unreadable task file"):
        tasks.directory_task(tmp_path)


def test_image_set_carries_task_and_checks_y():
    t = Task("binary", ("pneumonia",))
    s = ImageSet(images=["a.png", "b.png"], patient_ids=np.array([1, 2]), x=np.zeros((2, 4, 4, 1), np.float32),
                 y=np.array([[1.0], [0.0]], np.float32), task=t)
    assert s.subset([1]).task == t and s.subset([1]).y.tolist() == [[0.0]]
    with pytest.raises(ValueError, match=r"y has shape \(2, 14\), the binary \(pneumonia\) task needs \[N, 1\]"):
        ImageSet(images=["a.png", "b.png"], patient_ids=np.array([1, 2]), x=np.zeros((2, 4, 4, 1), np.float32),
                 y=np.zeros((2, 14), np.float32), task=t)
    # default: the NIH task (what every caller that predates tasks builds)
    assert ImageSet(images=["a"], patient_ids=np.array([1]), x=np.zeros((1, 2, 2, 1)), y=np.zeros((1, 14))).task == NIH_TASK


def _binary_frame(n: int, split: str = "train") -> pd.DataFrame:
    return pd.DataFrame({"image": [f"{i + 1:08d}_000.png" for i in range(n)], "patient_id": np.arange(1, n + 1),
                         "split": split, "pneumonia": np.arange(n) % 2})


def test_manifest_follows_directory_task(tmp_path: Path):
    t = Task("binary", ("pneumonia",))
    d = tmp_path / "m"
    tasks.write_task_file(d, t)
    manifest.write_manifest(d / "hospital_a.csv", _binary_frame(6), task=t)
    manifest.write_manifest(d / "test.csv", _binary_frame(4, "test").assign(patient_id=lambda f: f.patient_id + 100,
                                                                        image=lambda f: [f"{i + 101:08d}_000.png" for i in range(4)]), task=t)
    assert (d / "hospital_a.csv").read_text().splitlines()[0] == "image,patient_id,split,pneumonia"
    frames = manifest.read_manifest_dir(d)
    assert manifest.manifest_task(d) == t and frames["hospital_a"].attrs["task"] == t
    # the same file read as an NIH manifest is refused, naming the missing findings
    with pytest.raises(DataError, match=r"hospital_a\.csv: not a manifest \(missing columns \['Atelectasis'"):
        manifest.read_manifest(d / "hospital_a.csv", task=NIH_TASK)
    (d / "task.json").unlink()  # without task.json the directory holds the NIH task
    with pytest.raises(DataError, match=r"unknown columns \['pneumonia'\]"):
        manifest.read_manifest_dir(d)


def test_multiclass_manifest_must_be_one_hot(tmp_path: Path):
    t = Task("multiclass", ("a", "b", "c"))
    df = pd.DataFrame({"image": ["00000001_000.png", "00000002_000.png"], "patient_id": [1, 2], "split": "train",
                       "a": [1, 1], "b": [0, 1], "c": [0, 0]})
    with pytest.raises(DataError, match=r"hospital_a\.csv: row 3: 2 classes set; a multiclass manifest is one-hot"):
        manifest.write_manifest(tmp_path / "hospital_a.csv", df, task=t)
    assert not (tmp_path / "hospital_a.csv").exists()
