"""PBFT view changes (Castro & Liskov 1999, section 4.4): VIEW-CHANGE, NEW-VIEW, help for
lagging replicas and prepared-certificate checks.

Paper link: B-FDL section 3.4 (PBFT tolerates f faulty nodes, a faulty primary included). A mixin
of :class:`ledger.pbft.Replica`: a backup whose request waits too long sends VIEW-CHANGE with its
stable checkpoint certificate and prepared certificates; the new primary sends NEW-VIEW with 2f+1
VIEW-CHANGEs and re-issued PRE-PREPAREs (null batches for gaps), which every backup recomputes and
checks. Timeouts double per unsuccessful view change; f+1 VIEW-CHANGEs for higher views make a
replica join the smallest of them.
"""

from __future__ import annotations

from typing import Optional

from ledger import messages as M
from ledger.pbft_state import (Action, CancelTimer, NewViewRecord, Persist, ReceivedViewChange, ReplicaCore, Send,
                               SetTimer, Slot, StateTarget, digest_ok)


class ViewChanging(ReplicaCore):
    """View changes of a replica (see the module docstring)."""

    def _help_lagging(self, peer: int, out: list[Action]) -> None:
        """A peer speaks in an older view: send it the NEW-VIEW that justifies ours (once per view)."""
        if self.vc.last_new_view is None:
            return
        if not self._may_help((peer, self.vc.last_new_view.view)):
            return
        out.append(Send(peer, self.vc.last_new_view.raw))

    def _may_help(self, key: tuple[int, int]) -> bool:
        """Rate limit for help sent to a lagging peer: at most once per half view timeout."""
        last = self.vc.helped.get(key)
        if last is not None and self.now - last < self.cfg.view_timeout_ms // 2:
            return False
        if len(self.vc.helped) > 10_000:
            self.vc.helped.clear()
        self.vc.helped[key] = self.now
        return True

    def _own_proof_ok(self, seq: int, view: int, digest: bytes, proof: M.PreparedProof) -> bool:
        pp = self._proof_pre_prepare(proof)
        return pp is not None and (pp.view, pp.seq, pp.digest) == (view, seq, digest)

    def _proof_pre_prepare(self, proof: M.PreparedProof) -> Optional[M.PrePrepare]:
        """The PRE-PREPARE of a valid prepared certificate (signed by its view's primary, digest
        consistent, 2f matching PREPAREs from distinct backups), else None."""
        ppe = self.keys.decode_verified(proof.pre_prepare, M.PrePrepare)
        if ppe is None:
            return None
        pp = ppe.body
        if ppe.sender != pp.view % self.n or not digest_ok(pp):
            return None
        senders = set()
        for praw in proof.prepares:
            pe = self.keys.decode_verified(praw, M.Prepare)
            if pe is None or pe.sender == ppe.sender:
                return None
            b = pe.body
            if (b.view, b.seq, b.digest) != (pp.view, pp.seq, pp.digest):
                return None
            senders.add(pe.sender)
        return pp if len(senders) >= 2 * self.f else None

    def _make_view_change(self, new_view: int) -> tuple[M.ViewChange, bytes]:
        prepared = tuple(p for s, (v, _d, p) in sorted(self.log.prepared.items())
                         if s > self.ckpt.stable_seq and v < new_view)
        vc = M.ViewChange(new_view, self.ckpt.stable_seq, self.ckpt.stable_proof, prepared)
        return vc, self._sign(vc)

    def _start_view_change(self, new_view: int, out: list[Action], *, rejoin: bool = False) -> None:
        if not rejoin:
            if new_view <= self.view and not self.vc.active:
                return
            if new_view < self.view:
                return
        self.view = new_view
        self.vc.active = False
        self.vc.attempts += 1
        self.vc.timer_on = False
        vc, raw = self._make_view_change(new_view)
        out.append(Persist("view", new_view.to_bytes(8, "big")))
        out.append(Send(None, raw))
        self.vc.own = raw
        self.vc.own_by_view[new_view] = raw
        for v in sorted(self.vc.own_by_view)[:-8]:
            del self.vc.own_by_view[v]
        self.vc.received.setdefault(new_view, {})[self.id] = ReceivedViewChange(vc, raw)
        self._count("view_change_sent")
        out.append(SetTimer("view", self._view_timeout()))
        self.vc.timer_on = True
        self._maybe_new_view(new_view, out)

    def _valid_view_change(self, sender: int, vc: M.ViewChange) -> bool:
        if vc.stable_seq > 0 or vc.checkpoint_proof:
            if self._valid_checkpoint_proof(vc.stable_seq, vc.checkpoint_proof) is None:
                return False
        seen = set()
        for p in vc.prepared:
            pp = self._proof_pre_prepare(p)
            if pp is None or pp.view >= vc.new_view or not vc.stable_seq < pp.seq or pp.seq in seen:
                return False
            seen.add(pp.seq)
        return True

    def _on_view_change(self, env: M.Envelope, vc: M.ViewChange, out: list[Action]) -> None:
        if vc.new_view < self.view or (vc.new_view == self.view and self.vc.active):
            self._count("old_view")
            if self.vc.active and vc.new_view == self.view:
                self._help_lagging(env.sender, out)
            elif vc.new_view < self.view:
                # The peer is still collecting VIEW-CHANGEs for a view we already left behind: ours
                # may have been lost (or we restarted). Resend it, or a fresh one for that view (we
                # accept nothing below our current view anyway, so it promises nothing new).
                if self._may_help((env.sender, -vc.new_view - 1)):
                    raw = self.vc.own_by_view.get(vc.new_view) or self._make_view_change(vc.new_view)[1]
                    out.append(Send(env.sender, raw))
            return
        if vc.new_view > self.view + 1000:
            self._count("future_view")
            return
        bucket = self.vc.received.setdefault(vc.new_view, {})
        if env.sender in bucket:
            self._count("duplicate")
            return
        if not self._valid_view_change(env.sender, vc):
            self._count("bad_view_change")
            return
        bucket[env.sender] = ReceivedViewChange(vc, env.raw)
        # Liveness rule: f+1 replicas want a higher view -> join the smallest such view.
        latest: dict[int, int] = {}
        for v, b in self.vc.received.items():
            if v > self.view:
                for s in b:
                    if s != self.id and v > latest.get(s, -1):
                        latest[s] = v
        if len(latest) >= self.f + 1:
            target = sorted(latest.values(), reverse=True)[self.f]
            if target > self.view:
                self._start_view_change(target, out)
        self._maybe_new_view(vc.new_view, out)

    def _compute_o(self, view: int, vcs: list[M.ViewChange]) -> tuple[int, int, dict[int, Optional[tuple[bytes, M.PrePrepare]]]]:
        min_s = max(vc.stable_seq for vc in vcs)
        best: dict[int, M.PrePrepare] = {}
        for vc in vcs:
            for p in vc.prepared:
                pp = M.decode(p.pre_prepare).body
                if pp.seq > min_s and (pp.seq not in best or pp.view > best[pp.seq].view):
                    best[pp.seq] = pp
        max_s = max([min_s] + list(best))
        o: dict[int, Optional[tuple[bytes, M.PrePrepare]]] = {}
        for s in range(min_s + 1, max_s + 1):
            o[s] = (best[s].digest, best[s]) if s in best else None
        return min_s, max_s, o

    def _maybe_new_view(self, view: int, out: list[Action]) -> None:
        if self.primary(view) != self.id or view in self.vc.new_view_sent or view != self.view or self.vc.active:
            return
        bucket = self.vc.received.get(view, {})
        if len(bucket) < 2 * self.f + 1 or self.id not in bucket:
            return
        chosen = sorted(bucket)[: 2 * self.f + 1]
        if self.id not in chosen:
            chosen = chosen[:-1] + [self.id]
        vcs = [bucket[s].body for s in chosen]
        min_s, max_s, o = self._compute_o(view, vcs)
        pps = []
        for s in range(min_s + 1, max_s + 1):
            e = o[s]
            if e is None:
                batch = M.Batch(self.now, view, ())
                root = self.app.tx_root([])
                pp = M.PrePrepare(view, s, M.batch_digest(root, batch.timestamp_ms, view), root, batch)
            else:
                old = e[1]
                pp = M.PrePrepare(view, s, old.digest, old.tx_root, old.batch)
            pps.append(self._sign(pp))
        nv = M.NewView(view, tuple(bucket[s].raw for s in chosen), tuple(pps))
        raw = self._sign(nv)
        self.vc.new_view_sent.add(view)
        self.vc.last_new_view = NewViewRecord(view, raw)
        out.append(Send(None, raw))
        self._count("new_view_sent")
        self._enter_view(view, min_s, max_s, [M.decode(p) for p in pps], vcs, out)

    def _on_new_view(self, env: M.Envelope, nv: M.NewView, out: list[Action]) -> None:
        if nv.view < self.view or (nv.view == self.view and self.vc.active) or env.sender != self.primary(nv.view):
            self._count("old_view")
            return
        vcs: dict[int, M.ViewChange] = {}
        for raw in nv.view_changes:
            e = self.keys.decode_verified(raw, M.ViewChange)
            if e is None or e.body.new_view != nv.view or not self._valid_view_change(e.sender, e.body):
                self._count("bad_new_view")
                return
            vcs[e.sender] = e.body
        if len(vcs) < 2 * self.f + 1:
            self._count("bad_new_view")
            return
        min_s, max_s, o = self._compute_o(nv.view, list(vcs.values()))
        pps = []
        for raw in nv.pre_prepares:
            e = self.keys.decode_verified(raw, M.PrePrepare)
            if e is None or e.sender != env.sender or e.body.view != nv.view or not digest_ok(e.body):
                self._count("bad_new_view")
                return
            pps.append(e)
        if [e.body.seq for e in pps] != list(range(min_s + 1, max_s + 1)):
            self._count("bad_new_view")
            return
        for e in pps:
            want = o[e.body.seq]
            if want is None:
                if e.body.batch.txs or e.body.batch.proposal_view != nv.view:
                    self._count("bad_new_view")
                    return
            elif e.body.digest != want[0]:
                self._count("bad_new_view")
                return
        self.vc.last_new_view = NewViewRecord(nv.view, env.raw)
        self._enter_view(nv.view, min_s, max_s, pps, list(vcs.values()), out)

    def _enter_view(self, view: int, min_s: int, max_s: int, pps: list[M.Envelope], vcs: list[M.ViewChange],
                    out: list[Action]) -> None:
        self.view = view
        self.vc.active = True
        self.vc.own = None
        self._count("new_view")
        out.append(Persist("view", view.to_bytes(8, "big")))
        if self.vc.timer_on:
            self.vc.timer_on = False
            out.append(CancelTimer("view"))
        for v in [v for v in self.vc.received if v <= view]:
            del self.vc.received[v]
        # Drop uncommitted slots from older views; their requests are re-proposed if needed.
        for s in [s for s, sl in self.log.slots.items() if sl.view < view and not sl.committed]:
            del self.log.slots[s]
        for d in (self.log.prepares, self.log.commits):
            for k in [k for k in d if k.view < view]:
                del d[k]
        self.req.proposed = set()
        if min_s > self.log.last_exec:
            # The new view starts above what we executed: fetch the certified checkpoint.
            for vc in vcs:
                if vc.stable_seq == min_s and vc.checkpoint_proof:
                    roots = self._valid_checkpoint_proof(min_s, vc.checkpoint_proof)
                    if roots is not None:
                        senders = tuple(sorted({M.decode(r).sender for r in vc.checkpoint_proof}))
                        self.ckpt.target = StateTarget(min_s, roots.block_hash, roots.state_root, vc.checkpoint_proof,
                                                       senders)
                        self._request_state(out)
                    break
        for e in pps:
            pp = e.body
            if pp.seq <= self.ckpt.h:
                continue
            old = self.log.slots.pop(pp.seq, None)
            if e.sender == self.id:
                self._vote(pp.seq, view, pp.digest, out)
                self.log.slots[pp.seq] = Slot(view, pp.digest, pp.tx_root, pp.batch, e.raw)
                for raw in pp.batch.txs:
                    h = self._auth(raw)
                    if h is not None:
                        self.req.proposed.add(h)
            else:
                self._accept_pre_prepare(e, pp, out)
            new = self.log.slots.get(pp.seq)
            if old is not None and old.committed and new is not None and new.digest == old.digest:
                new.committed = True  # already committed in an earlier view: same batch, keep it
                new.commit_cert = old.commit_cert
        self.log.next_seq = max(max_s, self.log.last_exec) + 1
        for s in list(self.log.slots):
            self._check_prepared(s, out)
        self._execute_ready(out)
        self._try_propose(out)
        self._arm_view_timer(out)
