"""Institutional keys for the B-FDL ledger: a :class:`KeyStore` with ``local`` and ``vault``
backends (see :mod:`bfdl_tff.keys.base`)."""

from __future__ import annotations

from pathlib import Path

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

DEFAULT_LOCAL_PATH = Path.home() / ".bfdl" / "keys"


def open_keystore(cfg: "object", *, run_dir: str | Path | None = None, path: str | Path | None = None) -> KeyStore:
    """Open the key store described by a :class:`bfdl_tff.config.KeysConfig`.

    ``local``: ``path`` argument, else ``cfg.path``, else ``<run_dir>/keys``, else ``~/.bfdl/keys``.
    ``vault``: ``cfg.vault_url`` and ``cfg.vault_mount``, token from ``$<cfg.vault_token_env>``.
    """
    backend = getattr(cfg, "backend", "local")
    if backend == "local":
        from bfdl_tff.keys.local import LocalKeyStore

        if path is None:
            if getattr(cfg, "path", ""):
                path = Path(cfg.path)  # type: ignore[attr-defined]
            elif run_dir is not None:
                path = Path(run_dir) / "keys"
            else:
                path = DEFAULT_LOCAL_PATH
        return LocalKeyStore(path)
    if backend == "vault":
        from bfdl_tff.keys.vault import VaultKeyStore

        return VaultKeyStore.from_env(
            cfg.vault_url,  # type: ignore[attr-defined]
            token_env=cfg.vault_token_env,  # type: ignore[attr-defined]
            mount=cfg.vault_mount,  # type: ignore[attr-defined]
        )
    raise KeyStoreError(f"unknown key backend {backend!r} (use local or vault)")


__all__ = [
    "ADMIN_NAME",
    "AGGREGATOR_NAME",
    "DEFAULT_LOCAL_PATH",
    "KeyAuthError",
    "KeyBackendUnavailableError",
    "KeyNotFoundError",
    "KeyPermissionError",
    "KeyStore",
    "KeyStoreError",
    "Signer",
    "key_name",
    "open_keystore",
    "role_of",
]
