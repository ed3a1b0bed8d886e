"""``bfdl keys``: create and list institutional Ed25519 keys (local directory or Vault transit).

    bfdl keys init --institutions hospital-a,hospital-b,hospital-c,aggregator [--backend local|vault] [--path DIR]
    bfdl keys list [--backend local|vault] [--path DIR]

An ``admin`` key (the consortium's registry authority) is always created as well. Output lists
names, roles and public key ids only; private keys are never printed.
"""

from __future__ import annotations

import argparse

DEFAULT_INSTITUTIONS = "hospital-a,hospital-b,hospital-c,aggregator"


def _add_store_args(p: argparse.ArgumentParser) -> None:
    from bfdl_tff.config import KeysConfig

    d = KeysConfig()
    p.add_argument("--backend", choices=("local", "vault"), default=d.backend)
    p.add_argument("--path", default="", help="local keystore directory (default ~/.bfdl/keys)")
    p.add_argument("--vault-url", default=d.vault_url)
    p.add_argument("--vault-mount", default=d.vault_mount)
    p.add_argument("--vault-token-env", default=d.vault_token_env,
                   help="environment variable holding the Vault token (default %(default)s)")


def _store(args: argparse.Namespace):
    from bfdl_tff.config import KeysConfig
    from bfdl_tff.keys import open_keystore

    cfg = KeysConfig(
        backend=args.backend,
        path=args.path,
        vault_url=args.vault_url,
        vault_mount=args.vault_mount,
        vault_token_env=args.vault_token_env,
    )
    return open_keystore(cfg)


def _print_table(store, names: list[str]) -> None:
    from bfdl_tff.keys import KeyStoreError, role_of

    print(f"# {store.describe()}")
    for n in names:
        try:
            role = role_of(n)
        except KeyStoreError:
            role = "?"
        print(f"{n:<24} {role:<11} {store.public_key(n).hex()}")


def _init(args: argparse.Namespace) -> int:
    from bfdl_tff.keys import ADMIN_NAME, key_name, role_of

    names = [key_name(n) for n in args.institutions.split(",") if n.strip()]
    for n in names:
        role_of(n)  # validate early
    if ADMIN_NAME not in names:
        names.append(ADMIN_NAME)
    store = _store(args)
    store.init_institutions(names)
    _print_table(store, names)
    return 0


def _list(args: argparse.Namespace) -> int:
    store = _store(args)
    _print_table(store, store.list())
    return 0


def register(subparsers: "argparse._SubParsersAction") -> None:
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
