"""X25519 key agreement, the local kx key store (permissions, no overwrite) and key derivation."""

from __future__ import annotations

import os
import stat

import pytest

from bfdl_tff.secagg import kdf
from bfdl_tff.secagg.errors import BadKeyError, DecryptionError, KxKeyStoreError
from bfdl_tff.secagg.keys import Ed25519Signer, KxKey, KxKeyStore, Signer, verify_signature


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_keystore_creates_private_files_and_reloads_the_same_key(tmp_path):
    store = KxKeyStore(tmp_path / "kx")
    pub = store.create("hospital-a")
    assert _mode(tmp_path / "kx") == 0o700
    assert _mode(tmp_path / "kx" / "hospital-a.kx.key") == 0o600
    assert (tmp_path / "kx" / "hospital-a.kx.pub").read_text().strip() == pub.hex()
    assert store.load("hospital-a").public_bytes() == pub == store.public_key("hospital-a")
    assert store.load_or_create("hospital-a").public_bytes() == pub
    assert not list((tmp_path / "kx").glob(".*tmp"))


def test_keystore_never_overwrites_an_existing_key(tmp_path):
    store = KxKeyStore(tmp_path)
    os.chmod(tmp_path, 0o700)
    store.create("hospital-b")
    before = (tmp_path / "hospital-b.kx.key").read_bytes()
    with pytest.raises(KxKeyStoreError, match="already exists"):
        store.create("hospital-b")
    assert (tmp_path / "hospital-b.kx.key").read_bytes() == before


def test_keystore_refuses_group_readable_directory_and_key(tmp_path):
    store = KxKeyStore(tmp_path / "kx")
    store.create("hospital-c")
    os.chmod(tmp_path / "kx" / "hospital-c.kx.key", 0o640)
    with pytest.raises(KxKeyStoreError, match="chmod 600"):
        store.load("hospital-c")
    os.chmod(tmp_path / "kx" / "hospital-c.kx.key", 0o600)
    os.chmod(tmp_path / "kx", 0o750)
    with pytest.raises(KxKeyStoreError, match="chmod 700"):
        store.load("hospital-c")


def test_keystore_detects_a_tampered_public_key_file_and_bad_names(tmp_path):
    store = KxKeyStore(tmp_path / "kx")
    store.create("hospital-d")
    (tmp_path / "kx" / "hospital-d.kx.pub").write_text("00" * 32 + "\n")
    with pytest.raises(KxKeyStoreError, match="does not match"):
        store.load("hospital-d")
    with pytest.raises(KxKeyStoreError, match="invalid key name"):
        store.load("../etc")
    with pytest.raises(KxKeyStoreError, match="no key-agreement key"):
        store.load("hospital-z")


def test_ecdh_is_symmetric_and_rejects_low_order_points():
    a, b = KxKey.generate(), KxKey.generate()
    assert a.exchange(b.public_bytes()) == b.exchange(a.public_bytes())
    with pytest.raises(BadKeyError, match="low-order"):
        a.exchange(bytes(32))  # the identity point: all-zero shared secret
    assert "KxKey(pub=" in repr(a) and a.private_bytes().hex() not in repr(a)


def test_signer_protocol_and_verification():
    s = Ed25519Signer()
    assert isinstance(s, Signer)
    sig = s.sign(b"msg")
    assert verify_signature(s.public_key(), sig, b"msg")
    assert not verify_signature(s.public_key(), sig, b"msh")
    assert not verify_signature(Ed25519Signer().public_key(), sig, b"msg")
    assert not verify_signature(s.public_key(), b"short", b"msg")


def test_pair_seeds_are_bound_to_run_round_and_pair():
    secret = os.urandom(32)
    base = kdf.pair_mask_seed(secret, run_id="r", round_num=1, u=1, v=2)
    assert base == kdf.pair_mask_seed(secret, run_id="r", round_num=1, u=2, v=1)  # symmetric
    assert base != kdf.pair_mask_seed(secret, run_id="r", round_num=2, u=1, v=2)
    assert base != kdf.pair_mask_seed(secret, run_id="r2", round_num=1, u=1, v=2)
    assert base != kdf.pair_mask_seed(secret, run_id="r", round_num=1, u=1, v=3)


def test_binding_is_unambiguous():
    assert kdf.binding("x", "ab", "c") != kdf.binding("x", "a", "bc")
    assert kdf.binding("x", 1) != kdf.binding("x", "1") != kdf.binding("x", b"1")
    assert kdf.binding("x", [1, 2]) != kdf.binding("x", 1, 2)
    with pytest.raises(TypeError):
        kdf.binding("x", True)


def test_share_encryption_is_authenticated_and_bound_to_the_round():
    key = os.urandom(32)
    aad = kdf.share_aad(params_digest=b"d", run_id="r", round_num=1, sender=1, recipient=2)
    ct = kdf.encrypt_share(key, b"secret shares", sender=1, recipient=2, aad=aad)
    assert kdf.decrypt_share(key, ct, sender=1, recipient=2, aad=aad) == b"secret shares"
    other_round = kdf.share_aad(params_digest=b"d", run_id="r", round_num=2, sender=1, recipient=2)
    with pytest.raises(DecryptionError):
        kdf.decrypt_share(key, ct, sender=1, recipient=2, aad=other_round)
    tampered = bytes([ct[0] ^ 1]) + ct[1:]
    with pytest.raises(DecryptionError):
        kdf.decrypt_share(key, tampered, sender=1, recipient=2, aad=aad)
