"""Independent verification of a replica's chain (paper 3.4 / claim C7: tampering and replay are
detectable from the chain itself).

``verify_chain(store_or_path, *, genesis)`` re-derives everything a replica committed: block 0 is
the genesis block of ``genesis``; for every later block the stored hash equals the recomputed
header hash, ``prev_hash`` links to the previous block, the Merkle root of the transactions equals
``tx_root``, every transaction signature verifies, re-executing the transactions from genesis
with a fresh :class:`~ledger.contracts.ContractState` reproduces every stored result (so only
registered, non-revoked signers' transactions took effect) and the resulting state root equals
the header's ``state_root``.  It stops at the first failure and names the block and transaction.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from .block import genesis_block
from .contracts import ContractState, Genesis
from .storage import LedgerStore, StorageCorruptError

__all__ = ["VerifyReport", "verify_chain"]


@dataclass
class VerifyReport:
    ok: bool
    blocks: int = 0
    txs: int = 0
    rejected_txs: int = 0
    head_height: int = -1
    head_hash: str | None = None
    state_root: str | None = None
    first_error: str | None = None
    failing_height: int | None = None
    failing_tx: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        if self.ok:
            return f"chain OK: {self.blocks} blocks, {self.txs} transactions, head {self.head_hash}"
        where = f"block {self.failing_height}" + (f" tx {self.failing_tx}" if self.failing_tx is not None else "")
        return f"chain INVALID at {where}: {self.first_error}"


def verify_chain(store_or_path: LedgerStore | str | os.PathLike, *, genesis: Genesis) -> VerifyReport:
    """Verify a whole chain; never raises for a damaged chain (the report says what failed)."""
    own = not isinstance(store_or_path, LedgerStore)
    rep = VerifyReport(ok=False)

    def fail(msg: str, height: int | None, tx: int | None = None) -> VerifyReport:
        rep.ok, rep.first_error, rep.failing_height, rep.failing_tx = False, msg, height, tx
        return rep

    if own:
        try:
            store = LedgerStore(store_or_path, verify="none")  # type: ignore[arg-type]
        except StorageCorruptError as exc:
            return fail(str(exc), exc.height)
    else:
        store = store_or_path  # type: ignore[assignment]
    try:
        if store.height < 0:
            return fail("the chain is empty (no genesis block)", 0)
        state = ContractState(genesis)
        gen_hash = genesis_block(genesis).hash()
        prev: bytes | None = None
        expected = 0
        it = store.iter_blocks(0)
        while True:
            try:
                block = next(it)
            except StopIteration:
                break
            except Exception as exc:  # undecodable row
                return fail(f"block does not decode: {type(exc).__name__}: {exc}", expected)
            h = block.height
            if h != expected:
                return fail(f"height {h} where {expected} was expected", expected)
            bh = block.hash()
            if store.block_hash(h) != bh:
                return fail("stored hash does not match the recomputed header hash", h)
            if h == 0:
                if bh != gen_hash:
                    return fail("block 0 is not the genesis block of this configuration", 0)
                prev = bh
                expected = 1
                rep.blocks = 1
                continue
            if block.header.prev_hash != prev:
                return fail("prev_hash does not link to the previous block", h)
            bad = block.check_body()
            if bad:
                return fail(bad, h)
            for i, tx in enumerate(block.txs):
                if not tx.verify_signature():
                    return fail(f"signature of transaction {tx.tx_hash().hex()[:16]} does not verify", h, i)
                got = state.apply(tx, height=h, timestamp_ms=block.header.timestamp_ms, check_signature=True)
                stored = block.results[i]
                if (got.ok, got.code, got.message) != (stored.ok, stored.code, stored.message):
                    return fail(
                        f"re-execution gives ({got.ok}, {got.code}) but the chain stores ({stored.ok}, {stored.code})",
                        h, i,
                    )
                rep.txs += 1
                rep.rejected_txs += 0 if got.ok else 1
            root = state.state_root()
            if root != block.header.state_root:
                return fail(
                    f"state root after re-execution {root.hex()[:16]} != header state_root "
                    f"{block.header.state_root.hex()[:16]}", h,
                )
            prev = bh
            expected += 1
            rep.blocks += 1
        rep.ok = True
        rep.head_height = expected - 1
        rep.head_hash = prev.hex() if prev else None
        rep.state_root = state.state_root().hex()
        return rep
    finally:
        if own:
            store.close()
