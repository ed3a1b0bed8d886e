"""The B-FDL round hook against a real 4-replica LocalCluster, then ``bfdl audit verify``;
tampering with the ledger database, an off-chain checkpoint or the final model is detected and
named; the contracts reject unregistered, revoked and replayed submissions; no half-signed round."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bfdl_tff.cli import main
from bfdl_tff.integration import ledger_api as L
from bfdl_tff.integration.audit import verify_run
from bfdl_tff.integration.hook import LedgerHook, LedgerHookError, PrivacyBudgetExceeded
from bfdl_tff.integration.simulate import run_info, run_synthetic, synthetic_rounds
from bfdl_tff.keys.local import LocalKeyStore

H = ["hospital_a", "hospital_b", "hospital_c"]


def _hook(run_dir: Path, **kw) -> LedgerHook:
    return LedgerHook(run_dir, keystore=LocalKeyStore(run_dir / "keys"), replicas=4, epsilon_cap=1.0, **kw)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "synthetic-bfdl"
    run.mkdir()
    run_synthetic(_hook(run), run, hospitals=H, rounds=3)
    return run


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
    assert {"replicas_agree", "signers", "rounds", "final_model", "privacy_budget", "openings"} <= set(names)
    assert sum(n.startswith("chain:") for n in names) == 4
    assert sum(n.startswith("offchain:") for n in names) == 3
    assert json.loads((pristine / "audit" / "verify.json").read_text())["ok"] is True
    assert main(["audit", "verify", str(pristine)]) == 0
    assert main(["audit", "report", str(pristine), "--out", "-"]) == 0
    md = capsys.readouterr().out
    assert "PASSED" in md and "hospital-b" in md and "| 3 |" in md and "Reputation" in md


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
    f = L.open_offchain(run / "ledger").path_of(addr)
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
    from bfdl_tff.integration.simulate import write_final_model

    run = _copy(pristine, tmp_path)
    ctxs = synthetic_rounds(run, hospitals=H, rounds=2)
    write_final_model(run, ctxs[0].global_weights)  # round 1's weights, not round 3's
    res = verify_run(run)
    assert not res.ok and "MISMATCH" in res.first_failure


def test_contracts_reject_unregistered_revoked_and_replayed(tmp_path):
    from ledger.crypto import SigningKey

    run = tmp_path / "run"
    run.mkdir()
    hook = _hook(run)
    ctxs = synthetic_rounds(run, hospitals=H, rounds=1)
    hook.on_start(run_info(run, H))
    try:
        hook.on_round_end(ctxs[0])
        hook.drain()
        cl, sign = hook.cluster, hook._sign
        c1 = cl.query("rounds/1/commitments")
        assert len(c1) == 3
        payload = {"round": 2, "commitment": "ab" * 32, "num_examples": 5}
        open2 = sign("aggregator", "round.open", {"round": 2})
        stranger = L.sign_tx(SigningKey.generate(), "round.commit_update", payload, chain_id=hook.chain_id)
        ok_a = sign("hospital-a", "round.commit_update", payload)
        revoke_c = sign("admin", "registry.revoke", {"pubkey": hook.signers["hospital-c"].public_key().hex()})
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
        from ledger.tx import sign_tx

        reuse = sign_tx(hook.signers["hospital-a"], "round.commit_update", {**payload, "commitment": "ef" * 32},
                        nonce=ok_a.nonce, chain_id=hook.chain_id)
        r_reuse = cl.submit(reuse)
        assert not r_reuse.ok and r_reuse.code == "replay"
        # a hospital's round-1 commitment transaction replayed: not executed again
        from ledger.storage import LedgerStore

        db = L.replica_db_paths(run / "ledger")[0]
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
        assert cl.query("rounds/2/commitments").keys() == {hook.signers["hospital-a"].public_key().hex()}
    finally:
        hook.close()
    # the rejected submissions are on the chain as rejected results; the chain still verifies
    res = verify_run(run, write=False)
    chain_checks = [c for c in res.checks if c.name.startswith("chain:")]
    assert all(c.ok for c in chain_checks) and res.chain["rejected"] == 5
    assert next(c for c in res.checks if c.name == "signers").ok


class _FailingSigner:
    def __init__(self, inner):
        self.inner = inner

    def public_key(self) -> bytes:
        return self.inner.public_key()

    def sign(self, msg: bytes) -> bytes:
        raise OSError("signing backend went away")


def test_no_half_signed_round(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    hook = _hook(run)
    ctxs = synthetic_rounds(run, hospitals=H, rounds=2)
    hook.on_start(run_info(run, H))
    try:
        hook.on_round_end(ctxs[0])
        hook.drain()
        height_after_1 = hook.cluster.heads()[0][0]
        hook.signers["hospital-b"] = _FailingSigner(hook.signers["hospital-b"])
        hook.on_round_end(ctxs[1])
        hook.drain()
        with pytest.raises(LedgerHookError, match="signing backend went away"):
            hook.on_end({})
        # nothing of round 2 reached the chain, not even round.open signed before the failure
    finally:
        hook.close()
    res = verify_run(run, write=False)
    assert res.chain["height"] == height_after_1
    assert all(c.ok for c in res.checks if c.name.startswith("chain:"))


def test_budget_cap_stops_before_submission(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
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


def test_missing_commitment_and_unknown_participant(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    hook = _hook(run)
    ctx = synthetic_rounds(run, hospitals=H, rounds=1)[0]
    hook.on_start(run_info(run, H))
    try:
        del ctx.client_commitments["hospital_c"]
        with pytest.raises(LedgerHookError, match="no update commitment from hospital_c"):
            hook.on_round_end(ctx)
    finally:
        hook.close()


def test_resume_reopens_chain_and_skips_recorded_rounds(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    ctxs = synthetic_rounds(run, hospitals=H, rounds=3)
    h1 = _hook(run)
    h1.on_start(run_info(run, H))
    h1.on_round_end(ctxs[0])
    h1.on_round_end(ctxs[1])
    h1.on_end({})
    h2 = _hook(run)
    h2.on_start(run_info(run, H))
    try:
        h2.on_round_end(ctxs[1])  # already on the chain: ignored
        h2.on_round_end(ctxs[2])
        np.savez(run / "final_model.npz", **{f"w{i:04d}": w for i, w in enumerate(ctxs[2].global_weights)})
        h2.on_end({})
    finally:
        h2.close()
    s = json.loads((run / "ledger" / "ledger_summary.json").read_text())
    assert s["rounds"] == [1, 2, 3] and s["tx_per_round"] == [11, 11, 11]
    res = verify_run(run)
    assert res.ok, res.first_failure


def test_audit_cli_errors(pristine, tmp_path, capsys):
    assert main(["audit", "verify", str(tmp_path / "nope")]) == 2
    assert "genesis.json" in capsys.readouterr().err
    res = verify_run(pristine, admin_key="00" * 32, write=False)
    assert not res.ok and res.first_failure.startswith("genesis")


def test_no_cap_when_epsilon_cap_is_zero(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    hook = LedgerHook(run, keystore=LocalKeyStore(run / "keys"), replicas=4, epsilon_cap=0.0)
    ctxs = synthetic_rounds(run, hospitals=H[:1], rounds=1, epsilon_per_round=50.0)
    hook.on_start(run_info(run, H[:1]))
    try:
        hook.on_round_end(ctxs[0])
        hook.drain()
        assert hook.cluster.query("privacy")["epsilon"] == 50.0
        assert hook.ledger_summary()["epsilon_cap"] is None
    finally:
        hook.close()


def test_threaded_ledger_transport_records_and_audits(tmp_path):
    """ledger.transport = threads: the same hook over replicas running in threads."""
    run = tmp_path / "run-threads"
    run.mkdir()
    run_synthetic(_hook(run, transport="threads"), run, hospitals=H, rounds=2)
    s = json.loads((run / "ledger" / "ledger_summary.json").read_text())
    assert s["rounds"] == [1, 2] and s["tx_per_round"] == [11, 11] and s["transport"] == "threads"
    res = verify_run(run)
    assert res.ok, res.first_failure
    from ledger.threadnet import replica_threads_alive

    assert replica_threads_alive() == 0
