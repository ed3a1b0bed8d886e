"""The B-FDL round hook against a real 4-replica LocalCluster, then ``bfdl audit verify``;
tampering with the ledger database, an off-chain checkpoint or the final model is detected and
named; the contracts reject unregistered, revoked and replayed submissions; no half-signed round;
rounds are recorded in order (a gap is refused)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bfdl_tff.cli import main
from bfdl_tff.config import KeysConfig
from bfdl_tff.integration.audit import verify_run
from bfdl_tff.integration.hook import LedgerHook, LedgerHookError, PrivacyBudgetExceeded
from bfdl_tff.integration.ledger_api import LedgerFiles
from bfdl_tff.integration.simulate import run_info, run_synthetic, synthetic_rounds, synthetic_run_dir, write_results
from bfdl_tff.keys import open_keystore
from bfdl_tff.runs import RunDir

H = ["hospital_a", "hospital_b", "hospital_c"]


def _hook(run: RunDir, **kw) -> LedgerHook:
    kw.setdefault("epsilon_cap", 1.0)
    return LedgerHook(run, keystore=open_keystore(KeysConfig()), replicas=4, **kw)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    run = synthetic_run_dir(tmp_path_factory.mktemp("runs") / "synthetic-bfdl")
    run_synthetic(_hook(run), run, hospitals=H, rounds=3)
    return run.path


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def _flip(path: Path, offset: int, new: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[offset] = new if new is not None else data[offset] ^ 0x01
    path.write_bytes(bytes(data))


def test_rounds_recorded_and_audit_passes(pristine, capsys):
    s = json.loads((pristine / "ledger" / "ledger_summary.json").read_text())
    k = len(H)
    assert s["tx_per_round"] == [2 * k + 5] * 3
    assert s["tx_kinds_per_round"][0] == {
        "round.open": 1, "round.commit_update": k, "round.global_model": 1, "privacy.record": 1,
        "metrics.record": 1, "access.request_summary": k, "round.close": 1,
    }
    for key in ("tx_per_round", "hook_seconds", "round_seconds", "bytes_on_chain", "bytes_off_chain", "heads"):
        assert key in s
    assert len({tuple(h) for h in s["heads"]}) == 1 and len(s["heads"]) == 4
    assert s["bytes_off_chain"] > 0 and s["bytes_on_chain"] > 0
    res = verify_run(pristine)
    assert res.ok, res.first_failure
    names = [c.name for c in res.checks]
    assert {"replicas_agree", "signers", "rounds", "rounds_agree", "final_model", "finalize", "privacy_budget",
            "openings", "ledger_summary"} <= set(names)
    assert [n for n in names if n.startswith("file:")] == [
        "file:metrics.csv", "file:summary.json", "file:config.yaml", "file:final_model.npz"]
    assert sum(n.startswith("chain:") for n in names) == 4
    assert sum(n.startswith("offchain:") for n in names) == 3
    assert res.check("rounds").message.startswith("3 rounds 1..3")
    assert s["finalize"]["rounds"] == 3 and set(s["finalize"]["files"]) == {
        "metrics.csv", "summary.json", "config.yaml", "final_model.npz"}
    assert "hook_seconds" in s["verification"]["unverified"] and "tx_per_round" in s["verification"]["derived_from_chain"]
    assert json.loads((pristine / "audit" / "verify.json").read_text())["ok"] is True
    assert main(["audit", "verify", str(pristine)]) == 0
    assert main(["audit", "report", str(pristine), "--out", "-"]) == 0
    md = capsys.readouterr().out
    assert "PASSED" in md and "hospital-b" in md and "| 3 |" in md and "Reputation" in md
    assert "bound by `run.finalize`" in md and "not verified" in md


def test_flipped_byte_in_ledger_database_is_named(pristine, tmp_path):
    run = _copy(pristine, tmp_path)
    model_hash = json.loads((run / "ledger" / "ledger_summary.json").read_text())["model_hashes"][1]
    db = run / "ledger" / "replicas" / "replica_2.sqlite"
    data = db.read_bytes()
    offs = [i for i in range(len(data)) if data.startswith(model_hash.encode(), i)]
    assert offs, "the committed model hash should be stored in the replica database"
    # Every copy (the block and the consensus log's prepared certificate in the meta table).
    for off in offs:
        c = data[off]
        _flip(db, off, ord("0") if c != ord("0") else ord("1"))
    res = verify_run(run)
    assert not res.ok
    assert "chain:replica_2" in res.first_failure and "block" in res.first_failure
    assert "replica_2.sqlite" in res.first_failure
    assert main(["audit", "verify", str(run)]) == 1


def test_flipped_byte_in_offchain_checkpoint_is_named(pristine, tmp_path):
    run = _copy(pristine, tmp_path)
    addr = json.loads((run / "ledger" / "ledger_summary.json").read_text())["checkpoint_addresses"][0]
    f = LedgerFiles(run / "ledger").offchain().path_of(addr)
    _flip(f, f.stat().st_size // 2)
    res = verify_run(run)
    assert not res.ok
    assert res.first_failure.startswith("offchain:round_1") and addr in res.first_failure


def test_flipped_byte_in_final_model_is_named(pristine, tmp_path):
    run = _copy(pristine, tmp_path)
    f = run / "final_model.npz"
    _flip(f, f.stat().st_size // 2)
    res = verify_run(run)
    assert not res.ok
    assert res.first_failure.startswith("final_model") and "final_model.npz" in res.first_failure


def test_final_model_of_another_round_fails(pristine, tmp_path):
    run = RunDir.open(_copy(pristine, tmp_path))
    ctxs = synthetic_rounds(run, hospitals=H, rounds=2)
    run.save_model(ctxs[0].global_weights)  # round 1's weights, not round 3's
    run = run.path
    res = verify_run(run)
    assert not res.ok and "MISMATCH" in res.first_failure


def test_contracts_reject_unregistered_revoked_and_replayed(tmp_path):
    from ledger.crypto import SigningKey
    from ledger.storage import LedgerStore
    from ledger.tx import sign_tx

    run = synthetic_run_dir(tmp_path / "run")
    hook = _hook(run)
    ctxs = synthetic_rounds(run, hospitals=H, rounds=1)
    hook.on_start(run_info(run, H))
    try:
        hook.on_round_end(ctxs[0])
        hook.drain()
        cl, sign, signers = hook.cluster, hook.signer.sign, hook.signer.signers
        c1 = cl.query("rounds/1/commitments")
        assert len(c1) == 3
        payload = {"round": 2, "commitment": "ab" * 32, "num_examples": 5}
        open2 = sign("aggregator", "round.open", {"round": 2})
        stranger = sign_tx(SigningKey.generate(), "round.commit_update", payload, chain_id=hook.chain_id)
        ok_a = sign("hospital-a", "round.commit_update", payload)
        revoke_c = sign("admin", "registry.revoke", {"pubkey": signers["hospital-c"].public_key().hex()})
        from_c = sign("hospital-c", "round.commit_update", {**payload, "commitment": "cd" * 32})
        again_a = sign("hospital-a", "round.commit_update", payload)  # same commitment, fresh nonce
        rs = cl.submit_many([open2, stranger, ok_a, revoke_c, from_c, again_a])
        assert [r.code for r in rs] == ["opened", "unregistered", "accepted", "revoked", "revoked", "duplicate"]
        assert [r.ok for r in rs] == [True, False, True, True, False, False]
        # the very same signed transaction again: the ledger returns the original inclusion and
        # does not execute it a second time
        replay = cl.submit(ok_a)
        assert (replay.height, replay.index, replay.code) == (rs[2].height, rs[2].index, "accepted")
        # the hospital's signature + nonce reused on another commitment: refused by the contract
        reuse = sign_tx(signers["hospital-a"], "round.commit_update", {**payload, "commitment": "ef" * 32},
                        nonce=ok_a.nonce, chain_id=hook.chain_id)
        r_reuse = cl.submit(reuse)
        assert not r_reuse.ok and r_reuse.code == "replay"
        # a hospital's round-1 commitment transaction replayed: not executed again
        db = LedgerFiles.of(run).replica_dbs()[0]
        with LedgerStore(db, verify="none") as st:
            blk = next(b for b in st.iter_blocks(1) if any(t.kind == "round.commit_update" for t in b.txs))
            old = next(t for t in blk.txs if t.kind == "round.commit_update")
        r_old = cl.submit(old)
        assert r_old.height == blk.height
        assert len(cl.query("rounds/1/commitments")) == 3
        # an over-budget privacy record is refused by the contract itself
        over = sign("aggregator", "privacy.record", {"round": 2, "epsilon": 1.5, "delta": 1e-5,
                                                      "accountant": "rdp", "noise_multiplier": 1.0})
        r_over = cl.submit(over)
        assert not r_over.ok and r_over.code == "budget_exceeded"
        assert cl.query("rounds/2/commitments").keys() == {signers["hospital-a"].public_key().hex()}
    finally:
        hook.close()
    # the rejected submissions are on the chain as rejected results; the chain still verifies
    res = verify_run(run.path, write=False)
    chain_checks = [c for c in res.checks if c.name.startswith("chain:")]
    assert all(c.ok for c in chain_checks) and res.chain["rejected"] == 5
    assert res.check("signers").ok
    # round 2 was opened but never closed, and the run never finished: both are named
    assert not res.check("rounds").ok and "round 2 was never closed" in res.check("rounds").message
    assert not res.check("finalize").ok


class _FailingSigner:
    def __init__(self, inner):
        self.inner = inner

    def public_key(self) -> bytes:
        return self.inner.public_key()

    def sign(self, msg: bytes) -> bytes:
        raise OSError("signing backend went away")


def test_no_half_signed_round(tmp_path):
    run = synthetic_run_dir(tmp_path / "run")
    hook = _hook(run)
    ctxs = synthetic_rounds(run, hospitals=H, rounds=2)
    hook.on_start(run_info(run, H))
    try:
        hook.on_round_end(ctxs[0])
        hook.drain()
        height_after_1 = hook.cluster.heads()[0][0]
        hook.signer.signers["hospital-b"] = _FailingSigner(hook.signer.signers["hospital-b"])
        hook.on_round_end(ctxs[1])
        hook.drain()
        with pytest.raises(LedgerHookError, match="signing backend went away"):
            hook.on_end({})
        # nothing of round 2 reached the chain, not even round.open signed before the failure
    finally:
        hook.close()
    res = verify_run(run.path, write=False)
    assert res.chain["height"] == height_after_1
    assert all(c.ok for c in res.checks if c.name.startswith("chain:"))


def test_budget_cap_stops_before_submission(tmp_path):
    run = synthetic_run_dir(tmp_path / "run")
    hook = _hook(run)
    ctxs = synthetic_rounds(run, hospitals=H, rounds=3, epsilon_per_round=0.45)
    hook.on_start(run_info(run, H))
    try:
        hook.on_round_end(ctxs[0])
        hook.on_round_end(ctxs[1])
        with pytest.raises(PrivacyBudgetExceeded, match="round 3: epsilon 1.35"):
            hook.on_round_end(ctxs[2])
        hook.drain()
        assert hook.cluster.query("rounds") == [1, 2]
        assert hook.cluster.query("privacy")["epsilon"] == pytest.approx(0.9)
    finally:
        hook.close()


def test_missing_commitment_and_gap_are_refused(tmp_path):
    run = synthetic_run_dir(tmp_path / "run")
    hook = _hook(run)
    ctxs = synthetic_rounds(run, hospitals=H, rounds=3)
    hook.on_start(run_info(run, H))
    try:
        with pytest.raises(LedgerHookError, match="round 2: round 1 is not on the ledger"):
            hook.on_round_end(ctxs[1])
        del ctxs[0].client_commitments["hospital_c"]
        with pytest.raises(LedgerHookError, match="no update commitment from hospital_c"):
            hook.on_round_end(ctxs[0])
        assert hook.cluster.query("rounds") == []
    finally:
        hook.close()


def test_resume_reopens_chain_and_skips_recorded_rounds(tmp_path):
    run = synthetic_run_dir(tmp_path / "run")
    ctxs = synthetic_rounds(run, hospitals=H, rounds=3)
    h1 = _hook(run)
    h1.on_start(run_info(run, H))
    h1.on_round_end(ctxs[0])
    h1.on_round_end(ctxs[1])
    h1.drain()
    h1.close()  # the process stops after round 2 (no on_end: the run is not finished)
    h2 = _hook(run)
    h2.on_start(run_info(run, H))
    try:
        h2.on_round_end(ctxs[1])  # already on the chain: ignored
        h2.on_round_end(ctxs[2])
        h2.on_end(write_results(run, ctxs))
    finally:
        h2.close()
    s = json.loads((run.ledger_dir / "ledger_summary.json").read_text())
    assert s["rounds"] == [1, 2, 3] and s["tx_per_round"] == [11, 11, 11]
    assert s["timed_rounds"] == [3] and len(s["hook_seconds"]) == 1  # rounds 1-2 were timed by h1, never summarised
    res = verify_run(run.path)
    assert res.ok, res.first_failure


def test_resume_with_another_keystore_is_refused(tmp_path):
    """The replica keys of a run live in the keystore it started with (issue 17.4)."""
    run = synthetic_run_dir(tmp_path / "run")
    ctxs = synthetic_rounds(run, hospitals=H, rounds=1)
    h1 = _hook(run)
    h1.on_start(run_info(run, H))
    h1.on_round_end(ctxs[0])
    h1.drain()
    h1.close()
    h2 = _hook(run, keystore_root=tmp_path / "another-keystore")
    with pytest.raises(LedgerHookError, match="replica keys do not match.*keystore it started with"):
        h2.on_start(run_info(run, H))


def test_finalize_refused_when_summary_disagrees(tmp_path):
    """The hook does not bind results that claim more rounds than the chain holds."""
    run = synthetic_run_dir(tmp_path / "run")
    ctxs = synthetic_rounds(run, hospitals=H, rounds=3)
    hook = _hook(run)
    hook.on_start(run_info(run, H))
    try:
        hook.on_round_end(ctxs[0])
        hook.on_round_end(ctxs[1])
        with pytest.raises(LedgerHookError, match="3 rounds, but round 3 is not on the chain"):
            hook.on_end(write_results(run, ctxs))
    finally:
        hook.close()
    res = verify_run(run.path, write=False)
    assert not res.ok and res.first_failure.startswith("rounds_agree") and "summary.json says 3" in res.first_failure


def test_audit_cli_errors(pristine, tmp_path, capsys):
    assert main(["audit", "verify", str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["audit", "verify", str(tmp_path / "empty")]) == 2
    assert "genesis.json" in capsys.readouterr().err
    for opt in ("--admin-key", "--genesis-hash"):
        assert main(["audit", "verify", str(pristine), opt, "xyz"]) == 2
        err = capsys.readouterr().err
        assert opt in err and err.count("\n") == 1
    res = verify_run(pristine, admin_key="00" * 32, write=False)
    assert not res.ok and res.first_failure.startswith("genesis")
    for args in (["audit", "report", str(tmp_path / "empty")],
                 ["audit", "report", str(pristine), "--out", str(tmp_path)],
                 ["audit", "report", str(pristine), "--out", str(pristine / "config.yaml" / "r.md")]):
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("bfdl: error: ") and err.count("\n") == 1, err


def test_no_cap_when_epsilon_cap_is_zero(tmp_path):
    run = synthetic_run_dir(tmp_path / "run")
    hook = _hook(run, epsilon_cap=0.0)
    ctxs = synthetic_rounds(run, hospitals=H[:1], rounds=1, epsilon_per_round=50.0)
    hook.on_start(run_info(run, H[:1]))
    try:
        hook.on_round_end(ctxs[0])
        hook.drain()
        assert hook.cluster.query("privacy")["epsilon"] == 50.0
        assert hook.genesis.epsilon_cap is None
    finally:
        hook.close()


def test_threaded_ledger_transport_records_and_audits(tmp_path):
    """ledger.transport = threads: the same hook over replicas running in threads."""
    run = synthetic_run_dir(tmp_path / "run-threads")
    run_synthetic(_hook(run, transport="threads"), run, hospitals=H, rounds=2)
    s = json.loads((run.ledger_dir / "ledger_summary.json").read_text())
    assert s["rounds"] == [1, 2] and s["tx_per_round"] == [11, 11] and s["transport"] == "threads"
    res = verify_run(run.path)
    assert res.ok, res.first_failure
    from ledger.threadnet import replica_threads_alive

    assert replica_threads_alive() == 0
