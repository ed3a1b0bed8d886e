"""Vault key store: institution keys live in a Vault-compatible transit engine (hvac client).

Each institution has a transit key of type ``ed25519`` created non-exportable: signing happens
inside the server (``POST <mount>/sign/<name>``) and private keys never leave it; the public key
(``GET <mount>/keys/<name>``) is exported so the ledger registry and every replica can verify
signatures locally with :func:`ledger.crypto.verify`. Tested against OpenBao (``bao server
-dev``), which implements the same HTTP API as HashiCorp Vault.

The token is read from an environment variable (``KeysConfig.vault_token_env``, default
``VAULT_TOKEN``), never from a configuration file. Signatures are pinned to the key version whose
public key was read, so a rotation on the server cannot silently produce signatures the registry
does not know. Errors are mapped to one-line :class:`KeyStoreError` subclasses: unreachable or
sealed server, refused token, missing key, missing transit mount.
"""

from __future__ import annotations

import base64
import os
from typing import Any, Callable, TypeVar

from bfdl_tff.keys.base import (
    KeyAuthError,
    KeyBackendUnavailableError,
    KeyNotFoundError,
    KeyStoreError,
    key_name,
)

T = TypeVar("T")


def token_from_env(env_var: str) -> str:
    token = os.environ.get(env_var, "")
    if not token:
        raise KeyAuthError(
            f"vault key store: environment variable {env_var} is not set (the Vault token is read "
            "from the environment, never from a config file)"
        )
    return token


def _one_line(err: BaseException) -> str:
    """hvac puts the server's whole response body in its messages: keep one line, no HTML."""
    msg = str(err).split(", on ")[0].strip()
    if "<html" in msg.lower() or "<!doctype" in msg.lower():
        return "the server answered with an HTML page (not a Vault/OpenBao API; check keys.vault_url)"
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    return (lines[0] if lines else type(err).__name__)[:200]


def _describe_response(resp: object) -> str:
    """hvac returns the raw ``requests.Response`` when a server's answer is not Vault JSON."""
    import requests

    if not isinstance(resp, requests.Response):
        return f"a {type(resp).__name__}"
    return f"HTTP {resp.status_code} with {resp.headers.get('Content-Type', '?').split(';')[0]}"


class VaultSigner:
    def __init__(self, store: "VaultKeyStore", name: str, version: int, public_key: bytes) -> None:
        self.store = store
        self.name = name
        self.version = version
        self._pub = public_key

    def public_key(self) -> bytes:
        return self._pub

    def sign(self, msg: bytes) -> bytes:
        return self.store._sign(self.name, self.version, msg)

    def __repr__(self) -> str:
        return f"VaultSigner({self.name!r} v{self.version} @ {self.store.url})"


class VaultKeyStore:
    backend = "vault"

    def __init__(self, url: str, token: str, *, mount: str = "transit", timeout: float = 5.0) -> None:
        import hvac  # local import: optional dependency

        self.url = url
        self.mount = mount
        self._client = hvac.Client(url=url, token=token, timeout=timeout)
        self._signers: dict[str, VaultSigner] = {}
        self._checked = False

    @classmethod
    def from_env(cls, url: str, *, token_env: str = "VAULT_TOKEN", mount: str = "transit") -> "VaultKeyStore":
        return cls(url, token_from_env(token_env), mount=mount)

    def describe(self) -> str:
        return f"vault transit engine {self.url} mount {self.mount!r}"

    # ------------------------------------------------------------------ error mapping
    def _call(self, what: str, fn: Callable[[], T], *, key: str | None = None) -> T:
        import hvac.exceptions as hx
        import requests

        where = f"vault {self.url} (mount {self.mount!r})"
        try:
            return fn()
        except requests.exceptions.RequestException as e:
            raise KeyBackendUnavailableError(
                f"{where}: server unreachable while trying to {what} ({type(e).__name__}); "
                "is it running and is the URL right?"
            ) from None
        except (hx.Unauthorized, hx.Forbidden):
            raise KeyAuthError(
                f"{where}: permission denied while trying to {what}: wrong or expired token, or "
                "a token without transit policy"
            ) from None
        except hx.VaultDown:
            raise KeyBackendUnavailableError(f"{where}: server is sealed or down while trying to {what}") from None
        except hx.InvalidPath:
            if key is not None:
                raise KeyNotFoundError(
                    f"{where}: no transit key {key!r} (run `bfdl keys init --backend vault "
                    f"--institutions {key}`), or no transit engine at this mount"
                ) from None
            raise KeyStoreError(f"{where}: path not found while trying to {what}") from None
        except hx.InvalidRequest as e:
            msg = _one_line(e)
            if key is not None and "not found" in msg:
                raise KeyNotFoundError(f"{where}: no transit key {key!r} ({msg})") from None
            raise KeyStoreError(f"{where}: request refused while trying to {what}: {msg}") from None
        except hx.VaultError as e:
            raise KeyStoreError(f"{where}: error while trying to {what}: {_one_line(e)}") from None

    def check(self) -> None:
        """Fail early with one clear line if the URL is not a Vault server, the server is sealed,
        the token is refused or the mount is not a transit engine (checked once per store)."""
        if self._checked:
            return
        status: Any = self._call("read health", lambda: self._client.sys.read_health_status(method="GET"))
        if not isinstance(status, dict) or "initialized" not in status:
            raise KeyBackendUnavailableError(
                f"vault {self.url}: not a Vault/OpenBao server (GET /v1/sys/health answered "
                f"{_describe_response(status)}); check keys.vault_url"
            )
        if status.get("sealed"):
            raise KeyBackendUnavailableError(f"vault {self.url}: server is sealed")
        if not self._call("check the token", self._client.is_authenticated):
            raise KeyAuthError(f"vault {self.url}: the token was refused (wrong or expired token)")
        mounts = self._call("list secret engines", self._client.sys.list_mounted_secrets_engines)
        data = mounts.get("data", mounts) if isinstance(mounts, dict) else {}
        entry = data.get(self.mount.rstrip("/") + "/")
        if entry is None or entry.get("type") != "transit":
            raise KeyStoreError(
                f"vault {self.url}: no transit engine at mount {self.mount!r} "
                f"(enable it with `bao secrets enable -path={self.mount} transit`)"
            )
        self._checked = True

    # ------------------------------------------------------------------ API
    def init_institutions(self, names: list[str]) -> dict[str, bytes]:
        self.check()
        existing = set(self.list())
        out = {}
        for raw in names:
            name = key_name(raw)
            if name not in existing:
                self._call(
                    f"create key {name!r}",
                    lambda: self._client.secrets.transit.create_key(
                        name, key_type="ed25519", exportable=False, mount_point=self.mount
                    ),
                )
            out[name] = self.public_key(name)
        return out

    def _read(self, name: str) -> tuple[int, bytes]:
        resp = self._call(
            f"read key {name!r}",
            lambda: self._client.secrets.transit.read_key(name, mount_point=self.mount),
            key=name,
        )
        data = resp["data"]
        if data.get("type") not in (None, "ed25519"):
            raise KeyStoreError(f"vault {self.url}: transit key {name!r} is {data.get('type')}, not ed25519")
        if data.get("exportable"):
            raise KeyStoreError(
                f"vault {self.url}: transit key {name!r} is exportable; institution keys must not "
                "leave the server"
            )
        version = int(data.get("latest_version") or max(int(v) for v in data["keys"]))
        pub_b64 = data["keys"][str(version)]["public_key"]
        pub = base64.b64decode(pub_b64)
        if len(pub) != 32:
            raise KeyStoreError(f"vault {self.url}: transit key {name!r} has a {len(pub)}-byte public key")
        return version, pub

    def signer(self, name: str) -> VaultSigner:
        name = key_name(name)
        if name not in self._signers:
            self.check()
            version, pub = self._read(name)
            self._signers[name] = VaultSigner(self, name, version, pub)
        return self._signers[name]

    def public_key(self, name: str) -> bytes:
        return self.signer(name).public_key()

    def list(self) -> list[str]:
        """Key names at the mount; a wrong URL, token or mount is an error, not an empty list."""
        import hvac.exceptions as hx

        self.check()

        def list_or_empty() -> Any:
            try:
                return self._client.secrets.transit.list_keys(mount_point=self.mount)
            except hx.InvalidPath:  # a transit engine without any key answers 404
                return {"data": {"keys": []}}

        resp = self._call("list keys", list_or_empty)
        return sorted(resp["data"]["keys"])

    def _sign(self, name: str, version: int, msg: bytes) -> bytes:
        resp = self._call(
            f"sign with key {name!r}",
            lambda: self._client.secrets.transit.sign_data(
                name,
                hash_input=base64.b64encode(msg).decode("ascii"),
                key_version=version,
                mount_point=self.mount,
            ),
            key=name,
        )
        sig = resp["data"]["signature"]
        prefix = f"vault:v{version}:"
        if not sig.startswith(prefix):
            raise KeyStoreError(f"vault {self.url}: unexpected signature format for key {name!r}: {sig[:12]}...")
        raw = base64.b64decode(sig[len(prefix):])
        if len(raw) != 64:
            raise KeyStoreError(f"vault {self.url}: key {name!r} returned a {len(raw)}-byte signature")
        return raw
