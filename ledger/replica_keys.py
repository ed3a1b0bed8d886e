"""Replica signing keys as files (paper 3.4: PBFT replicas sign their votes; issue 17.2).

Each replica ``i`` of a cluster has its own Ed25519 key, generated from the operating system's
randomness the first time it is needed and stored as ``<keys_dir>/replica-<i>.key``: one line,
the hex of the 32-byte private seed, file mode 0600, directory mode 0700. Keys are never derived
from a public value (the cluster config's ``seed`` is gone): whoever rebuilds a chain without
these files cannot produce the commit certificates of :mod:`ledger.certificate`.

Files are created atomically (written to a temporary file, then hard-linked to the final name,
which fails if another process created the key first) and never overwritten. A key file or key
directory readable by group or others is refused, as ``ssh`` does.
"""

from __future__ import annotations

import os
from pathlib import Path

from ledger import crypto
from ledger.errors import KeyFileError

__all__ = ["key_path", "load_replica_key", "load_or_create_replica_keys", "replica_public_keys"]


def key_path(keys_dir: str | os.PathLike, rid: int) -> Path:
    """``<keys_dir>/replica-<rid>.key``."""
    return Path(keys_dir) / f"replica-{int(rid)}.key"


def _ensure_dir(keys_dir: Path, *, create: bool) -> None:
    if not keys_dir.exists():
        if not create:
            raise KeyFileError(f"{keys_dir}: replica key directory does not exist")
        keys_dir.mkdir(parents=True, mode=0o700)
        os.chmod(keys_dir, 0o700)  # mkdir's mode is filtered by the umask
    if not keys_dir.is_dir():
        raise KeyFileError(f"{keys_dir}: replica key directory is not a directory")
    if keys_dir.stat().st_mode & 0o077:
        raise KeyFileError(f"{keys_dir}: replica key directory is accessible to group or others "
                           f"(chmod 700 {keys_dir})")


def load_replica_key(keys_dir: str | os.PathLike, rid: int) -> crypto.SigningKey:
    """Read replica ``rid``'s key; :class:`KeyFileError` if missing, malformed or too permissive."""
    keys_dir = Path(keys_dir)
    _ensure_dir(keys_dir, create=False)
    p = key_path(keys_dir, rid)
    try:
        st = p.stat()
        text = p.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise KeyFileError(f"{p}: replica key file does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise KeyFileError(f"{p}: cannot read replica key: {e}") from None
    if st.st_mode & 0o077:
        raise KeyFileError(f"{p}: replica key file is readable by group or others (chmod 600 {p})")
    if not crypto.is_hex(text, crypto.SEED_BYTES):
        raise KeyFileError(f"{p}: not a replica key (one line of 64 lowercase hex characters expected)")
    return crypto.SigningKey.from_seed(bytes.fromhex(text))


def _create_key(keys_dir: Path, rid: int) -> None:
    final = key_path(keys_dir, rid)
    tmp = keys_dir / f".replica-{rid}.key.{os.getpid()}.tmp"
    key = crypto.SigningKey.generate()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (key.seed().hex() + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, final)  # fails if the key exists: a key is never overwritten
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


def load_or_create_replica_keys(keys_dir: str | os.PathLike, n: int) -> list[crypto.SigningKey]:
    """The signing keys of replicas ``0..n-1``, creating the missing ones (dir 0700, files 0600)."""
    if n < 1:
        raise KeyFileError(f"{keys_dir}: a ledger needs at least one replica key (n = {n})")
    keys_dir = Path(keys_dir)
    _ensure_dir(keys_dir, create=True)
    for i in range(n):
        if not key_path(keys_dir, i).exists():
            _create_key(keys_dir, i)
    keys = [load_replica_key(keys_dir, i) for i in range(n)]
    if len({k.key_id() for k in keys}) != n:
        raise KeyFileError(f"{keys_dir}: two replicas share one key")
    return keys


def replica_public_keys(keys_dir: str | os.PathLike, n: int) -> tuple[str, ...]:
    """Hex public keys of replicas ``0..n-1`` (keys created if missing): ``Genesis.replicas``."""
    return tuple(k.key_id() for k in load_or_create_replica_keys(keys_dir, n))
