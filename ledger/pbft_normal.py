"""PBFT normal case (Castro & Liskov 1999, section 4.2): requests, PRE-PREPARE, PREPARE, COMMIT,
in-order execution and retransmission.

Paper link: B-FDL section 3.4 (every round record is ordered by PBFT before the contracts run it).
A mixin of :class:`ledger.pbft.Replica` over the state in :mod:`ledger.pbft_state`: the primary
batches authenticated requests into PRE-PREPAREs (at most ``max_inflight`` in flight), backups
accept them in the window, a slot *prepares* with 2f matching PREPAREs (its prepared certificate is
persisted before our COMMIT leaves) and *commits* with 2f+1 matching COMMITs (kept as the block's
commit certificate); batches execute strictly in sequence order.
"""

from __future__ import annotations

from typing import Optional

from ledger import messages as M
from ledger.pbft_state import (CLIENT, Action, CancelTimer, CommitVote, Committed, Equivocation, Forward, Persist,
                               PreparedRecord, PrepareVote, ReplicaCore, Send, SetTimer, Slot, ViewSeq, Vote, digest_ok,
                               encode_prepared)


class NormalCase(ReplicaCore):
    """Normal-case operation of a replica (see the module docstring)."""

    def _auth(self, raw: bytes) -> Optional[bytes]:
        h = self.req.verified.get(raw)
        if h is None:
            h = self.app.check_tx(raw)
            if h is None:
                self._count("bad_tx")
                return None
            if len(self.req.verified) > 200_000:  # a cache: bounded even under Byzantine floods
                self.req.verified = {r: x for r, x in self.req.verified.items() if x in self.req.pending}
            self.req.verified[raw] = h
        return h

    def _on_request(self, req: M.Request, out: list[Action]) -> None:
        added = False
        for raw in req.txs:
            h = self._auth(raw)
            if h is None:
                continue
            if h in self.req.pending:
                self._count("duplicate_request")
                continue
            if self.app.is_executed(h):
                self._count("duplicate_request")
                self.req.verified.pop(raw, None)
                continue
            self.req.pending[h] = raw
            added = True
        if not added:
            return
        if self.vc.active and self.is_primary:
            self._try_propose(out)
        self._arm_view_timer(out)

    def _arm_tick(self, out: list[Action]) -> None:
        if self.n > 1 and not self.ticks.on and (self.req.pending or self.log.last_exec < max(self.log.slots, default=0)
                                                 or not self.vc.active):
            self.ticks.on = True
            out.append(SetTimer("tick", max(1, self.cfg.view_timeout_ms // 4)))

    def _tick(self, out: list[Action]) -> None:
        """Retransmission (messages may be lost): resend our votes for unexecuted slots and, if we
        made no progress since the last tick, ask the others for what we miss."""
        if self.vc.active:
            for seq in sorted(self.log.slots):
                sl = self.log.slots[seq]
                if seq <= self.log.last_exec or sl.view != self.view:
                    continue
                if self.primary(sl.view) == self.id:
                    out.append(Send(None, sl.pp_raw))
                if sl.my_prepare is not None:
                    out.append(Send(None, sl.my_prepare))
                if sl.my_commit is not None:
                    out.append(Send(None, sl.my_commit))
        if self.log.last_exec == self.ticks.exec_seen and (self.req.pending or self.log.slots or not self.vc.active):
            out.append(Send(None, self._sign(M.StateRequest(self.log.last_exec + 1, self.log.last_exec))))
            self._count("sync_request")
            if self.vc.active and not self.is_primary and self.req.pending:
                # PBFT request forwarding: the primary may never have received these requests
                # (it was down or partitioned when the client broadcast them).
                fwd = tuple(raw for h, raw in self.req.pending.items() if h not in self.req.proposed)[: 4 * self.cfg.batch_size]
                if fwd:
                    out.append(Send(self.primary(), M.encode(M.Request(fwd), M.CLIENT_SENDER, None)))
                    self._count("requests_forwarded")
        self.ticks.exec_seen = self.log.last_exec
        self._arm_tick(out)

    def _arm_view_timer(self, out: list[Action]) -> None:
        self._arm_tick(out)
        if self.n > 1 and self.vc.active and self.req.pending and not self.vc.timer_on and not self.is_primary:
            self.vc.timer_on = True
            out.append(SetTimer("view", self._view_timeout()))

    def _try_propose(self, out: list[Action]) -> None:
        if not (self.vc.active and self.is_primary):
            return
        if self.req.proposing:
            # Re-entered from the execution of a batch we are proposing (n = 1: f = 0, so our own
            # PRE-PREPARE prepares, commits and executes synchronously inside ``_propose``). The
            # outer loop below re-reads next_seq/last_exec/pending after ``_propose`` returns.
            return
        self.req.proposing = True
        try:
            self._propose_loop(out)
        finally:
            self.req.proposing = False

    def _propose_loop(self, out: list[Action]) -> None:
        while True:
            if self.log.next_seq <= self.log.last_exec:
                self.log.next_seq = self.log.last_exec + 1
            inflight = self.log.next_seq - 1 - self.log.last_exec
            if inflight >= self.cfg.max_inflight or not self._in_window(self.log.next_seq):
                return
            txs: list[bytes] = []
            hashes: list[bytes] = []
            for h, raw in self.req.pending.items():
                if h in self.req.proposed:
                    continue
                txs.append(raw)
                hashes.append(h)
                if len(txs) >= self.cfg.batch_size:
                    break
            if not txs:
                return
            old = self.log.votes.get(self.log.next_seq)
            if old is not None and old.view == self.view:
                # We voted at (view, seq) before a restart and no longer hold that batch: a new
                # PRE-PREPARE there would equivocate. Hand the view over instead; the view change
                # re-proposes whatever may have prepared at seq.
                self._count("voted_slot_after_restart")
                self._start_view_change(self.view + 1, out)
                return
            self.req.proposed.update(hashes)
            # Claim the sequence number before proposing: with n = 1 the batch executes inside
            # ``_propose``, and advancing next_seq afterwards left a gap (seq + 2 proposed next,
            # seq + 1 never: the single-replica ledger stopped after its first batch).
            seq = self.log.next_seq
            self.log.next_seq = seq + 1
            self._propose(seq, M.Batch(self.now, self.view, tuple(txs)), hashes, out)

    def _propose(self, seq: int, batch: M.Batch, hashes: list[bytes], out: list[Action]) -> None:
        root = self.app.tx_root(hashes)
        digest = M.batch_digest(root, batch.timestamp_ms, batch.proposal_view)
        pp = M.PrePrepare(self.view, seq, digest, root, batch)
        raw = self._sign(pp)
        self._vote(seq, self.view, digest, out)
        out.append(Send(None, raw))
        self.log.slots[seq] = Slot(self.view, digest, root, batch, raw)
        self._check_prepared(seq, out)

    def _vote(self, seq: int, view: int, digest: bytes, out: list[Action]) -> bool:
        """Record (and persist) our vote for (view, seq); False if it would conflict."""
        old = self.log.votes.get(seq)
        if old is not None and old.view == view and old.digest != digest:
            self._count("conflicting_vote_refused")
            return False
        if old != (view, digest):
            self.log.votes[seq] = Vote(view, digest)
            # A ring of 4L keys: votes below the stable checkpoint are simply overwritten later.
            out.append(Persist(f"vote/{seq % (4 * self.cfg.L)}",
                               seq.to_bytes(8, "big") + view.to_bytes(8, "big") + digest))
        return True

    def _on_pre_prepare(self, env: M.Envelope, pp: M.PrePrepare, out: list[Action]) -> None:
        if env.sender != self.primary(pp.view):
            self._count("pre_prepare_not_from_primary")
            return
        if pp.view < self.view:
            self._count("old_view")
            return
        if pp.view > self.view or not self.vc.active:
            self._count("future_view")
            return
        if not self._in_window(pp.seq):
            self._count("out_of_window")
            if pp.seq > self.ckpt.h and self.vc.timer_on:
                # The primary is making progress we cannot follow yet: we are the one lagging.
                out.append(SetTimer("view", self._view_timeout()))
            return
        self._accept_pre_prepare(env, pp, out)

    def _accept_pre_prepare(self, env: M.Envelope, pp: M.PrePrepare, out: list[Action]) -> bool:
        slot = self.log.slots.get(pp.seq)
        if slot is not None and slot.view == pp.view:
            if slot.digest != pp.digest:
                self._record_equivocation(pp.view, pp.seq, out)
            else:
                self._count("duplicate")
            return False
        if slot is not None and slot.view > pp.view:
            self._count("old_view")
            return False
        if not digest_ok(pp):
            self._count("bad_digest")
            return False
        hashes = []
        for raw in pp.batch.txs:
            h = self._auth(raw)
            if h is None:
                self._count("pre_prepare_bad_tx")
                return False
            hashes.append(h)
        if len(set(hashes)) != len(hashes):
            self._count("pre_prepare_dup_tx")
            return False
        if self.app.tx_root(hashes) != pp.tx_root:
            self._count("bad_tx_root")
            return False
        if pp.seq <= self.log.last_exec:
            # Already executed (e.g. re-proposed in a new view): take part again so that lagging
            # replicas can commit it in this view, but only for the batch we executed.
            if self.log.executed.get(pp.seq) != pp.digest:
                self._count("conflicts_with_executed")
                return False
        if not self._vote(pp.seq, pp.view, pp.digest, out):
            return False
        slot = Slot(pp.view, pp.digest, pp.tx_root, pp.batch, env.raw)
        self.log.slots[pp.seq] = slot
        if env.sender != self.id:
            praw = self._sign(M.Prepare(pp.view, pp.seq, pp.digest))
            slot.my_prepare = praw
            self.log.prepares.setdefault(ViewSeq(pp.view, pp.seq), {})[self.id] = PrepareVote(pp.digest, praw)
            out.append(Send(None, praw))
        for h in hashes:
            self.req.proposed.add(h)
        self._check_prepared(pp.seq, out)
        self._arm_view_timer(out)
        return True

    def _record_equivocation(self, view: int, seq: int, out: list[Action]) -> None:
        rec = Equivocation(view, seq, self.primary(view))
        if rec not in self.vc.equivocations:
            self.vc.equivocations.append(rec)
            self._count("equivocation")
            if self.vc.active and view == self.view:
                self._start_view_change(self.view + 1, out)

    def _on_prepare(self, env: M.Envelope, p: M.Prepare, out: list[Action]) -> None:
        if p.view != self.view or not self.vc.active:
            self._count("old_view" if p.view < self.view else "future_view")
            return
        if not self._in_window(p.seq) or env.sender == self.primary(p.view):
            self._count("out_of_window")
            return
        votes = self.log.prepares.setdefault(ViewSeq(p.view, p.seq), {})
        if env.sender in votes:
            self._count("duplicate")
            return
        votes[env.sender] = PrepareVote(p.digest, env.raw)
        slot = self.log.slots.get(p.seq)
        if slot is not None and slot.view == p.view and slot.digest != p.digest:
            key = Forward(p.view, p.seq, env.sender)
            if key not in self.log.forwarded and len(self.log.forwarded) < 10_000:
                self.log.forwarded.add(key)
                out.append(Send(env.sender, slot.pp_raw))  # make a possible equivocation provable
        self._check_prepared(p.seq, out)

    def _check_prepared(self, seq: int, out: list[Action]) -> None:
        slot = self.log.slots.get(seq)
        if slot is None or slot.view != self.view:
            return
        if not slot.prepared:
            votes = self.log.prepares.get(ViewSeq(slot.view, seq), {})
            matching = [raw for d, raw in votes.values() if d == slot.digest]
            if len(matching) < 2 * self.f:
                return
            slot.prepared = True
            proof = M.PreparedProof(slot.pp_raw, tuple(matching[: 2 * self.f]))
            self.log.prepared[seq] = PreparedRecord(slot.view, slot.digest, proof)
            # The prepared certificate is durable before our COMMIT leaves (Castro-Liskov keep
            # the log on disk): after a crash, our VIEW-CHANGE still carries it, so a batch that
            # may have committed is re-proposed at the same sequence number in the next view.
            out.append(Persist(f"prep/{seq % (4 * self.cfg.L)}", encode_prepared(seq, slot.view, slot.digest, proof)))
        if not slot.sent_commit:
            slot.sent_commit = True
            slot.my_commit = self._sign(M.Commit(slot.view, seq, slot.digest, slot.tx_root))
            out.append(Send(None, slot.my_commit))
            self.log.commits.setdefault(ViewSeq(slot.view, seq), {})[self.id] = CommitVote(slot.digest, slot.tx_root,
                                                                                         slot.my_commit)
        self._check_committed(seq, out)

    def _on_commit(self, env: M.Envelope, c: M.Commit, out: list[Action]) -> None:
        if c.view != self.view or not self.vc.active:
            self._count("old_view" if c.view < self.view else "future_view")
            return
        if not self._in_window(c.seq):
            self._count("out_of_window")
            return
        votes = self.log.commits.setdefault(ViewSeq(c.view, c.seq), {})
        if env.sender in votes:
            self._count("duplicate")
            return
        votes[env.sender] = CommitVote(c.digest, c.tx_root, env.raw)
        self._check_committed(c.seq, out)

    def _check_committed(self, seq: int, out: list[Action]) -> None:
        slot = self.log.slots.get(seq)
        if slot is None or not slot.prepared or slot.committed or slot.view != self.view:
            return
        votes = self.log.commits.get(ViewSeq(slot.view, seq), {})
        matching = sorted((s, raw) for s, (d, r, raw) in votes.items() if d == slot.digest and r == slot.tx_root)
        if len(matching) >= 2 * self.f + 1:
            slot.committed = True
            slot.commit_cert = tuple(raw for _s, raw in matching[: 2 * self.f + 1])
            self._execute_ready(out)

    def _execute_ready(self, out: list[Action]) -> None:
        progressed = False
        while True:
            seq = self.log.last_exec + 1
            slot = self.log.slots.get(seq)
            if slot is None or not slot.committed:
                break
            proposer = slot.batch.proposal_view % self.n
            res = self.app.execute(seq, slot.batch, proposer, slot.commit_cert)
            self.log.last_exec = seq
            self.log.executed[seq] = slot.digest
            progressed = True
            for raw in slot.batch.txs:
                h = self.req.verified.pop(raw, None) or M.sha256(raw)
                self.req.pending.pop(h, None)
                self.req.proposed.discard(h)
            out.append(Committed(seq, slot.view, slot.digest, slot.tx_root, res.block_hash, res.state_root, len(slot.batch.txs)))
            out.append(Send(CLIENT, self._sign(M.Reply(slot.view, seq, res.block_hash, slot.tx_root, res.results_digest))))
            if seq % self.cfg.checkpoint_interval == 0:
                self._send_checkpoint(seq, res.block_hash, res.state_root, out)
        if progressed:
            self.vc.attempts = 0
            if self.vc.timer_on:
                self.vc.timer_on = False
                out.append(CancelTimer("view"))
            self._arm_view_timer(out)
            self._try_propose(out)
