"""The durable round protocol at the hook level, without TensorFlow (issue 17.1): a crash at every
ledger step of a round (emulated in-process: the fault step raises instead of SIGKILL, then the hook
is dropped), resume, and the chain holds rounds 1..N each once with the audit passing; a round
open on chain without its signed transactions is aborted with a recorded reason and recorded again;
inconsistencies stop the run with one line naming the round. The real SIGKILL matrix (subprocess
``bfdl train``) is ``tests/federated/test_federated_crash_matrix.py``."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from bfdl_tff import faults
from bfdl_tff.config import KeysConfig
from bfdl_tff.federated.hooks import RunInfo
from bfdl_tff.integration.audit import verify_run
from bfdl_tff.integration.chain import read_chain
from bfdl_tff.integration.errors import ReconcileError
from bfdl_tff.integration.hook import LedgerHook
from bfdl_tff.integration.ledger_api import LedgerFiles
from bfdl_tff.integration.outbox import Outbox
from bfdl_tff.integration.simulate import synthetic_rounds, synthetic_run_dir, write_results
from bfdl_tff.keys import open_keystore
from bfdl_tff.runs import RunDir

H = ["hospital_a", "hospital_b", "hospital_c"]
TX_PER_ROUND = 2 * len(H) + 5


class _Crash(BaseException):
    """Stands in for SIGKILL at a fault step (nothing after it runs in the hook's worker)."""


def _hook(run: RunDir, **kw) -> LedgerHook:
    kw.setdefault("epsilon_cap", 1.0)
    return LedgerHook(run, keystore=open_keystore(KeysConfig()), replicas=4, **kw)


def _info(run: RunDir, *, start_round: int, pending: list[int]) -> RunInfo:
    return RunInfo(run_dir=run.path, config=run.config, hospital_names=list(H), num_examples={h: 0 for h in H},
                   num_params=0, extra={"start_round": start_round, "pending_rounds": pending})


def _arm(monkeypatch, step: str, r: int) -> None:
    def crash(step: str, round_num: int) -> None:
        raise _Crash(f"{step} {round_num}")

    monkeypatch.setenv(faults.ENV, f"round:{r}:{step}")
    monkeypatch.setattr(faults, "kill", crash)


def _first_run(run: RunDir, ctxs, upto: int, **kw) -> int:
    """Record rounds 1..upto until the armed fault; return the rounds the hook reported durable."""
    h = _hook(run, **kw)
    h.on_start(_info(run, start_round=0, pending=[]))
    try:
        for c in ctxs[:upto]:
            h.on_round_end(c)
        h.drain()
        return h.durable_through()
    finally:
        h.close()  # the crashed process: the worker stopped at the fault, nothing else ran


def _resume(run: RunDir, ctxs, *, start_round: int, durable: int, **kw) -> None:
    """What the runner does on --resume: on_start, re-announce the rounds not done, train on, on_end."""
    pending = list(range(durable + 1, start_round + 1))
    h = _hook(run, **kw)
    h.on_start(_info(run, start_round=start_round, pending=pending))
    try:
        for r in pending:
            h.on_round_end(ctxs[r - 1])
        for c in ctxs[start_round:]:
            h.on_round_end(c)
        h.on_end(write_results(run, ctxs))
    finally:
        h.close()


def _chain(run: RunDir):
    files = LedgerFiles.of(run)
    return read_chain(files.replica_dbs()[0], files.load_genesis())


def _assert_each_round_once(run: RunDir, rounds: int) -> None:
    res = verify_run(run.path)
    assert res.ok, res.first_failure
    chain = _chain(run)
    assert all(t.ok for t in chain.txs), [(t.kind, t.code) for t in chain.txs if not t.ok]
    views = chain.rounds()
    assert list(views) == list(range(1, rounds + 1))
    assert all(v.opens == v.closes == 1 and v.txs == TX_PER_ROUND for v in views.values())
    # what is on chain is exactly what was signed once and persisted
    outbox = Outbox(LedgerFiles.of(run).outbox_dir)
    for r in range(1, rounds + 1):
        signed = outbox.load(r, chain_id=chain.genesis.chain_id)
        on_chain = {t.tx_hash for t in chain.txs if t.payload.get("round") == r}
        assert {t.tx_hash().hex() for t in signed.txs} == on_chain


@pytest.mark.parametrize("step", ["before_open", "after_open", "mid_commitments", "during_commit", "after_close"])
def test_crash_at_each_ledger_step_then_resume_records_every_round_once(tmp_path, monkeypatch, step):
    run = synthetic_run_dir(tmp_path / "run")
    ctxs = synthetic_rounds(run, hospitals=H, rounds=3)
    _arm(monkeypatch, step, 2)
    durable = _first_run(run, ctxs, 2)
    monkeypatch.delenv(faults.ENV)
    assert durable == 1, "round 2 is not durable before its round.close is committed and reported"
    on_chain = _chain(run).rounds()
    expected_open = {"before_open": False, "after_open": True, "mid_commitments": True, "after_close": False}
    if step in expected_open:
        assert (on_chain.get(2) is not None and on_chain[2].closes == 0) == expected_open[step]
    _resume(run, ctxs, start_round=2, durable=durable)
    _assert_each_round_once(run, 3)


def test_batch_size_two_round_open_on_chain_is_resumable(tmp_path, monkeypatch):
    """Issue 17 "Why, 2": with ledger.batch_size 2 a kill inside the commit leaves the round open on
    chain; every resume used to fail with round_still_open."""
    run = synthetic_run_dir(tmp_path / "run")
    ctxs = synthetic_rounds(run, hospitals=H, rounds=3)
    _arm(monkeypatch, "during_commit", 2)
    durable = _first_run(run, ctxs, 2, batch_size=2)
    monkeypatch.delenv(faults.ENV)
    files = LedgerFiles.of(run)
    heights = [read_chain(db, files.load_genesis()).height for db in files.replica_dbs()]
    assert len(set(heights)) == 2, f"one replica stored the round's first block, the others not: {heights}"
    _resume(run, ctxs, start_round=2, durable=durable, batch_size=2)
    _assert_each_round_once(run, 3)


def test_outbox_is_private_and_written_before_submission(tmp_path, monkeypatch):
    run = synthetic_run_dir(tmp_path / "run")
    ctxs = synthetic_rounds(run, hospitals=H, rounds=1)
    _arm(monkeypatch, "before_open", 1)
    _first_run(run, ctxs, 1)
    outbox = Outbox(LedgerFiles.of(run).outbox_dir)
    assert outbox.rounds() == [1] and not _chain(run).rounds()
    assert stat.S_IMODE(os.stat(outbox.directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(outbox.path(1)).st_mode) == 0o600
    signed = outbox.load(1, chain_id=_chain(run).genesis.chain_id)
    assert [t.kind for t in signed.txs][0::len(signed.txs) - 1] == ["round.open", "round.close"]
    assert len(signed.txs) == TX_PER_ROUND and len(signed.openings) == len(H)


def test_open_round_without_outbox_is_aborted_with_reason_and_recorded_again(tmp_path, monkeypatch):
    run = synthetic_run_dir(tmp_path / "run")
    ctxs = synthetic_rounds(run, hospitals=H, rounds=3)
    _arm(monkeypatch, "mid_commitments", 2)
    durable = _first_run(run, ctxs, 2)
    monkeypatch.delenv(faults.ENV)
    outbox = Outbox(LedgerFiles.of(run).outbox_dir)
    outbox.path(2).unlink()  # the signed transactions of the open round are lost
    _resume(run, ctxs, start_round=2, durable=durable)
    res = verify_run(run.path)
    assert res.ok, res.first_failure
    assert "1 aborted attempt" in res.check("rounds").message
    assert "round 2 open on chain, no signed transactions persisted" in res.check("rounds").message
    assert res.check("openings").ok  # the lost attempt's opening whose commitment reached the chain still opens it
    chain = _chain(run)
    (abort,) = chain.accepted("round.abort")
    assert abort.payload["round"] == 2
    rnd = chain.state.query("rounds/2")
    assert rnd["status"] == "closed" and len(rnd["aborted"]) == 1
    assert [r for r, v in chain.rounds().items() if v.opens == 1 and v.closes == 1] == [1, 2, 3]


def test_open_round_whose_outbox_does_not_match_the_chain_is_aborted(tmp_path, monkeypatch):
    run = synthetic_run_dir(tmp_path / "run")
    ctxs = synthetic_rounds(run, hospitals=H, rounds=2)
    _arm(monkeypatch, "after_open", 2)
    durable = _first_run(run, ctxs, 2)
    monkeypatch.delenv(faults.ENV)
    outbox = Outbox(LedgerFiles.of(run).outbox_dir)
    outbox.path(2).write_bytes(outbox.path(1).read_bytes())  # another round's transactions
    _resume(run, ctxs, start_round=2, durable=durable)
    res = verify_run(run.path)
    assert res.ok, res.first_failure
    assert "round_0002.json unusable" in res.check("rounds").message
    assert [p.name for p in sorted(outbox.directory.iterdir())] == ["round_0001.json", "round_0002.aborted-1.json",
                                                                      "round_0002.json"]


def test_unreadable_outbox_of_a_round_not_on_chain_is_refused_with_one_line(tmp_path, monkeypatch):
    run = synthetic_run_dir(tmp_path / "run")
    ctxs = synthetic_rounds(run, hospitals=H, rounds=2)
    _arm(monkeypatch, "before_open", 2)
    durable = _first_run(run, ctxs, 2)
    monkeypatch.delenv(faults.ENV)
    outbox = Outbox(LedgerFiles.of(run).outbox_dir)
    doc = json.loads(outbox.path(2).read_text())
    doc["txs"][1]["payload"]["num_examples"] += 1  # no longer what the hospital signed
    outbox.path(2).write_text(json.dumps(doc))
    h = _hook(run)
    with pytest.raises(ReconcileError) as e:
        h.on_start(_info(run, start_round=2, pending=[2]))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("round 2: ") and "round_0002.json" in msg
    assert "signature does not verify" in msg and "move the file away" in msg
    assert durable == 1 and _chain(run).rounds().keys() == {1}  # nothing was submitted


def test_chain_ahead_of_the_newest_checkpoint_is_refused(tmp_path, monkeypatch):
    run = synthetic_run_dir(tmp_path / "run")
    ctxs = synthetic_rounds(run, hospitals=H, rounds=2)
    _arm(monkeypatch, "after_close", 2)
    _first_run(run, ctxs, 2)
    h = _hook(run)
    with pytest.raises(ReconcileError, match=r"round 2 is on the chain but the newest checkpoint is round 1"):
        h.on_start(_info(run, start_round=1, pending=[]))


def test_round_neither_on_chain_nor_persisted_nor_checkpointed_is_refused(tmp_path, monkeypatch):
    run = synthetic_run_dir(tmp_path / "run")
    ctxs = synthetic_rounds(run, hospitals=H, rounds=3)
    _arm(monkeypatch, "before_open", 2)
    _first_run(run, ctxs, 2)
    Outbox(LedgerFiles.of(run).outbox_dir).path(2).unlink()
    h = _hook(run)
    with pytest.raises(ReconcileError, match=r"round 2 is not on the chain, has no signed transactions .* no checkpoint"):
        h.on_start(_info(run, start_round=2, pending=[]))  # its checkpoint was (wrongly) marked done and pruned


def test_resume_after_finalize_is_idempotent(tmp_path):
    """A crash after run.finalize committed (before the runner recorded it): on_end again is a no-op."""
    run = synthetic_run_dir(tmp_path / "run")
    ctxs = synthetic_rounds(run, hospitals=H, rounds=2)
    _resume(run, ctxs, start_round=0, durable=0)
    h = _hook(run)
    h.on_start(_info(run, start_round=2, pending=[]))
    try:
        h.on_end(json.loads(Path(run.summary_file).read_text()))
    finally:
        h.close()
    assert len(_chain(run).finalize_records()) == 1
    assert verify_run(run.path).ok


def test_finished_rounds_missing_from_the_chain_are_resubmitted_from_the_outbox(tmp_path):
    """The replica databases are restored from a copy taken after round 1: rounds 2 and 3 were done
    (checkpoints marked durable and pruned) but are no longer on the chain. Resume re-submits them
    from the outbox, exactly as signed; nothing is signed again."""
    import shutil

    run = synthetic_run_dir(tmp_path / "run")
    ctxs = synthetic_rounds(run, hospitals=H, rounds=3)
    files = LedgerFiles.of(run)
    for upto, start in ((1, 0), (3, 1)):
        h = _hook(run)
        h.on_start(_info(run, start_round=start, pending=[]))
        try:
            for c in ctxs[start:upto]:
                h.on_round_end(c)
            h.drain()
            assert h.durable_through() == upto
        finally:
            h.close()
        if upto == 1:
            shutil.copytree(files.replicas_dir, tmp_path / "backup")
    shutil.rmtree(files.replicas_dir)
    shutil.copytree(tmp_path / "backup", files.replicas_dir)
    assert list(_chain(run).rounds()) == [1]
    _resume(run, ctxs, start_round=3, durable=3)
    _assert_each_round_once(run, 3)
