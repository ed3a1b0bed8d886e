"""The outbox: every round's signed transactions, persisted before any of them is submitted (issue
17.1, the durable round protocol; paper 3.1/3.4: a round's record on the ledger is what the
institutions signed, once).

``ledger/outbox/round_TTTT.json`` (directory 0700, file 0600, written atomically) holds the round's
transactions exactly as signed (``Transaction.to_dict()``) and the hospitals' commitment openings
of that signing. It is written by the ledger hook's worker after signing and before the first
submission, so a transaction of round ``t`` can only be on the chain if the outbox holds it:
a crashed round is finished on resume by re-submitting these transactions (those already on the
chain are recognised by hash and not re-sent), never by signing new content.

:meth:`Outbox.load` checks what it reads: the file parses, every transaction decodes strictly,
belongs to this chain and round, carries a valid signature, the round starts with ``round.open``
and ends with ``round.close``. Any failure raises :class:`OutboxError` naming the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.errors import TxDecodeError
from ledger.tx import Transaction

from bfdl_tff.integration.errors import LedgerHookError
from bfdl_tff.integration.round_txs import SignedRound
from bfdl_tff.io_utils import atomic_write_json

OUTBOX_VERSION = 1


class OutboxError(LedgerHookError):
    """An outbox file is unreadable or does not hold the round's signed transactions (names the file)."""


@dataclass(frozen=True)
class Outbox:
    """The outbox directory of one run's ledger (``LedgerFiles.outbox_dir``)."""

    directory: Path

    def path(self, round_num: int) -> Path:
        return self.directory / f"round_{int(round_num):04d}.json"

    def has(self, round_num: int) -> bool:
        return self.path(round_num).is_file()

    def rounds(self) -> list[int]:
        """Rounds with an outbox file, ascending."""
        if not self.directory.is_dir():
            return []
        out = []
        for p in self.directory.glob("round_*.json"):
            stem = p.stem.split("_", 1)[1]
            if stem.isdigit():
                out.append(int(stem))
        return sorted(out)

    def save(self, signed: SignedRound, *, chain_id: str) -> None:
        """Persist ``signed`` (atomic; the file is 0600 in a 0700 directory)."""
        if not self.directory.exists():
            self.directory.mkdir(mode=0o700, parents=True)
            os.chmod(self.directory, 0o700)
        atomic_write_json(self.path(signed.round_num), {
            "version": OUTBOX_VERSION, "round": signed.round_num, "chain_id": chain_id,
            "txs": [t.to_dict() for t in signed.txs],
            "openings": [[k, op] for k, op in signed.openings],
        })

    def load(self, round_num: int, *, chain_id: str) -> SignedRound:
        """The round's signed transactions, checked (raises :class:`OutboxError`)."""
        path = self.path(round_num)
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
            if obj.get("version") != OUTBOX_VERSION or obj.get("round") != round_num:
                raise ValueError(f"not the version-{OUTBOX_VERSION} outbox of round {round_num}")
            if obj.get("chain_id") != chain_id:
                raise ValueError(f"written for chain {obj.get('chain_id')!r}, this run's chain is {chain_id!r}")
            txs = [Transaction.from_dict(d) for d in obj["txs"]]
            openings = [(str(k), dict(op)) for k, op in obj["openings"]]
        except (OSError, ValueError, KeyError, TypeError, AttributeError, TxDecodeError) as e:
            raise OutboxError(f"{path}: unreadable outbox ({e})") from None
        problem = _problem(txs, round_num, chain_id)
        if problem:
            raise OutboxError(f"{path}: {problem}")
        return SignedRound(round_num=round_num, txs=txs, openings=openings)

    def set_aside(self, round_num: int, why: str) -> Path:
        """Rename round ``round_num``'s file to ``round_TTTT.<why>-<n>.json`` (kept, never deleted)."""
        src = self.path(round_num)
        n = 1
        while (dst := src.with_name(f"{src.stem}.{why}-{n}.json")).exists():
            n += 1
        src.rename(dst)
        return dst


def _problem(txs: list[Transaction], round_num: int, chain_id: str) -> str | None:
    """What is wrong with a round's signed transactions, or ``None``."""
    if len(txs) < 2 or txs[0].kind != "round.open" or txs[-1].kind != "round.close":
        return "a round's transactions start with round.open and end with round.close"
    for i, t in enumerate(txs):
        where = f"transaction {i} ({t.kind})"
        if t.chain_id != chain_id:
            return f"{where} belongs to chain {t.chain_id!r}"
        p: Any = t.payload
        if p.get("round") != round_num:
            return f"{where} is for round {p.get('round')!r}, not {round_num}"
        if not t.verify_signature():
            return f"{where}: the signature does not verify"
    if len({t.tx_hash() for t in txs}) != len(txs):
        return "a transaction appears twice"
    return None


__all__ = ["OUTBOX_VERSION", "Outbox", "OutboxError"]
