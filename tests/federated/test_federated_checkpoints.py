"""Checkpoint store (save / mark / latest / prune / clear) and the metrics log, without TFF."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from bfdl_tff.federated.checkpoints import CheckpointStore
from bfdl_tff.federated.reporting import BASE_COLUMNS, EXTRA_COLUMNS, MetricsLog


def _arrays(r: int) -> list[np.ndarray]:
    return [np.full((2, 3), r, dtype=np.float32), np.arange(r + 1, dtype=np.int64)]


def test_save_then_latest_round_trips_bit_for_bit(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints")
    assert store.latest() is None
    for r in (1, 2, 3):
        store.save(r, _arrays(r), {"rows": [{"round": r}], "cum_bytes": 10 * r, "hooks_done": False})
    latest = store.latest()
    assert latest is not None and latest.round_num == 3 and not latest.hooks_done
    assert latest.meta["cum_bytes"] == 30 and latest.meta["round"] == 3
    for a, b in zip(store.load_arrays(latest), _arrays(3)):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_mark_records_hooks_done_atomically(tmp_path):
    store = CheckpointStore(tmp_path)
    ckpt = store.save(1, _arrays(1), {"hooks_done": False, "epsilon": float("inf")})
    assert json.loads((tmp_path / "round_0001.json").read_text())["epsilon"] is None  # JSON-safe
    store.mark(ckpt, hooks_done=True)
    assert store.latest().hooks_done
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_incomplete_checkpoints_are_ignored(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(1, _arrays(1), {})
    store.save(2, _arrays(2), {})
    (tmp_path / "round_0002.npz").unlink()  # metadata without state: not complete
    (tmp_path / "round_0003.npz").write_bytes(b"")  # state without metadata: not complete
    (tmp_path / "round_0004.json").write_text("{not json")
    assert store.latest().round_num == 1


def test_prune_keeps_the_newest_and_clear_removes_all(tmp_path):
    store = CheckpointStore(tmp_path)
    for r in range(1, 6):
        store.save(r, _arrays(r), {})
    store.prune(2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "round_0004.json", "round_0004.npz", "round_0005.json", "round_0005.npz"]
    store.prune(0)  # keep all
    assert len(list(tmp_path.iterdir())) == 4
    store.clear()
    assert list(tmp_path.iterdir()) == [] and store.latest() is None


def test_metrics_log_writes_the_csv_columns_and_blanks(tmp_path):
    findings = ["Atelectasis", "Mass"]
    log = MetricsLog(tmp_path / "metrics.csv", findings)
    log.restore([])
    row = log.append({"round": 1, "wall_s": 1.5, "train_loss": float("nan"), "epsilon": None, "auc_Mass": 0.75,
                      "participants": "a;b", "update_non_finite": 0})
    assert row["train_loss"] is None
    with open(tmp_path / "metrics.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == BASE_COLUMNS + ["auc_Atelectasis", "auc_Mass"] + EXTRA_COLUMNS
    assert rows == [{**{c: "" for c in reader.fieldnames}, "round": "1", "wall_s": "1.5", "auc_Mass": "0.75",
                     "participants": "a;b", "update_non_finite": "0"}]


def test_tensorboard_log_is_rewritten_from_rows(tmp_path):
    pytest.importorskip("tensorflow")
    from bfdl_tff.federated.tensorboard import TensorBoardLog, read_scalars

    tb = TensorBoardLog(tmp_path)
    tb.reset([{"round": 1, "train_loss": 0.5, "participants": "a"}])
    tb.write({"round": 2, "train_loss": 0.25, "epsilon": None, "cum_bytes": 7})
    tb.close()
    assert read_scalars(tmp_path) == {"train_loss": {1: 0.5, 2: 0.25}, "cum_bytes": {2: 7.0}}
    # resume from round 1's checkpoint: round 2 (not checkpointed) is gone from the events
    tb = TensorBoardLog(tmp_path)
    tb.reset([{"round": 1, "train_loss": 0.5}])
    tb.close()
    assert read_scalars(tmp_path) == {"train_loss": {1: 0.5}}
