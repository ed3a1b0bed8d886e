"""Fixtures of the integration tests: a check that a run directory holds no key material."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest


def _secrets(keystore: Path) -> list[bytes]:
    """Every private key file's content under the keystore, and for PEM keys the raw 32-byte
    Ed25519 seed in bytes and in hex."""
    from cryptography.hazmat.primitives import serialization

    out: list[bytes] = []
    for f in keystore.rglob("*.key"):
        data = f.read_bytes()
        out.append(data.strip())
        if b"PRIVATE KEY" in data:
            sk = serialization.load_pem_private_key(data, password=None)
            raw = sk.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                   serialization.NoEncryption())
            out += [raw, raw.hex().encode()]
    return out


@pytest.fixture
def no_key_material() -> Callable[[Path], None]:
    """``check(run_dir)``: no ``*.key`` file, no PEM private key and no byte string of any private
    key of the session keystore (``$BFDL_KEYSTORE``) anywhere under ``run_dir``."""

    def check(run_dir: Path) -> None:
        keystore = Path(os.environ["BFDL_KEYSTORE"])
        secrets = _secrets(keystore)
        assert secrets, f"{keystore}: no private key was created in the keystore"
        assert not keystore.resolve().is_relative_to(run_dir.resolve())
        for f in (p for p in run_dir.rglob("*") if p.is_file()):
            assert f.suffix != ".key", f"private key file in the run directory: {f}"
            data = f.read_bytes()
            assert b"PRIVATE KEY" not in data, f"PEM private key in {f}"
            leaked = [s for s in secrets if s in data]
            assert not leaked, f"{f} contains private key material"

    return check
