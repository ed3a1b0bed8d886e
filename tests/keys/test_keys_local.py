"""Local key store: permissions, persistence, signatures that ledger.crypto verifies, CLI."""

from __future__ import annotations

import os
import stat

import pytest

from bfdl_tff.cli import main
from bfdl_tff.keys import (
    KeyNotFoundError,
    KeyPermissionError,
    KeyStoreError,
    key_name,
    role_of,
)
from bfdl_tff.keys.local import LocalKeyStore

NAMES = ["hospital-a", "hospital-b", "hospital-c", "aggregator", "admin"]


def test_init_creates_private_files_and_signs(tmp_path):
    from ledger.crypto import verify

    store = LocalKeyStore(tmp_path / "ks")
    pubs = store.init_institutions(NAMES)
    assert sorted(pubs) == sorted(NAMES)
    assert len({p for p in pubs.values()}) == len(NAMES)
    assert stat.S_IMODE((tmp_path / "ks").stat().st_mode) == 0o700
    for n in NAMES:
        assert stat.S_IMODE((tmp_path / "ks" / f"{n}.key").stat().st_mode) == 0o600
        s = store.signer(n)
        sig = s.sign(b"round 1")
        assert len(sig) == 64
        assert verify(pubs[n], sig, b"round 1")
        assert not verify(pubs[n], sig, b"round 2")
    # another institution's key does not verify
    assert not verify(pubs["hospital-b"], store.signer("hospital-a").sign(b"x"), b"x")
    assert store.list() == sorted(NAMES)


def test_init_is_idempotent_and_persistent(tmp_path):
    a = LocalKeyStore(tmp_path / "ks").init_institutions(["hospital-a"])
    b = LocalKeyStore(tmp_path / "ks").init_institutions(["hospital-a", "hospital-b"])
    assert a["hospital-a"] == b["hospital-a"]
    assert LocalKeyStore(tmp_path / "ks").public_key("hospital_a") == a["hospital-a"]


def test_refuses_loose_permissions(tmp_path):
    store = LocalKeyStore(tmp_path / "ks")
    store.init_institutions(["hospital-a"])
    kf = tmp_path / "ks" / "hospital-a.key"
    os.chmod(kf, 0o644)
    with pytest.raises(KeyPermissionError, match="hospital-a.key.*0644"):
        LocalKeyStore(tmp_path / "ks").signer("hospital-a")
    os.chmod(kf, 0o600)
    os.chmod(tmp_path / "ks", 0o755)
    with pytest.raises(KeyPermissionError, match="directory has mode 0755"):
        LocalKeyStore(tmp_path / "ks").signer("hospital-a")


def test_missing_key_and_bad_names(tmp_path):
    store = LocalKeyStore(tmp_path / "ks")
    store.init_institutions(["hospital-a"])
    with pytest.raises(KeyNotFoundError, match="hospital-z"):
        store.signer("hospital-z")
    with pytest.raises(KeyStoreError):
        key_name("../etc/passwd")
    with pytest.raises(KeyStoreError, match="role"):
        role_of("pharmacy")
    assert role_of("hospital_b") == "hospital" and role_of("aggregator") == "aggregator"


def test_signer_repr_hides_private_key(tmp_path):
    store = LocalKeyStore(tmp_path / "ks")
    store.init_institutions(["hospital-a"])
    pem = (tmp_path / "ks" / "hospital-a.key").read_text()
    body = "".join(pem.strip().splitlines()[1:-1])
    assert body not in repr(store.signer("hospital-a"))


def test_cli_init_and_list(tmp_path, capsys):
    d = tmp_path / "cli-ks"
    rc = main(["keys", "init", "--institutions", "hospital-a,hospital-b,aggregator", "--keystore", str(d)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "hospital-a" in out and "admin" in out and "BEGIN" not in out
    rc = main(["keys", "list", "--path", str(d)])  # --path: the old spelling still works
    out = capsys.readouterr().out
    assert rc == 0 and out.count("\n") == 5  # header + 4 keys
    os.chmod(d / "admin.key", 0o640)
    rc = main(["keys", "list", "--keystore", str(d)])
    assert rc == 2
    assert "admin.key" in capsys.readouterr().err
