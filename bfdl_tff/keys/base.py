"""The institutional key store: one Ed25519 identity per institution (paper 3.1, 3.4).

Every B-FDL ledger transaction is signed by the institution it speaks for: each hospital signs
its own participation and update commitment, the aggregator signs the global-model commitment,
the privacy record, the metrics and the round open/close, and an ``admin`` identity (the
consortium's governance key, created beside the others) signs the registry transactions.

A :class:`KeyStore` hands out :class:`ledger.crypto.Signer`-compatible objects (``public_key()``
-> 32 raw bytes, ``sign(msg)`` -> 64-byte Ed25519 signature) without exposing private keys:

* ``local`` (:mod:`bfdl_tff.keys.local`): PKCS#8 files in a 0700 directory, mode 0600;
* ``vault`` (:mod:`bfdl_tff.keys.vault`): a Vault-compatible transit engine signs in the
  server; only public keys leave it.

Key names are institution names normalised to ``[a-z0-9-]`` (``hospital_a`` -> ``hospital-a``).
The role of an institution follows from its name: ``hospital*`` -> hospital, ``aggregator*`` ->
aggregator, ``admin*`` -> admin, ``auditor*`` -> auditor.
"""

from __future__ import annotations

import re
from typing import Protocol, runtime_checkable

from bfdl_tff.errors import BfdlError

ADMIN_NAME = "admin"
AGGREGATOR_NAME = "aggregator"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
ROLES = ("hospital", "aggregator", "admin", "auditor")


class KeyStoreError(BfdlError):
    """A key store cannot be used (names the store, the key and the problem)."""


class KeyNotFoundError(KeyStoreError):
    """The requested institution has no key in this store."""


class KeyPermissionError(KeyStoreError):
    """A local key file or directory is readable by other users."""


class KeyBackendUnavailableError(KeyStoreError):
    """The signing server is stopped, unreachable or sealed."""


class KeyAuthError(KeyStoreError):
    """The signing server refused the credentials (wrong or expired token)."""


@runtime_checkable
class Signer(Protocol):
    """Structural twin of :class:`ledger.crypto.Signer`."""

    def public_key(self) -> bytes: ...

    def sign(self, msg: bytes) -> bytes: ...


def key_name(institution: str) -> str:
    """Normalise an institution name to a key name (``Hospital_A`` -> ``hospital-a``)."""
    name = institution.strip().lower().replace("_", "-")
    if not _NAME_RE.match(name):
        raise KeyStoreError(
            f"invalid institution name {institution!r}: use letters, digits, '-' or '_' (max 63)"
        )
    return name


def role_of(institution: str) -> str:
    """The ledger registry role of an institution, from its name."""
    name = key_name(institution)
    for role in ROLES:
        if name == role or name.startswith(role):
            return role
    raise KeyStoreError(
        f"cannot infer the role of {institution!r}: names must start with one of {', '.join(ROLES)}"
    )


class KeyStore(Protocol):
    """What the round hook and ``bfdl keys`` need from a key backend."""

    backend: str

    def describe(self) -> str:
        """Where the keys live (a directory or a server URL and mount); never key material."""
        ...

    def init_institutions(self, names: list[str]) -> dict[str, bytes]:
        """Create a key for each name that has none; return ``{key name: public key}``."""
        ...

    def signer(self, name: str) -> Signer:
        """A signer for an existing key (raises :class:`KeyNotFoundError`)."""
        ...

    def public_key(self, name: str) -> bytes:
        """The 32-byte Ed25519 public key of an existing key."""
        ...

    def list(self) -> list[str]:
        """Key names in this store, sorted."""
        ...
