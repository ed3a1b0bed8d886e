"""PBFT checkpoints, garbage collection and state transfer (Castro & Liskov 1999, sections 4.3
and 5.3).

Paper link: B-FDL section 3.4. A mixin of :class:`ledger.pbft.Replica`: every
``checkpoint_interval`` sequence numbers a replica signs a CHECKPOINT with the block hash and
contract state root; 2f+1 matching CHECKPOINTs make it stable, the log below it is discarded and
the window moves. A replica that sees a certified checkpoint above its height (and does not catch
up in time), or that restarts, fetches a snapshot the App verifies against the certified roots.
"""

from __future__ import annotations

from typing import Optional

from ledger import messages as M
from ledger.pbft_state import Action, CancelTimer, CheckpointVote, ReplicaCore, Roots, Send, SetTimer, StateTarget


class Checkpointing(ReplicaCore):
    """Checkpoints and state transfer of a replica (see the module docstring)."""

    def _send_checkpoint(self, seq: int, block_hash: bytes, state_root: bytes, out: list[Action]) -> None:
        self.ckpt.own[seq] = Roots(block_hash, state_root)
        raw = self._sign(M.Checkpoint(seq, block_hash, state_root))
        self.ckpt.votes.setdefault(seq, {})[self.id] = CheckpointVote(block_hash, state_root, raw)
        out.append(Send(None, raw))
        self._check_stable(seq, out)

    def _on_checkpoint(self, env: M.Envelope, c: M.Checkpoint, out: list[Action]) -> None:
        if c.seq <= self.ckpt.h or c.seq % self.cfg.checkpoint_interval != 0:
            self._count("old_checkpoint")
            return
        if c.seq > self.ckpt.h + 50 * self.cfg.L:
            self._count("out_of_window")  # bound memory: absurdly far checkpoints are ignored
            return
        votes = self.ckpt.votes.setdefault(c.seq, {})
        if env.sender in votes:
            self._count("duplicate")
            return
        votes[env.sender] = CheckpointVote(c.block_hash, c.state_root, env.raw)
        self._check_stable(c.seq, out)

    def _certificate(self, seq: int) -> Optional[StateTarget]:
        """A 2f+1 certificate for checkpoint ``seq`` among the CHECKPOINTs received, if any."""
        votes = self.ckpt.votes.get(seq, {})
        groups: dict[tuple[bytes, bytes], list[int]] = {}
        for sender, (bh, sr, _raw) in votes.items():
            groups.setdefault((bh, sr), []).append(sender)
        for (bh, sr), senders in groups.items():
            if len(senders) >= 2 * self.f + 1:
                raws = tuple(votes[s].raw for s in sorted(senders)[: 2 * self.f + 1])
                return StateTarget(seq, bh, sr, raws, tuple(sorted(senders)))
        return None

    def _check_stable(self, seq: int, out: list[Action]) -> None:
        cert = self._certificate(seq)
        if cert is None:
            return
        own = self.ckpt.own.get(seq)
        if own is not None:
            if own != (cert.block_hash, cert.state_root):
                self._count("divergence_detected")
                self.stats["diverged_at"] = seq
                return
            self._make_stable(seq, cert.proof, out)
        elif seq > self.log.last_exec:
            # We are behind: give the normal protocol a moment, then fetch the state.
            if self.ckpt.target is None or self.ckpt.target.seq < seq:
                self.ckpt.target = cert
                out.append(SetTimer("state", self.cfg.state_timeout_ms))

    def _make_stable(self, seq: int, proof: tuple[bytes, ...], out: list[Action]) -> None:
        if seq <= self.ckpt.h:
            return
        self.ckpt.h = seq
        self.ckpt.stable_seq = seq
        self.ckpt.stable_proof = proof
        for s in [s for s in self.log.slots if s <= seq]:
            del self.log.slots[s]
        for d in (self.log.prepares, self.log.commits):
            for k in [k for k in d if k.seq <= seq]:
                del d[k]
        for s in [s for s in self.log.prepared if s <= seq]:
            del self.log.prepared[s]
        for s in [s for s in self.log.executed if s <= seq]:
            del self.log.executed[s]
        for s in [s for s in self.ckpt.votes if s < seq]:
            del self.ckpt.votes[s]
        for s in [s for s in self.ckpt.own if s < seq]:
            del self.ckpt.own[s]
        for s in [s for s in self.log.votes if s <= seq]:
            del self.log.votes[s]
        self.log.forwarded = {k for k in self.log.forwarded if k.seq > seq}
        self.app.on_stable(seq)
        self._count("stable_checkpoint")
        self._try_propose(out)

    def _request_state(self, out: list[Action]) -> None:
        assert self.ckpt.target is not None
        seq, _bh, _sr, _raws, senders = self.ckpt.target
        req = self._sign(M.StateRequest(seq, self.log.last_exec))
        for s in senders:
            if s != self.id:
                out.append(Send(s, req))
        out.append(SetTimer("state", self.cfg.state_timeout_ms * 2))

    def _on_state_request(self, env: M.Envelope, r: M.StateRequest, out: list[Action]) -> None:
        self._help_lagging(env.sender, out)
        if self.vc.active:
            for seq in range(r.have_height + 1, r.have_height + 1 + self.cfg.max_inflight + 1):
                sl = self.log.slots.get(seq)
                if sl is None or sl.view != self.view:
                    continue
                out.append(Send(env.sender, sl.pp_raw))
                for raw in (sl.my_prepare, sl.my_commit):
                    if raw is not None:
                        out.append(Send(env.sender, raw))
        s = self.ckpt.stable_seq
        if s <= r.have_height or s < r.seq or not self.ckpt.stable_proof:
            self._count("state_request_unserved")
            return
        snap = self.app.make_snapshot(s, r.have_height)
        if snap is None:
            return
        out.append(Send(env.sender, self._sign(M.StateResponse(s, self.ckpt.stable_proof, snap))))

    def _valid_checkpoint_proof(self, seq: int, proof: tuple[bytes, ...]) -> Optional[Roots]:
        """The roots certified by ``proof`` (2f+1 valid CHECKPOINTs for ``seq`` that agree), else None."""
        seen: dict[int, Roots] = {}
        for raw in proof:
            env = self.keys.decode_verified(raw, M.Checkpoint)
            if env is None or env.body.seq != seq:
                return None
            seen[env.sender] = Roots(env.body.block_hash, env.body.state_root)
        vals = set(seen.values())
        if len(seen) < 2 * self.f + 1 or len(vals) != 1:
            return None
        return vals.pop()

    def _on_state_response(self, env: M.Envelope, r: M.StateResponse, out: list[Action]) -> None:
        if r.seq <= self.log.last_exec:
            self._count("stale_state_response")
            return
        roots = self._valid_checkpoint_proof(r.seq, r.checkpoint_proof)
        if roots is None:
            self._count("bad_state_response")
            return
        if not self.app.install_snapshot(r.seq, roots.block_hash, roots.state_root, r.snapshot):
            self._count("bad_snapshot")
            return
        self._count("state_transfer")
        self.log.last_exec = r.seq
        self.ckpt.own[r.seq] = roots
        self.ckpt.target = None
        out.append(CancelTimer("state"))
        for h in [h for h in self.req.pending if self.app.is_executed(h)]:
            raw = self.req.pending.pop(h)
            self.req.verified.pop(raw, None)
            self.req.proposed.discard(h)
        self._make_stable(r.seq, r.checkpoint_proof, out)
        if self.log.next_seq <= self.log.last_exec:
            self.log.next_seq = self.log.last_exec + 1
        self._execute_ready(out)
