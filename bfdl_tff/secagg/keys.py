"""Keys of the secure-aggregation protocol (Bonawitz et al. 2017, section 4; paper 3.1).

* :class:`Signer` - an Ed25519 identity signer (``public_key() -> 32 bytes``, ``sign(msg) -> 64
  bytes``), the same structural protocol as ``ledger.crypto.Signer`` and
  ``bfdl_tff.keys.base.Signer``, restated here so this package imports neither. Any key-store
  signer (local file or Vault/OpenBao transit) can sign protocol messages.
* :class:`KxKey` - an X25519 key-agreement private key (long-term ``kx`` key, or the per-round
  ephemeral keys); ``exchange(peer_public)`` is ECDH.
* :class:`KxKeyStore` - the local store of long-term X25519 keys: ``<dir>/<name>.kx.key`` (raw
  32-byte private key, mode 0600, written with ``O_EXCL`` so it is never overwritten) and
  ``<dir>/<name>.kx.pub`` (hex), the directory mode 0700; files readable by group or others are
  refused. Vault/OpenBao transit offers Ed25519 signing but no X25519 key agreement, so the kx
  key lives in this local store even when the identity key lives in the vault backend.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from bfdl_tff.secagg.errors import BadKeyError, KxKeyStoreError

KEY_BYTES = 32
SIGNATURE_BYTES = 64
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_RAW = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@runtime_checkable
class Signer(Protocol):
    """Structural twin of ``ledger.crypto.Signer``: an Ed25519 key that signs without exposing itself."""

    def public_key(self) -> bytes: ...

    def sign(self, msg: bytes) -> bytes: ...


class Ed25519Signer:
    """A local in-memory Ed25519 :class:`Signer` (tests, benchmarks, simulations)."""

    def __init__(self, private_key: Ed25519PrivateKey | None = None) -> None:
        self._sk = private_key or Ed25519PrivateKey.generate()
        self._pub = self._sk.public_key().public_bytes(*_RAW)

    def public_key(self) -> bytes:
        return self._pub

    def sign(self, msg: bytes) -> bytes:
        return self._sk.sign(msg)

    def __repr__(self) -> str:
        return f"Ed25519Signer(pub={self._pub.hex()[:16]}...)"


def verify_signature(public_key: bytes, signature: bytes, msg: bytes) -> bool:
    """True iff ``signature`` is a valid Ed25519 signature of ``msg`` under ``public_key``."""
    if len(public_key) != KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes(public_key)).verify(bytes(signature), msg)
    except (InvalidSignature, ValueError):
        return False
    return True


class KxKey:
    """An X25519 private key; ``repr`` never shows the private part."""

    __slots__ = ("_sk", "_pub")

    def __init__(self, private_key: X25519PrivateKey) -> None:
        self._sk = private_key
        self._pub = private_key.public_key().public_bytes(*_RAW)

    @classmethod
    def generate(cls) -> "KxKey":
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> "KxKey":
        if not isinstance(data, (bytes, bytearray)) or len(data) != KEY_BYTES:
            raise BadKeyError(f"an X25519 private key is exactly {KEY_BYTES} bytes")
        return cls(X25519PrivateKey.from_private_bytes(bytes(data)))

    def public_bytes(self) -> bytes:
        return self._pub

    def private_bytes(self) -> bytes:
        """The raw private key: only for Shamir-sharing a per-round key and for the key file."""
        return self._sk.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    def exchange(self, peer_public: bytes) -> bytes:
        """X25519 ECDH with a peer's raw public key (rejects low-order points)."""
        if not isinstance(peer_public, (bytes, bytearray)) or len(peer_public) != KEY_BYTES:
            raise BadKeyError(f"an X25519 public key is exactly {KEY_BYTES} bytes")
        try:
            return self._sk.exchange(X25519PublicKey.from_public_bytes(bytes(peer_public)))
        except ValueError as exc:  # all-zero shared secret: small-order peer key
            raise BadKeyError(f"X25519 exchange with a low-order public key: {exc}") from None

    def __repr__(self) -> str:
        return f"KxKey(pub={self._pub.hex()[:16]}...)"


class KxKeyStore:
    """Long-term X25519 key-agreement keys of institutions, in a private local directory."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _check_name(self, name: str) -> str:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise KxKeyStoreError(f"{self.path}: invalid key name {name!r} (use [a-z0-9-], e.g. hospital-a)")
        return name

    def _key_file(self, name: str) -> Path:
        return self.path / f"{self._check_name(name)}.kx.key"

    def _pub_file(self, name: str) -> Path:
        return self.path / f"{self._check_name(name)}.kx.pub"

    def _check_mode(self, p: Path, what: str, fix: str) -> None:
        mode = stat.S_IMODE(p.stat().st_mode)
        if mode & 0o077:
            raise KxKeyStoreError(
                f"{p}: {what} has mode {mode:04o}; it must not be accessible to group or others ({fix} {p})"
            )

    def _ensure_dir(self) -> None:
        if not self.path.exists():
            self.path.mkdir(parents=True, mode=0o700)
            os.chmod(self.path, 0o700)  # mkdir's mode is filtered by the umask
        if not self.path.is_dir():
            raise KxKeyStoreError(f"{self.path}: key store path is not a directory")
        self._check_mode(self.path, "key store directory", "chmod 700")

    def exists(self, name: str) -> bool:
        return self._key_file(name).exists()

    def create(self, name: str) -> bytes:
        """Create ``name``'s kx key (error if it exists); return its 32-byte public key."""
        self._ensure_dir()
        kf = self._key_file(name)
        key = KxKey.generate()
        tmp = self.path / f".{name}.kx.key.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, key.private_bytes())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.link(tmp, kf)  # atomic, fails if the key exists: a key is never overwritten
        except FileExistsError:
            raise KxKeyStoreError(f"{kf}: a key-agreement key for {name!r} already exists") from None
        finally:
            os.unlink(tmp)
        pub_tmp = self.path / f".{name}.kx.pub.{os.getpid()}.tmp"
        pub_tmp.write_text(key.public_bytes().hex() + "\n", encoding="ascii")
        os.replace(pub_tmp, self._pub_file(name))
        return key.public_bytes()

    def load(self, name: str) -> KxKey:
        """``name``'s kx key; checks directory and file permissions and the public-key file."""
        kf = self._key_file(name)
        if not self.path.is_dir():
            raise KxKeyStoreError(f"{self.path}: key store directory does not exist")
        self._check_mode(self.path, "key store directory", "chmod 700")
        if not kf.exists():
            raise KxKeyStoreError(f"{kf}: no key-agreement key for {name!r}")
        self._check_mode(kf, "key file", "chmod 600")
        data = kf.read_bytes()
        if len(data) != KEY_BYTES:
            raise KxKeyStoreError(f"{kf}: not a raw {KEY_BYTES}-byte X25519 private key ({len(data)} bytes)")
        key = KxKey.from_private_bytes(data)
        pf = self._pub_file(name)
        if pf.exists() and pf.read_text(encoding="ascii").strip() != key.public_bytes().hex():
            raise KxKeyStoreError(f"{pf}: public key file does not match {kf}")
        return key

    def load_or_create(self, name: str) -> KxKey:
        if not self.exists(name):
            try:
                self.create(name)
            except KxKeyStoreError:
                if not self.exists(name):  # not a creation race: a real failure
                    raise
        return self.load(name)

    def public_key(self, name: str) -> bytes:
        """The 32-byte public key (from the private key, so a tampered .pub file is caught)."""
        return self.load(name).public_bytes()
