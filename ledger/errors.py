"""The ledger's own error types (paper 3.4; issue 13.1: ``ledger`` stands alone).

Every error the ledger reports to a user derives from :class:`LedgerError`: its message is one
line naming the file (database, key file, genesis, config) or the operation, and the problem.
Command-line front ends (``python -m ledger``, ``bfdl ledger``) print it as one line and exit
with :attr:`LedgerError.exit_code`. Decoders of network input raise the specific subclasses
below and nothing else.
"""

from __future__ import annotations

__all__ = [
    "BlockDecodeError",
    "CanonicalEncodingError",
    "KeyFileError",
    "LedgerError",
    "MessageDecodeError",
    "OffchainIntegrityError",
    "SnapshotError",
    "StorageCorruptError",
    "StorageError",
    "TxDecodeError",
]


class LedgerError(Exception):
    """Base class: a ledger operation failed (no commit within the bound, no f+1 agreement, a bad
    config, key or database file). The message is one line naming the file or operation."""

    exit_code = 2


class CanonicalEncodingError(LedgerError, ValueError):
    """An object cannot be canonically encoded (NaN/Inf, non-str key, non-JSON type)."""


class TxDecodeError(LedgerError, ValueError):
    """Bytes are not a well-formed, canonical transaction encoding."""


class BlockDecodeError(TxDecodeError):
    """A header, block or commit-certificate encoding is malformed."""


class MessageDecodeError(LedgerError, ValueError):
    """A PBFT frame is malformed, truncated, oversized or of an unknown type."""


class StorageError(LedgerError):
    """A write would break the chain (wrong height or previous hash), or the store is closed."""


class StorageCorruptError(LedgerError):
    """The database is damaged or was altered; names the file and the first bad block."""

    def __init__(self, path: str, height: int | None, problem: str) -> None:
        self.path = path
        self.height = height
        self.problem = problem
        where = f"block {height}" if height is not None else "database"
        super().__init__(f"{path}: ledger storage corrupt at {where}: {problem}; refusing to start")


class SnapshotError(LedgerError, ValueError):
    """A stored chain or a state-transfer snapshot does not belong to this genesis."""


class OffchainIntegrityError(LedgerError):
    """A stored off-chain object does not hash to its address, or an address is malformed."""


class KeyFileError(LedgerError):
    """A replica key file or key directory is missing, malformed, too permissive, or does not
    match the replica set listed in the genesis."""
