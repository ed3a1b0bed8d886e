"""RunDir additions for evaluation (issues 14.4, 15.1): the dataset's task in ``data.json``
(``write_data_record(task=...)`` / ``task()``), per-image predictions in
``predictions/<split>.npz`` (``save_predictions`` / ``load_predictions``) from which bootstrap
intervals are computed without the model, and ``evaluations/`` for ``bfdl evaluate``."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from bfdl_tff import stats
from bfdl_tff.config import DataConfig, ExperimentConfig
from bfdl_tff.data.tasks import NIH_TASK, Task
from bfdl_tff.errors import RunDirError
from bfdl_tff.runs import NIH_TASK_RECORD, RunDir

BINARY = {"kind": "binary", "labels": ["pneumonia"]}


def _run(tmp_path, **data) -> RunDir:
    return RunDir.create(tmp_path / "run", ExperimentConfig(name="t", arm="centralized", data=DataConfig(**data)))


def _preds(n: int = 30, n_lab: int = 14, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, n_lab)) < 0.3).astype(np.float32)
    return [f"{i + 1:08d}_000.png" for i in range(n)], y, (0.5 * y + rng.random(y.shape)).astype(np.float64)


def test_nih_task_record_equals_the_data_layers_nih_task():
    assert {"kind": NIH_TASK_RECORD["kind"], "labels": list(NIH_TASK_RECORD["labels"])} == NIH_TASK.to_record()


def test_task_recorded_read_back_and_defaults(tmp_path):
    run = _run(tmp_path)
    assert run.task() == NIH_TASK.to_record()  # no data.json yet: the NIH task
    run.write_data_record(root=tmp_path / "d", manifest_dir=tmp_path / "m", synthetic=True)
    assert run.task() == NIH_TASK.to_record()  # data.json without a task (older runs): the NIH task
    run.write_data_record(root=tmp_path / "d", manifest_dir=tmp_path / "m", synthetic=False, task=Task("binary", ("pneumonia",)).to_record())
    assert run.task() == BINARY and Task.from_record(run.task()) == Task("binary", ("pneumonia",))
    assert json.loads(run.data_file.read_text())["task"] == BINARY
    assert RunDir.open(run.path).task() == BINARY


def test_task_errors(tmp_path):
    run = _run(tmp_path, source="medmnist", npz="x.npz")
    run.write_data_record(root=tmp_path, manifest_dir=tmp_path, synthetic=False)
    with pytest.raises(RunDirError, match="no task recorded"):
        run.task()
    with pytest.raises(ValueError, match="task record"):
        run.write_data_record(root=tmp_path, manifest_dir=tmp_path, synthetic=False, task={"kind": "binary"})
    rec = json.loads(run.data_file.read_text())
    rec["task"] = {"kind": "binary", "labels": "pneumonia"}
    run.data_file.write_text(json.dumps(rec))
    with pytest.raises(RunDirError, match=r"data.json: task"):
        run.task()


def test_predictions_round_trip_and_bootstrap_from_the_file(tmp_path):
    run = _run(tmp_path)
    ids, y, s = _preds()
    path = run.save_predictions(image_ids=ids, y_true=y, scores=s)
    assert path == run.path / "predictions" / "test.npz" == run.predictions_file()
    assert sorted(p.name for p in path.parent.iterdir()) == ["test.npz"]  # no temporary file left
    p = run.load_predictions()
    assert p.split == "test" and p.image_ids == tuple(ids) and len(p) == 30
    assert p.labels == NIH_TASK.labels  # default: the run's task labels
    assert p.scores.dtype == np.float32 and p.y_true.dtype == np.float32
    np.testing.assert_array_equal(p.y_true, y)
    np.testing.assert_array_equal(p.scores, s.astype(np.float32))
    # figures/report: intervals from the result file alone
    a = stats.bootstrap_auc(p.y_true, p.scores, labels=p.labels, n_boot=50, seed=0)
    b = stats.bootstrap_auc(y, s.astype(np.float32), labels=NIH_TASK.labels, n_boot=50, seed=0)
    assert a.to_record() == b.to_record()
    run.save_predictions(image_ids=ids[:5], y_true=y[:5, :1], scores=s[:5, :1], split="val", labels=["x"])
    assert run.load_predictions("val").labels == ("x",) and len(run.load_predictions()) == 30


@pytest.mark.parametrize("change,match", [
    (lambda ids, y, s: (ids[:-1], y, s), "image ids for"),
    (lambda ids, y, s: (ids, y, s[:, :3]), "scores have shape"),
    (lambda ids, y, s: (ids, y * 2, s), "0/1"),
    (lambda ids, y, s: (ids, y, np.where(y > 0, np.nan, s)), "NaN"),
    (lambda ids, y, s: ([ids[0]] * len(ids), y, s), "not unique"),
    (lambda ids, y, s: (ids, y[:, 0], s[:, 0]), r"\[N, L\]"),
])
def test_save_predictions_refuses_inconsistent_input(tmp_path, change, match):
    run = _run(tmp_path)
    ids, y, s = change(*_preds())
    with pytest.raises(ValueError, match=match):
        run.save_predictions(image_ids=ids, y_true=y, scores=s)
    assert not run.predictions_dir.exists()
    with pytest.raises(ValueError, match="label names"):
        run.save_predictions(image_ids=_preds()[0], y_true=_preds()[1], scores=_preds()[2], labels=["a", "b"])
    with pytest.raises(ValueError, match="split"):
        run.predictions_file("../x")


def test_load_predictions_errors_name_the_file(tmp_path):
    run = _run(tmp_path)
    with pytest.raises(RunDirError, match=r"predictions/test.npz: missing"):
        run.load_predictions()
    run.predictions_dir.mkdir()
    buf = io.BytesIO()
    np.savez(buf, scores=np.zeros((2, 1)))
    run.predictions_file().write_bytes(buf.getvalue())
    with pytest.raises(RunDirError, match=r"test.npz: not a predictions file \(missing arrays \['image_ids', 'labels', 'y_true'\]\)"):
        run.load_predictions()
    run.predictions_file().write_bytes(b"garbage")
    with pytest.raises(RunDirError, match="test.npz: unreadable predictions file"):
        run.load_predictions()
    buf = io.BytesIO()
    np.savez(buf, image_ids=np.array(["a", "b"]), y_true=np.zeros((2, 1)), scores=np.zeros((3, 1)), labels=np.array(["x"]))
    run.predictions_file().write_bytes(buf.getvalue())
    with pytest.raises(RunDirError, match="scores have shape"):
        run.load_predictions()


def test_evaluation_file_names(tmp_path):
    run = _run(tmp_path)
    assert run.evaluation_file("real_sample_256") == run.path / "evaluations" / "real_sample_256.json"
    assert run.evaluation_file("a b/../c").parent == run.evaluations_dir
    assert run.evaluation_file("..").name == "external.json"
