"""Institutional keys for the B-FDL ledger (paper 3.1, 3.4): a :class:`KeyStore` with ``local``
and ``vault`` backends (see :mod:`bfdl_tff.keys.base`), and where a local keystore lives.

Keys live away from the data they sign (issue 17.4): the local keystore is a per-user directory,
never inside a run directory. Its location, first match wins:

1. an explicit override (``bfdl keys --keystore DIR``),
2. ``keys.path`` in the experiment config,
3. ``$BFDL_KEYSTORE``,
4. ``~/.local/share/bfdl-tff/keystore``.

Layout: ``<keystore>/<institution>.key`` (one private key file per institution, 0600; the
directory 0700), ``<keystore>/ledger/<chain id>/`` (the replica keys of one run's ledger,
0700) and ``<keystore>/kx/`` (each hospital's X25519 key-agreement key for secure aggregation,
``<name>.kx.key`` 0600; :func:`kx_keys_dir`). With the ``vault`` backend the institution keys stay
in the Vault server; the replica keys and the kx keys still go to the local keystore directory
(transit has no X25519 key agreement).
"""

from __future__ import annotations

import os
from pathlib import Path

from bfdl_tff.config import KeysConfig
from bfdl_tff.secagg.keys import KxKeyStore
from bfdl_tff.keys.base import (
    ADMIN_NAME,
    AGGREGATOR_NAME,
    KeyAuthError,
    KeyBackendUnavailableError,
    KeyNotFoundError,
    KeyPermissionError,
    KeyStore,
    KeyStoreError,
    Signer,
    key_name,
    role_of,
)

#: Environment variable naming the local keystore directory.
KEYSTORE_ENV = "BFDL_KEYSTORE"


def default_keystore_dir() -> Path:
    """``$BFDL_KEYSTORE`` if set, else ``~/.local/share/bfdl-tff/keystore``."""
    env = os.environ.get(KEYSTORE_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".local" / "share" / "bfdl-tff" / "keystore"


def keystore_dir(cfg: KeysConfig, *, override: str | Path | None = None) -> Path:
    """The local keystore directory: ``override``, else ``cfg.path``, else the default."""
    if override:
        return Path(override).expanduser()
    if cfg.path:
        return Path(cfg.path).expanduser()
    return default_keystore_dir()


def ensure_outside(keystore: Path, run_dir: Path) -> None:
    """Refuse a keystore inside ``run_dir``: a run directory handed to a reviewer holds no key."""
    ks, rd = keystore.expanduser().resolve(), run_dir.resolve()
    if ks == rd or rd in ks.parents:
        raise KeyStoreError(
            f"{keystore}: the keystore is inside the run directory {run_dir}; keys must live "
            f"outside it (set keys.path or ${KEYSTORE_ENV} to another directory)"
        )


def _private_dir(path: Path) -> Path:
    if not path.exists():
        path.mkdir(parents=True, mode=0o700)
    os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
    return path


def replica_keys_dir(keystore: Path, chain_id: str) -> Path:
    """``<keystore>/ledger/<chain id>/`` (created 0700): the replica signing keys of one chain,
    passed to :class:`ledger.cluster.LocalCluster` as ``keys_dir``."""
    if not chain_id or "/" in chain_id or chain_id in (".", ".."):
        raise KeyStoreError(f"invalid chain id {chain_id!r} for a replica key directory")
    _private_dir(keystore)
    return _private_dir(_private_dir(keystore / "ledger") / chain_id)


def kx_keys_dir(keystore: Path) -> Path:
    """``<keystore>/kx/``: the hospitals' long-term X25519 key-agreement keys for secure
    aggregation (``bfdl_tff.secagg.KxKeyStore``; issue 18.1). Local with every backend: a
    Vault/OpenBao transit engine signs with Ed25519 but offers no X25519 key agreement, so the
    kx key cannot stay in the vault (``docs/secagg.md``)."""
    _private_dir(keystore)
    return keystore / "kx"


def open_kx_store(cfg: KeysConfig, *, override: str | Path | None = None) -> KxKeyStore:
    """The kx key store under the local keystore directory of ``cfg`` (any backend)."""
    return KxKeyStore(kx_keys_dir(keystore_dir(cfg, override=override)))


def open_keystore(cfg: KeysConfig, *, override: str | Path | None = None) -> KeyStore:
    """Open the key store described by ``cfg`` (``local``: :func:`keystore_dir`; ``vault``:
    ``cfg.vault_url`` and ``cfg.vault_mount``, token from ``$<cfg.vault_token_env>``)."""
    if cfg.backend == "local":
        from bfdl_tff.keys.local import LocalKeyStore

        return LocalKeyStore(keystore_dir(cfg, override=override))
    if cfg.backend == "vault":
        from bfdl_tff.keys.vault import VaultKeyStore

        return VaultKeyStore.from_env(cfg.vault_url, token_env=cfg.vault_token_env, mount=cfg.vault_mount)
    raise KeyStoreError(f"unknown key backend {cfg.backend!r} (use local or vault)")


__all__ = [
    "ADMIN_NAME",
    "AGGREGATOR_NAME",
    "KEYSTORE_ENV",
    "KeyAuthError",
    "KeyBackendUnavailableError",
    "KeyNotFoundError",
    "KeyPermissionError",
    "KeyStore",
    "KeyStoreError",
    "Signer",
    "default_keystore_dir",
    "ensure_outside",
    "key_name",
    "keystore_dir",
    "kx_keys_dir",
    "open_kx_store",
    "open_keystore",
    "replica_keys_dir",
    "role_of",
]
