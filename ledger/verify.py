"""Independent verification of a replica's chain (paper 3.4 / claim C7: tampering and replay are
detectable from the chain itself).

``verify_chain(store_or_path, *, genesis)`` re-derives everything a replica committed: block 0 is
the genesis block of ``genesis``; for every later block the stored hash equals the recomputed
header hash, ``prev_hash`` links to the previous block, the Merkle root of the transactions equals
``tx_root``, the block's commit certificate holds 2f+1 valid COMMIT signatures of distinct
replicas listed in ``genesis.replicas`` for exactly this block's batch (:mod:`ledger.certificate`;
a history rebuilt without the replica keys fails here), every transaction signature verifies,
re-executing the transactions from genesis with a fresh :class:`~ledger.contracts.ContractState` reproduces every stored result (so only
registered, non-revoked signers' transactions took effect) and the resulting state root equals
the header's ``state_root``.  It stops at the first failure and names the block and transaction.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from .block import Block, genesis_block
from .certificate import CommitCertificate, check_certificate, keyring_of
from .contracts import ContractState, Genesis
from .errors import BlockDecodeError
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
    certificates_checked: bool = False  # every block's commit certificate checked against genesis.replicas

    def fail(self, msg: str, height: int | None, tx: int | None = None) -> "VerifyReport":
        self.ok, self.first_error, self.failing_height, self.failing_tx = False, msg, height, tx
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        if self.ok:
            return f"chain OK: {self.blocks} blocks, {self.txs} transactions, head {self.head_hash}"
        where = f"block {self.failing_height}" + (f" tx {self.failing_tx}" if self.failing_tx is not None else "")
        return f"chain INVALID at {where}: {self.first_error}"


def verify_chain(store_or_path: LedgerStore | str | os.PathLike, *, genesis: Genesis,
                 require_certificates: bool = True) -> VerifyReport:
    """Verify a whole chain; never raises for a damaged chain (the report says what failed).

    ``require_certificates``: every block above 0 must carry a commit certificate of 2f+1
    distinct replicas listed in ``genesis.replicas`` (a genesis without replicas then fails).
    ``False`` only for chains from before commit certificates: certificates are not checked.
    """
    rep = VerifyReport(ok=False)
    if require_certificates and not genesis.replicas:
        return rep.fail("the genesis lists no replica keys: commit certificates cannot be checked", 0)
    own = not isinstance(store_or_path, LedgerStore)
    if own:
        try:
            store = LedgerStore(store_or_path, verify="none")  # type: ignore[arg-type]
        except StorageCorruptError as exc:
            return rep.fail(str(exc), exc.height)
    else:
        store = store_or_path  # type: ignore[assignment]
    try:
        return _ChainCheck(store, genesis, rep, require_certificates).run()
    finally:
        if own:
            store.close()


class _ChainCheck:
    """One pass over the blocks in height order, re-executing them on a fresh contract state."""

    def __init__(self, store: LedgerStore, genesis: Genesis, rep: VerifyReport, certificates: bool) -> None:
        self.store, self.genesis, self.rep = store, genesis, rep
        self.ring = keyring_of(genesis.replicas) if certificates else None
        self.state = ContractState(genesis)

    def run(self) -> VerifyReport:
        rep, store = self.rep, self.store
        if store.height < 0:
            return rep.fail("the chain is empty (no genesis block)", 0)
        prev: Block | None = None
        expected = 0
        it = store.iter_blocks(0)
        while True:
            try:
                block = next(it)
            except StopIteration:
                break
            except Exception as exc:  # undecodable row
                return rep.fail(f"block does not decode: {type(exc).__name__}: {exc}", expected)
            if block.height != expected:
                return rep.fail(f"height {block.height} where {expected} was expected", expected)
            if store.block_hash(block.height) != block.hash():
                return rep.fail("stored hash does not match the recomputed header hash", block.height)
            err = self._genesis(block) if prev is None else self._block(block, prev)
            if err is not None:
                return err
            prev = block
            expected += 1
            rep.blocks += 1
        rep.ok = True
        rep.head_height = expected - 1
        rep.head_hash = prev.hash().hex() if prev else None
        rep.state_root = self.state.state_root().hex()
        rep.certificates_checked = self.ring is not None
        return rep

    def _genesis(self, block: Block) -> VerifyReport | None:
        if block.hash() != genesis_block(self.genesis).hash():
            return self.rep.fail("block 0 is not the genesis block of this configuration", 0)
        return None

    def _block(self, block: Block, prev: Block) -> VerifyReport | None:
        h, rep = block.height, self.rep
        if block.header.prev_hash != prev.hash():
            return rep.fail("prev_hash does not link to the previous block", h)
        bad = block.check_body()
        if bad:
            return rep.fail(bad, h)
        if self.ring is not None:
            bad = self._certificate(block, prev)
            if bad:
                return rep.fail(f"commit certificate of block {h}: {bad}", h)
        for i, tx in enumerate(block.txs):
            if not tx.verify_signature():
                return rep.fail(f"signature of transaction {tx.tx_hash().hex()[:16]} does not verify", h, i)
            got = self.state.apply(tx, height=h, timestamp_ms=block.header.timestamp_ms, check_signature=True)
            stored = block.results[i]
            if (got.ok, got.code, got.message) != (stored.ok, stored.code, stored.message):
                return rep.fail(f"re-execution gives ({got.ok}, {got.code}) but the chain stores "
                                f"({stored.ok}, {stored.code})", h, i)
            rep.txs += 1
            rep.rejected_txs += 0 if got.ok else 1
        root = self.state.state_root()
        if root != block.header.state_root:
            return rep.fail(f"state root after re-execution {root.hex()[:16]} != header state_root "
                            f"{block.header.state_root.hex()[:16]}", h)
        return None

    def _certificate(self, block: Block, prev: Block) -> str | None:
        assert self.ring is not None
        raw = self.store.get_certificate(block.height)
        if raw is None:
            return "missing (no COMMIT votes stored with the block)"
        try:
            cert = CommitCertificate.decode(raw)
        except BlockDecodeError as exc:
            return str(exc)
        return check_certificate(cert, block.header, prev.header.timestamp_ms, self.ring)
