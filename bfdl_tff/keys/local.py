"""Local key store: one Ed25519 private key per institution in a private directory.

Layout: one file per institution, ``<dir>/<name>.key`` (PKCS#8 PEM, unencrypted, mode 0600), and
``<dir>/<name>.pub`` (hex of the 32-byte raw public key), the directory itself mode 0700. The
directory is the per-user keystore (:func:`bfdl_tff.keys.keystore_dir`), never a run directory;
``<dir>/ledger/`` holds the ledger's replica keys and is not listed here. The store refuses to use a
key file or directory that group or others can access (like ``ssh`` does), never prints or logs
private key material, and writes new keys atomically with ``O_EXCL`` so an existing key is never
overwritten.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature  # noqa: F401  (re-exported for callers)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bfdl_tff.keys.base import KeyNotFoundError, KeyPermissionError, KeyStoreError, key_name


class LocalSigner:
    """An Ed25519 signer whose private key stays inside this object (``repr`` hides it)."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self.name = name
        self._sk = private_key
        self._pub = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def public_key(self) -> bytes:
        return self._pub

    def sign(self, msg: bytes) -> bytes:
        return self._sk.sign(msg)

    def __repr__(self) -> str:
        return f"LocalSigner({self.name!r}, pub={self._pub.hex()[:16]}...)"


class LocalKeyStore:
    backend = "local"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._cache: dict[str, LocalSigner] = {}

    def describe(self) -> str:
        return f"local keystore {self.path}"

    # ------------------------------------------------------------------ permissions
    def _ensure_dir(self) -> None:
        if not self.path.exists():
            self.path.mkdir(parents=True, mode=0o700)
            os.chmod(self.path, 0o700)  # mkdir mode is filtered by the umask
        self._check_dir()

    def _check_dir(self) -> None:
        if not self.path.exists():
            raise KeyStoreError(
                f"{self.path}: key store directory does not exist (run `bfdl keys init --keystore {self.path}`)"
            )
        if not self.path.is_dir():
            raise KeyStoreError(f"{self.path}: not a directory (a key store is a directory)")
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o077:
            raise KeyPermissionError(
                f"{self.path}: key store directory has mode {mode:04o}; it must not be accessible "
                f"to group or others (chmod 700 {self.path})"
            )

    def _key_file(self, name: str) -> Path:
        return self.path / f"{key_name(name)}.key"

    def _pub_file(self, name: str) -> Path:
        return self.path / f"{key_name(name)}.pub"

    # ------------------------------------------------------------------ API
    def init_institutions(self, names: list[str]) -> dict[str, bytes]:
        self._ensure_dir()
        out: dict[str, bytes] = {}
        for raw in names:
            name = key_name(raw)
            kf = self._key_file(name)
            if not kf.exists():
                sk = Ed25519PrivateKey.generate()
                pem = sk.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                tmp = self.path / f".{name}.key.tmp"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    os.fchmod(fd, 0o600)
                    os.write(fd, pem)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                try:
                    os.link(tmp, kf)  # fails if another process created the key meanwhile
                except FileExistsError:
                    pass
                finally:
                    os.unlink(tmp)
                pub = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
                pf = self._pub_file(name)
                if not pf.exists():
                    pf.write_text(pub.hex() + "\n", encoding="ascii")
            out[name] = self.public_key(name)
        return out

    def signer(self, name: str) -> LocalSigner:
        name = key_name(name)
        if name in self._cache:
            return self._cache[name]
        self._check_dir()
        kf = self._key_file(name)
        if not kf.exists():
            raise KeyNotFoundError(
                f"{kf}: no key for institution {name!r} in {self.path} "
                f"(run `bfdl keys init --institutions {name} --keystore {self.path}`)"
            )
        st = kf.stat()
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise KeyPermissionError(
                f"{kf}: key file has mode {mode:04o}; refusing to use a private key readable by "
                f"group or others (chmod 600 {kf})"
            )
        try:
            sk = serialization.load_pem_private_key(kf.read_bytes(), password=None)
        except (ValueError, TypeError):
            raise KeyStoreError(f"{kf}: not a valid PKCS#8 PEM private key") from None
        if not isinstance(sk, Ed25519PrivateKey):
            raise KeyStoreError(f"{kf}: not an Ed25519 private key")
        signer = LocalSigner(name, sk)
        pf = self._pub_file(name)
        if pf.exists() and pf.read_text(encoding="ascii").strip() != signer.public_key().hex():
            raise KeyStoreError(f"{pf}: public key file does not match {kf}")
        self._cache[name] = signer
        return signer

    def public_key(self, name: str) -> bytes:
        # Loads (and permission-checks) the private key: a store with a leaked key is unusable.
        return self.signer(name).public_key()

    def list(self) -> list[str]:
        """Institution key names in this store (a missing or loose store is an error)."""
        self._check_dir()
        return sorted(p.stem for p in self.path.glob("*.key") if not p.name.startswith("."))
