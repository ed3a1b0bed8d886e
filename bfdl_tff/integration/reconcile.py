"""The durable round protocol of the B-FDL ledger hook (issue 17.1; paper 3.1 "blockchain records
tracked the origin of each model update hash ...": no round may be lost).

A round is done only when its ``round.close`` is committed on chain and the runner's checkpoint
says so. The steps of round ``t``:

1. the runner writes checkpoint ``t`` (``hooks_done: false``) and hands the round to the hook;
2. the hook's worker signs the round's transactions once and persists them in the outbox
   (:mod:`bfdl_tff.integration.outbox`) before anything is submitted, then writes the hospitals'
   openings and submits (:func:`submit_round`);
3. when ``round.close`` is committed the hook reports the round durable
   (``LedgerHook.durable_through``) and the runner marks the checkpoint ``hooks_done: true``; a
   checkpoint that is not durable is never pruned.

On resume (:meth:`Reconciler.run`, in ``LedgerHook.on_start``) the chain (the longest replica database:
a stored block carries its commit certificate, so it is committed even if the other replicas have
not stored it yet) is reconciled with the checkpoints and the outbox:

* a round open on chain is finished from its outbox (the transactions already on chain are
  recognised by hash and not re-sent), or, if the outbox is missing or does not hold the
  transactions the chain has, aborted with ``round.abort`` and a recorded reason; the runner then
  records the round again from its checkpoint;
* every following round with an outbox is re-submitted from it, in order;
* every remaining round up to the newest checkpoint must be one the runner re-announces from its
  (not yet durable) checkpoint.

Anything else (a gap on chain, a chain ahead of the newest checkpoint, an unreadable outbox of a
round not on chain, a round with neither outbox nor checkpoint) stops the run with one
:class:`~bfdl_tff.integration.errors.ReconcileError` line naming the round and the inconsistency.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ledger.cluster import LocalCluster
from ledger.contracts import Genesis
from ledger.storage import StoreReader
from ledger.tx import Transaction

from bfdl_tff import faults
from bfdl_tff.integration.chain import ABORT_KIND, ChainView, read_chain
from bfdl_tff.integration.errors import LedgerHookError, ReconcileError
from bfdl_tff.integration.ledger_api import LedgerFiles
from bfdl_tff.integration.outbox import Outbox, OutboxError
from bfdl_tff.integration.round_txs import RoundSigner, SignedRound, save_openings
from bfdl_tff.io_utils import atomic_write_text
from bfdl_tff.keys import AGGREGATOR_NAME

log = logging.getLogger("bfdl_tff.integration")




# ------------------------------------------------------------------------------ reading the chain
def longest_chain(files: LedgerFiles, genesis: Genesis) -> ChainView | None:
    """The chain of the replica database with the most blocks (``None`` without databases)."""
    best: tuple[int, Path] | None = None
    for db in files.replica_dbs():
        reader = StoreReader(db)
        try:
            height = reader.head()[0]
        finally:
            reader.close()
        if best is None or height > best[0]:
            best = (height, db)
    return read_chain(best[1], genesis) if best is not None else None


def committed_hashes(files: LedgerFiles, hashes: Iterable[bytes]) -> set[bytes]:
    """The hashes found in a stored block of any replica database (committed transactions)."""
    wanted, found = set(hashes), set()
    for db in files.replica_dbs():
        reader = StoreReader(db)
        try:
            found |= {h for h in wanted - found if reader.find_tx(h) is not None}
        finally:
            reader.close()
    return found


@dataclass
class ChainRounds:
    """What the chain says about the rounds: closed, open (with its ``round.open`` hash)."""

    closed: set[int]
    open_round: int | None
    open_tx: str | None  # hex hash of the accepted round.open of the open round
    commitments: set[str] = field(default_factory=set)  # the open round's commitments on chain

    @classmethod
    def of(cls, view: ChainView | None) -> "ChainRounds":
        if view is None:
            return cls(set(), None, None)
        rounds = view.state.query("rounds") or []
        closed = {int(r) for r in rounds if view.state.query(f"rounds/{r}/status") == "closed"}
        open_round = view.state.query("summary")["open_round"]
        opens = [t for t in view.accepted("round.open") if t.payload.get("round") == open_round]
        commits = view.state.query(f"rounds/{open_round}/commitments") if open_round is not None else None
        return cls(closed, open_round, opens[-1].tx_hash if opens else None,
                   {c["commitment"] for c in (commits or {}).values()})


# ------------------------------------------------------------------------------ submitting
def _arm_during_commit(cluster: LocalCluster, round_num: int) -> None:
    """Fault ``during_commit``: SIGKILL as soon as the first replica has stored a block holding a
    transaction of round ``round_num`` (the in-process transport only)."""
    sim = cluster.sim
    if sim is None:
        raise LedgerHookError("fault during_commit needs ledger.transport inproc")
    for chain in sim.chains:
        def append(block: object, certificate: bytes | None = None, _orig: Callable = chain.append) -> None:
            _orig(block, certificate)
            if any(isinstance(t.payload, dict) and t.payload.get("round") == round_num for t in block.txs):  # type: ignore[attr-defined]
                faults.kill("during_commit", round_num)

        chain.append = append  # type: ignore[method-assign]


def _stages(txs: list[Transaction], round_num: int) -> list[tuple[list[Transaction], str | None]]:
    """The submission in one piece, or split at the armed fault step (``after_open``,
    ``mid_commitments``) so that the kill leaves exactly that prefix of the round on chain."""
    step = faults.armed(round_num)
    if txs and txs[0].kind == "round.open" and step in ("after_open", "mid_commitments"):
        cut = 1 if step == "after_open" else 2
        return [(txs[:cut], step), (txs[cut:], None)]
    return [(txs, None)]


def submit_round(cluster: LocalCluster, files: LedgerFiles, signed: SignedRound, *,
                 who: Callable[[str], str], resubmit: bool) -> int:
    """Submit the round's signed transactions (``resubmit``: skip those already on chain, found by
    hash); raise :class:`LedgerHookError` on a refusal. Returns how many were sent."""
    r, txs = signed.round_num, list(signed.txs)
    if resubmit:
        have = committed_hashes(files, [t.tx_hash() for t in txs])
        txs = [t for t in txs if t.tx_hash() not in have]
    if faults.armed(r) == "during_commit":
        _arm_during_commit(cluster, r)
    for stage, step in _stages(txs, r):
        for tx, rc in zip(stage, cluster.submit_many(stage)):
            if not rc.ok:
                raise LedgerHookError(f"round {r}: ledger refused {tx.kind} from {who(tx.sender)} "
                                      f"(tx {tx.tx_hash().hex()[:16]}): {rc.code} {rc.message}")
        if step is not None:
            faults.point(step, r)
    return len(txs)


# ------------------------------------------------------------------------------ reconciling
@dataclass
class Reconciled:
    """The outcome of :meth:`Reconciler.run`."""

    closed: set[int]
    resubmitted: dict[int, int] = field(default_factory=dict)  # round -> transactions re-sent
    aborted: dict[int, str] = field(default_factory=dict)  # round -> reason

    @property
    def durable_through(self) -> int:
        """The last round r with every round 1..r closed on chain."""
        r = 0
        while r + 1 in self.closed:
            r += 1
        return r


@dataclass
class Reconciler:
    """Reconciles one run's chain with its checkpoints (``start_round``: the newest checkpoint,
    ``pending_rounds``: the rounds the runner re-announces from checkpoints; ``None`` = unknown)."""

    cluster: LocalCluster
    files: LedgerFiles
    outbox: Outbox
    signer: RoundSigner
    genesis: Genesis
    start_round: int | None
    pending_rounds: Sequence[int] | None

    def run(self) -> Reconciled:
        chain = ChainRounds.of(longest_chain(self.files, self.genesis))
        self._check_shape(chain)
        out = Reconciled(closed=set(chain.closed))
        if chain.open_round is not None:
            self._finish_or_abort(chain, out)
        last = self.start_round if self.start_round is not None else max(self.outbox.rounds(), default=0)
        r = out.durable_through + 1
        while r <= last and self.outbox.has(r):
            self._resubmit(r, out)
            r += 1
        self._set_aside_stale(last)
        if self.pending_rounds is not None:
            missing = [x for x in range(r, last + 1) if x not in self.pending_rounds]
            if missing:
                raise ReconcileError(
                    f"{self.files.root}: round {missing[0]} is not on the chain, has no signed transactions in "
                    f"{self.outbox.directory} and no checkpoint to record it from (it was pruned as durable): "
                    "the chain lost a round the run recorded; refusing to continue")
        return out

    def _check_shape(self, chain: ChainRounds) -> None:
        on_chain = sorted(chain.closed | ({chain.open_round} if chain.open_round else set()))
        gap = next((r for r in range(1, (on_chain[-1] if on_chain else 0) + 1) if r not in on_chain), None)
        if gap is not None:
            raise ReconcileError(f"{self.files.root}: round {gap} is missing from the chain, which holds rounds "
                                 f"{on_chain[0]}..{on_chain[-1]}; refusing to continue")
        if self.start_round is not None and on_chain and on_chain[-1] > self.start_round:
            raise ReconcileError(
                f"{self.files.root}: round {on_chain[-1]} is on the chain but the newest checkpoint is round "
                f"{self.start_round} (checkpoints removed?); refusing to continue")

    def _finish_or_abort(self, chain: ChainRounds, out: Reconciled) -> None:
        """The round open on chain: finish it from the outbox, or abort it with the reason."""
        r = int(chain.open_round)  # type: ignore[arg-type]
        why = None
        if not self.outbox.has(r):
            why = f"no signed transactions persisted ({self.outbox.path(r).name} missing)"
        else:
            try:
                signed = self.outbox.load(r, chain_id=self.genesis.chain_id)
                if signed.txs[0].tx_hash().hex() != chain.open_tx:
                    why = f"{self.outbox.path(r).name} does not hold the round.open on chain"
            except OutboxError as e:
                why = f"{self.outbox.path(r).name} unusable: {str(e).split(': ', 1)[-1]}"
        if why is None:
            self._resubmit(r, out)
            return
        reason = f"resume: round {r} open on chain, {why}"[:256]
        tx = self.signer.sign(AGGREGATOR_NAME, ABORT_KIND, {"round": r, "reason": reason})
        rc = self.cluster.submit(tx)
        if not rc.ok:
            raise ReconcileError(f"{self.files.root}: round {r} is open on chain and cannot be finished ({why}); "
                                 f"the ledger refused {ABORT_KIND}: {rc.code} {rc.message}")
        if self.outbox.has(r):
            self.outbox.set_aside(r, "aborted")
        prune_openings(self.files.openings_dir, r, keep=chain.commitments)
        out.aborted[r] = reason
        log.warning("round %d aborted on chain (%s); it is recorded again from its checkpoint", r, reason)

    def _resubmit(self, r: int, out: Reconciled) -> None:
        try:
            signed = self.outbox.load(r, chain_id=self.genesis.chain_id)
        except OutboxError as e:
            raise ReconcileError(f"round {r}: {e}; nothing of round {r} is on the chain: move the file away to "
                                 "record the round again from its checkpoint") from None
        save_openings(self.files.openings_dir, signed.openings)
        n = submit_round(self.cluster, self.files, signed, who=self.signer.who, resubmit=True)
        out.closed.add(r)
        out.resubmitted[r] = n
        log.warning("round %d re-submitted from the outbox on resume (%d of %d transactions were not on chain)",
                    r, n, len(signed.txs))

    def _set_aside_stale(self, last: int) -> None:
        """Outbox files of rounds after the newest checkpoint (never submitted: the runner trains
        those rounds again) are renamed, never deleted."""
        for r in self.outbox.rounds():
            if r > last:
                dst = self.outbox.set_aside(r, "stale")
                log.warning("round %d: outbox file of a round after the newest checkpoint set aside as %s", r, dst)


def prune_openings(openings_dir: Path, round_num: int, *, keep: set[str]) -> None:
    """Drop round ``round_num``'s openings whose commitment never reached the chain (an aborted
    attempt's lost signing); every other line is kept as is."""
    if not openings_dir.is_dir():
        return
    for f in sorted(openings_dir.glob("*.jsonl")):
        lines = f.read_text(encoding="utf-8").splitlines()
        kept = []
        for line in lines:
            try:
                op = json.loads(line)
                drop = int(op["round"]) == round_num and op.get("commitment") not in keep
            except (ValueError, KeyError, TypeError):
                drop = False
            if not drop:
                kept.append(line)
        if kept != lines:
            atomic_write_text(f, "".join(x + "\n" for x in kept))


__all__ = ["ABORT_KIND", "ChainRounds", "Reconciled", "Reconciler", "committed_hashes", "longest_chain",
           "prune_openings", "submit_round"]
