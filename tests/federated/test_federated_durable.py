"""The runner's half of the durable round protocol (issue 17.1), with hooks that finish a round's
work later than ``on_round_end`` (like the ledger hook's background commit), on the centralized arm
(Keras only, no TFF worker): a checkpoint is marked done only when every hook reports the round
durable and is never pruned before; resume re-announces every round not done, each with its own
weights; a run killed between its last round and the hooks' ``on_end`` is finished by ``--resume``
without rewriting its results."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bfdl_tff.config import ExperimentConfig, from_dict
from bfdl_tff.federated.checkpoints import CheckpointStore
from bfdl_tff.federated.hooks import RecordingHook

SIZE = 16


def _cfg(rounds: int = 4, keep: int = 1) -> ExperimentConfig:
    return from_dict(ExperimentConfig, {
        "name": "durable", "arm": "centralized",
        "model": {"config": "small_cnn", "overrides": {"input_size": SIZE, "width": 4, "conv_layers": 2}},
        "federated": {"rounds": rounds, "batch_size": 8, "client_lr": 0.1, "keep_checkpoints": keep},
        "privacy": {"mode": "none"}, "ledger": {"enabled": False},
    })


def _toy():
    from bfdl_tff.federated.testing import toy_federation

    return toy_federation((12, 20, 28), size=SIZE, n_test=32, seed=1)


class Lagging(RecordingHook):
    """Reports a round durable ``lag`` rounds after it was announced; at ``on_end`` all are."""

    def __init__(self, run_dir, lag: int = 2, crash_at: int | None = None, crash_on_end: bool = False) -> None:
        super().__init__()
        self.run_dir, self.lag, self.crash_at, self.crash_on_end = run_dir, lag, crash_at, crash_on_end
        self.seen: list[tuple[int, list[int], list[int]]] = []  # round, checkpoints present, done

    def on_round_end(self, ctx) -> None:
        store = CheckpointStore(self.run_dir / "checkpoints")
        done = store.complete()
        self.seen.append((ctx.round_num, [c.round_num for c in done], [c.round_num for c in done if c.hooks_done]))
        super().on_round_end(ctx)
        if ctx.round_num == self.crash_at:
            raise KeyboardInterrupt  # the process dies while the hook still owes rounds

    def durable_through(self) -> int:
        return max((c.round_num for c in self.rounds), default=0) - self.lag

    def on_end(self, summary: dict) -> None:
        if self.crash_on_end:
            raise KeyboardInterrupt
        self.lag = 0
        super().on_end(summary)


def _run(cfg, path, hook, *, resume: bool = False) -> dict:
    from bfdl_tff.federated.runner import run_experiment

    return run_experiment(cfg, path, hooks=[hook], resume=resume, data=_toy(), progress=False)


def test_checkpoints_are_done_only_when_durable_and_never_pruned_before(tmp_path):
    hook = Lagging(tmp_path, lag=2)
    _run(_cfg(rounds=4, keep=1), tmp_path, hook)
    # at round r's announcement rounds r-2 and r-1 are not durable yet: kept despite keep_checkpoints 1;
    # round 1, durable once round 3 was announced, is pruned then
    assert hook.seen == [(1, [1], []), (2, [1, 2], []), (3, [1, 2, 3], []), (4, [2, 3, 4], [])]
    final = CheckpointStore(tmp_path / "checkpoints").complete()
    assert [(c.round_num, c.hooks_done, bool(c.meta.get("finalized"))) for c in final] == [(4, True, True)]


def test_resume_reannounces_every_round_not_done_with_its_own_weights(tmp_path):
    first = Lagging(tmp_path, lag=2, crash_at=3)
    with pytest.raises(KeyboardInterrupt):
        _run(_cfg(rounds=4, keep=1), tmp_path, first)
    assert [c.round_num for c in CheckpointStore(tmp_path / "checkpoints").complete()] == [1, 2, 3]
    again = RecordingHook()
    summary = _run(_cfg(rounds=4, keep=1), tmp_path, again, resume=True)
    assert again.info.extra["start_round"] == 3 and again.info.extra["pending_rounds"] == [1, 2, 3]
    assert [c.round_num for c in again.rounds] == [1, 2, 3, 4]
    for old, new in zip(first.rounds, again.rounds[:3]):
        assert old.round_num == new.round_num
        for a, b in zip(old.global_weights, new.global_weights):
            np.testing.assert_array_equal(a, b)
        assert new.metrics == old.metrics
    assert summary["rounds"] == 4


def test_resume_after_the_last_round_finishes_the_hooks_without_rewriting_results(tmp_path):
    cfg = _cfg(rounds=2, keep=2)
    with pytest.raises(KeyboardInterrupt):
        _run(cfg, tmp_path, Lagging(tmp_path, lag=0, crash_on_end=True))
    written = {p: (tmp_path / p).read_bytes() for p in ("summary.json", "final_model.npz", "metrics.csv")}
    latest = CheckpointStore(tmp_path / "checkpoints").latest()
    assert latest.round_num == 2 and latest.hooks_done and not latest.meta.get("finalized")
    hook = RecordingHook()
    summary = _run(cfg, tmp_path, hook, resume=True)
    assert hook.rounds == [] and hook.summary == summary == json.loads(written["summary.json"])
    assert {p: (tmp_path / p).read_bytes() for p in written} == written  # what on_end binds is unchanged
    assert CheckpointStore(tmp_path / "checkpoints").latest().meta["finalized"] is True
    done = RecordingHook()
    _run(cfg, tmp_path, done, resume=True)
    assert done.info is None and done.closed  # complete: no hook started again
