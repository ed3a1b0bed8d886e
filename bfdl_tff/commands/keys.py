"""``bfdl keys``: create and list institutional Ed25519 keys (paper 3.1, 3.4; local keystore or
Vault transit).

    bfdl keys init --institutions hospital-a,hospital-b,hospital-c,aggregator [--backend local|vault] [--keystore DIR]
    bfdl keys list [--backend local|vault] [--keystore DIR]

The local keystore defaults to ``$BFDL_KEYSTORE``, else ``~/.local/share/bfdl-tff/keystore``
(:func:`bfdl_tff.keys.keystore_dir`). An ``admin`` key (the consortium's registry authority) is
always created as well. Every hospital also gets an X25519 key-agreement (kx) key for secure
aggregation (issue 18) in ``<keystore>/kx/`` - with the vault backend too, since transit has no
X25519 key agreement; the listing shows its public key after ``kx``. Output lists names, roles and public keys only; private keys are never
printed. A missing store, a wrong Vault URL, token or mount is one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse

from bfdl_tff.config import KeysConfig
from bfdl_tff.keys import KeyStore
from bfdl_tff.secagg.keys import KxKeyStore

DEFAULT_INSTITUTIONS = "hospital-a,hospital-b,hospital-c,aggregator"


def _add_store_args(p: argparse.ArgumentParser) -> None:
    d = KeysConfig()
    p.add_argument("--backend", choices=("local", "vault"), default=d.backend)
    p.add_argument("--keystore", "--path", dest="keystore", default="",
                   help="local keystore directory (default $BFDL_KEYSTORE, else ~/.local/share/bfdl-tff/keystore)")
    p.add_argument("--vault-url", default=d.vault_url)
    p.add_argument("--vault-mount", default=d.vault_mount)
    p.add_argument("--vault-token-env", default=d.vault_token_env,
                   help="environment variable holding the Vault token (default %(default)s)")


def _store(args: argparse.Namespace) -> KeyStore:
    from bfdl_tff.keys import open_keystore

    cfg = KeysConfig(backend=args.backend, vault_url=args.vault_url, vault_mount=args.vault_mount,
                     vault_token_env=args.vault_token_env)
    return open_keystore(cfg, override=args.keystore or None)


def _kx_store(args: argparse.Namespace) -> KxKeyStore:
    """The local kx key store (``<keystore>/kx``), not created here."""
    from bfdl_tff.keys import keystore_dir

    return KxKeyStore(keystore_dir(KeysConfig(), override=args.keystore or None) / "kx")


def _print_table(store: KeyStore, names: list[str], kx: KxKeyStore) -> None:
    from bfdl_tff.keys import KeyStoreError, role_of

    print(f"# {store.describe()}; kx keys: local {kx.path}")
    for n in names:
        try:
            role = role_of(n)
        except KeyStoreError:
            role = "?"
        line = f"{n:<24} {role:<11} {store.public_key(n).hex()}"
        if role == "hospital" and kx.exists(n):
            line += f"  kx {kx.public_key(n).hex()}"
        print(line)


def _init(args: argparse.Namespace) -> int:
    from bfdl_tff.keys import ADMIN_NAME, KeyStoreError, key_name, role_of

    names = [key_name(n) for n in args.institutions.split(",") if n.strip()]
    if not names:
        raise KeyStoreError(f"--institutions {args.institutions!r}: no institution name given")
    for n in names:
        role_of(n)  # validate every name before creating anything
    if ADMIN_NAME not in names:
        names.append(ADMIN_NAME)
    store = _store(args)
    store.init_institutions(names)
    kx = _kx_store(args)
    for n in names:
        if role_of(n) == "hospital":
            kx.load_or_create(n)
    _print_table(store, names, kx)
    return 0


def _list(args: argparse.Namespace) -> int:
    store = _store(args)
    _print_table(store, store.list(), _kx_store(args))
    return 0


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = subparsers.add_parser("keys", help="institutional signing keys (local or Vault transit)")
    sub = p.add_subparsers(dest="keys_command", metavar="SUBCOMMAND")
    pi = sub.add_parser("init", help="create a key per institution (existing keys are kept)")
    pi.add_argument("--institutions", default=DEFAULT_INSTITUTIONS,
                    help="comma-separated names (default %(default)s); 'admin' is always added")
    _add_store_args(pi)
    pi.set_defaults(func=_init)
    pl = sub.add_parser("list", help="list keys: name, role, public key")
    _add_store_args(pl)
    pl.set_defaults(func=_list)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
