"""Ledger client side: receipts with Merkle inclusion proofs, f+1 reply certificates, chain checks.

Paper link: B-FDL section 3.4 — hospitals and the aggregator submit signed round records to the
PBFT ledger and obtain proof that they were committed.

A PBFT client trusts a result once f+1 distinct replicas report it (at least one is honest).
Replicas send one signed REPLY per executed batch: ``(view, seq, block_hash, tx_root,
results_digest)``. :class:`ReplyCollector` keeps authenticated replies and answers
:meth:`ReplyCollector.certified`. A :class:`Receipt` binds a transaction to a certified block:
the transaction's RFC 6962 inclusion proof against the block's ``tx_root``
(:meth:`Receipt.verify`), the height and the block hash reported by f+1 replicas.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Optional

from ledger import merkle
from ledger import messages as M
from ledger.errors import LedgerError

__all__ = ["LedgerError", "Receipt", "ReplyCollector", "locate_certified", "receipt_from_block", "verify_chain"]


@dataclass(frozen=True)
class Receipt:
    """Proof that a transaction was committed: hashes are lowercase hex strings.

    ``tree_size`` (number of transactions in the block) is needed to check the inclusion proof;
    it is an addition to the field list in docs/INTERFACES.md.
    """

    tx_hash: str
    height: int
    index: int
    ok: bool
    code: str
    message: str
    inclusion_proof: tuple[str, ...]
    tx_root: str
    block_hash: str
    tree_size: int = 0

    def verify(self) -> bool:
        """True iff the inclusion proof places ``tx_hash`` at ``index`` under ``tx_root``."""
        try:
            return merkle.verify_inclusion(bytes.fromhex(self.tx_hash), self.index, self.tree_size,
                                           [bytes.fromhex(p) for p in self.inclusion_proof], bytes.fromhex(self.tx_root))
        except (ValueError, TypeError):
            return False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["inclusion_proof"] = list(self.inclusion_proof)
        return d


def receipt_from_block(block: Any, index: int) -> Receipt:
    t = block.txs[index]
    r = block.results[index]
    return Receipt(
        tx_hash=t.tx_hash().hex(), height=block.height, index=index, ok=bool(r.ok), code=str(r.code),
        message=str(r.message), inclusion_proof=tuple(p.hex() for p in block.inclusion_proof(index)),
        tx_root=block.header.tx_root.hex(), block_hash=block.hash().hex(), tree_size=len(block.txs))


class ReplyCollector:
    """Authenticated REPLY frames by sequence number (the f+1 matching rule)."""

    def __init__(self, keyring: M.KeyRing, f: int) -> None:
        self.keys = keyring
        self.f = f
        self.replies: dict[int, dict[int, tuple[bytes, bytes, bytes]]] = {}
        self.rejected = 0

    def on_frame(self, raw: bytes) -> None:
        try:
            env = M.decode(raw)
        except M.MessageDecodeError:
            self.rejected += 1
            return
        if not isinstance(env.body, M.Reply):
            self.rejected += 1
            return
        r = env.body
        got = self.replies.get(r.seq)
        if got is not None and env.sender in got:
            return  # duplicate
        if got is not None and len(got) > self.f and self.certified(r.seq) is not None:
            return  # already certified by f+1 replicas: no need to check further signatures
        if not self.keys.verify_envelope(env):
            self.rejected += 1
            return
        self.replies.setdefault(r.seq, {})[env.sender] = (r.block_hash, r.tx_root, r.results_digest)

    def certified(self, seq: int) -> Optional[tuple[bytes, bytes, bytes]]:
        """(block_hash, tx_root, results_digest) reported by f+1 distinct replicas, if any."""
        groups: dict[tuple[bytes, bytes, bytes], int] = {}
        for v in self.replies.get(seq, {}).values():
            groups[v] = groups.get(v, 0) + 1
            if groups[v] >= self.f + 1:
                return v
        return None

    def forget_below(self, seq: int) -> None:
        for s in [s for s in self.replies if s < seq]:
            del self.replies[s]


def locate_certified(apps: Any, collector: ReplyCollector, tx_hash: bytes) -> Optional[tuple[Any, int, int, bytes]]:
    """(app, height, index, block_hash) of the first replica app holding ``tx_hash`` in a block
    that f+1 replicas certified with the same hash, else None."""
    for app in apps:
        loc = app.locate(tx_hash)
        if loc is None:
            continue
        cert = collector.certified(loc[0])
        if cert is not None and app.block_hash(loc[0]) == cert[0]:
            return app, loc[0], loc[1], cert[0]
    return None


def verify_chain(path: str | os.PathLike, *, genesis: Any, require_certificates: bool = True) -> Any:
    """Re-verify a replica database (delegates to :func:`ledger.verify.verify_chain`)."""
    from ledger.verify import verify_chain as _vc

    return _vc(path, genesis=genesis, require_certificates=require_certificates)
