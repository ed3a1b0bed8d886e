"""Checkpoint store (FileProgramStateManager state + JSON metadata: save / mark / latest / prune /
clear, legacy .npz checkpoints) and the metrics log. No TFF execution context is started."""

from __future__ import annotations

import csv
import json

import numpy as np

from bfdl_tff.federated.checkpoints import CheckpointStore
from bfdl_tff.federated.reporting import BASE_COLUMNS, EXTRA_COLUMNS, MetricsLog
from bfdl_tff.runs import save_weights_npz


def _arrays(r: int) -> list[np.ndarray]:
    rng = np.random.default_rng(r)
    return [rng.standard_normal((2, 3)).astype(np.float32), np.arange(r + 1, dtype=np.int64),
            np.asarray(r, dtype=np.int32), np.asarray(np.nan, dtype=np.float32)]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
                                    for x, y in zip(a, b))


def test_save_then_latest_round_trips_bit_for_bit(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints")
    assert store.latest() is None
    for r in (1, 2, 3):
        store.save(r, _arrays(r), {"rows": [{"round": r}], "cum_bytes": 10 * r, "hooks_done": False})
    latest = store.latest()
    assert latest is not None and latest.round_num == 3 and not latest.hooks_done
    assert latest.meta["cum_bytes"] == 30 and latest.meta["round"] == 3 and latest.meta["state_tensors"] == 4
    assert latest.state_path == tmp_path / "checkpoints" / "state" / "program_state_3" and latest.state_path.is_dir()
    assert _same(CheckpointStore(tmp_path / "checkpoints").load_arrays(latest), _arrays(3))  # a fresh store (resume)


def test_mark_records_hooks_done_atomically(tmp_path):
    store = CheckpointStore(tmp_path)
    ckpt = store.save(1, _arrays(1), {"hooks_done": False, "epsilon": float("inf")})
    assert json.loads((tmp_path / "round_0001.json").read_text())["epsilon"] is None  # JSON-safe
    store.mark(ckpt, hooks_done=True)
    assert store.latest().hooks_done
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_incomplete_checkpoints_are_ignored_and_a_crashed_save_is_redone(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(1, _arrays(1), {})
    store.save(2, _arrays(2), {})
    (tmp_path / "round_0002.json").unlink()  # crash after round 2's state, before its metadata
    (tmp_path / "round_0003.json").write_text('{"round": 3, "state_tensors": 4}')  # metadata without state
    (tmp_path / "round_0004.json").write_text("{not json")
    (tmp_path / "state" / "program_state_5_temp1234").mkdir()  # an interrupted save
    assert store.latest().round_num == 1
    store.save(2, _arrays(7), {})  # resume re-trains round 2: the orphaned state is replaced
    assert _same(store.load_arrays(store.latest()), _arrays(7))


def test_prune_keeps_the_newest_and_clear_removes_all(tmp_path):
    store = CheckpointStore(tmp_path)
    for r in range(1, 6):
        store.save(r, _arrays(r), {})
    store.prune(2)
    assert sorted(p.name for p in tmp_path.glob("round_*")) == ["round_0004.json", "round_0005.json"]
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["program_state_4", "program_state_5"]
    store.prune(0)  # keep all
    assert len(list(tmp_path.glob("round_*"))) == 2
    store.clear()
    assert list(tmp_path.iterdir()) == [] and store.latest() is None


def test_legacy_npz_checkpoints_still_resume(tmp_path):
    """Runs checkpointed before the program-state manager (round_TTTT.npz + .json) resume."""
    save_weights_npz(tmp_path / "round_0003.npz", _arrays(3))
    (tmp_path / "round_0003.json").write_text(json.dumps({"round": 3, "rows": [], "hooks_done": True}))
    store = CheckpointStore(tmp_path)
    latest = store.latest()
    assert latest.round_num == 3 and latest.state_path.suffix == ".npz"
    assert _same(store.load_arrays(latest), _arrays(3))
    store.save(4, _arrays(4), {})
    store.prune(1)
    assert sorted(p.name for p in tmp_path.glob("round_*")) == ["round_0004.json"]


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
