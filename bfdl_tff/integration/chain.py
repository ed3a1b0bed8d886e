"""A read-only view of one replica's chain: every transaction with its result, the contract state
after re-execution, and a per-round digest (paper 3.1 "blockchain records tracked the origin of
each model update hash, the institution contributing to each update and the timestamp"; 3.4).

Shared by the audit (:mod:`bfdl_tff.integration.audit`), which reads it after
:func:`ledger.verify.verify_chain` has checked the database, and by the round hook, which derives
the chain-backed keys of ``ledger_summary.json`` from it (so the audit can check them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.contracts import ContractState, Genesis
from ledger.storage import LedgerStore

#: The transaction kind that binds a run's result files to its chain (issue 17.3).
FINALIZE_KIND = "run.finalize"
#: Kinds that belong to one round (their payload carries ``round``).
ROUND_KINDS = ("round.open", "round.commit_update", "secagg.transcript", "round.global_model", "privacy.record",
               "metrics.record", "access.request_summary", "round.close", "round.abort")
#: Crash recovery (issue 17.1): ends the open attempt of a round, which may then be recorded again.
ABORT_KIND = "round.abort"


@dataclass(frozen=True)
class TxRecord:
    """One transaction as stored in a block, with the contract's result."""

    height: int
    index: int
    kind: str
    sender: str
    payload: dict[str, Any]
    ok: bool
    code: str
    tx_hash: str
    timestamp_ms: int
    size: int  # encoded bytes


@dataclass
class RoundView:
    """What the accepted transactions of one round say."""

    round: int
    opens: int = 0
    global_models: int = 0
    closes: int = 0
    txs: int = 0
    tx_bytes: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    heights: list[int] = field(default_factory=list)
    commitments: dict[str, dict[str, Any]] = field(default_factory=dict)  # sender -> {name, payload...}
    model_hash: str | None = None
    checkpoint_address: str | None = None
    checkpoint_sha256: str | None = None
    privacy: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    access: list[str] = field(default_factory=list)
    secagg: list[TxRecord] = field(default_factory=list)  # accepted secagg.transcript transactions
    opened_ms: int | None = None
    closed_ms: int | None = None
    # Earlier attempts ended by round.abort: {"reason", "height", "commitments"} each (the fields
    # above describe the last attempt only).
    aborted: list[dict[str, Any]] = field(default_factory=list)

    def add(self, t: TxRecord, names: dict[str, str]) -> None:
        self.txs += 1
        self.tx_bytes += t.size
        self.kinds[t.kind] = self.kinds.get(t.kind, 0) + 1
        if t.height not in self.heights:
            self.heights.append(t.height)
        p = t.payload
        if t.kind == "round.open":
            self.opens += 1
            self.opened_ms = t.timestamp_ms
        elif t.kind == "round.commit_update":
            self.commitments[t.sender] = {"name": names.get(t.sender, t.sender[:16]), **p}
        elif t.kind == "round.global_model":
            self.global_models += 1
            self.model_hash = p.get("model_hash")
            self.checkpoint_address = p.get("checkpoint_address")
            self.checkpoint_sha256 = p.get("checkpoint_sha256")
        elif t.kind == "privacy.record":
            self.privacy = dict(p)
        elif t.kind == "metrics.record":
            self.metrics = dict(p.get("metrics") or {})
        elif t.kind == "secagg.transcript":
            self.secagg.append(t)
        elif t.kind == "access.request_summary":
            self.access.append(names.get(t.sender, t.sender[:16]))
        elif t.kind == "round.close":
            self.closes += 1
            self.closed_ms = t.timestamp_ms


@dataclass
class ChainView:
    """One replica's chain, read after it was verified (or written by this process)."""

    db: Path
    genesis: Genesis
    txs: list[TxRecord]
    state: ContractState
    height: int
    head: str | None

    @property
    def names(self) -> dict[str, str]:
        """Registered name of every key the chain ever knew (revoked ones included)."""
        return {pk: v["name"] for pk, v in (self.state.query("institutions") or {}).items()}

    def accepted(self, kind: str | None = None) -> list[TxRecord]:
        return [t for t in self.txs if t.ok and (kind is None or t.kind == kind)]

    def rounds(self) -> dict[int, RoundView]:
        """Per-round view of the accepted round transactions, by round number."""
        names = self.names
        out: dict[int, RoundView] = {}
        for t in self.txs:
            if t.ok and t.kind == ABORT_KIND:
                r = int(t.payload["round"])
                prev = out.pop(r, RoundView(round=r))
                out[r] = RoundView(round=r, aborted=prev.aborted + [
                    {"reason": t.payload.get("reason"), "height": t.height, "commitments": prev.commitments}])
            elif t.ok and t.kind in ROUND_KINDS:
                r = int(t.payload["round"])
                out.setdefault(r, RoundView(round=r)).add(t, names)
        return dict(sorted(out.items()))

    def finalize_records(self) -> list[TxRecord]:
        """Accepted ``run.finalize`` transactions (a finished run has exactly one)."""
        return self.accepted(FINALIZE_KIND)


def read_chain(db: Path, genesis: Genesis) -> ChainView:
    """All transactions (with results) of a replica database and the contract state after
    re-executing them (signatures are not re-checked here: :func:`ledger.verify.verify_chain`
    does that)."""
    state = ContractState(genesis)
    txs: list[TxRecord] = []
    with LedgerStore(db, verify="none") as store:
        height, head = store.head()
        for block in store.iter_blocks(1):
            ts = block.header.timestamp_ms
            for i, (tx, res) in enumerate(zip(block.txs, block.results)):
                state.apply(tx, height=block.height, timestamp_ms=ts, check_signature=False)
                txs.append(TxRecord(block.height, i, tx.kind, tx.sender, dict(tx.payload), bool(res.ok),
                                    str(res.code), tx.tx_hash().hex(), ts, len(tx.encode())))
    return ChainView(db=db, genesis=genesis, txs=txs, state=state, height=height,
                     head=head.hex() if head is not None else None)


__all__ = ["ABORT_KIND", "FINALIZE_KIND", "ROUND_KINDS", "ChainView", "RoundView", "TxRecord", "read_chain"]
