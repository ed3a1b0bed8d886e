"""PBFT replica as a pure state machine (Castro & Liskov, OSDI 1999 / TOCS 2002).

Paper link: B-FDL section 3.4 ("PBFT consensus ... tolerates f faulty nodes out of 3f+1") and
section 2.1. This module implements the ordering protocol; :mod:`ledger.node` glues it to blocks,
contracts and durable storage, :mod:`ledger.sim` and :mod:`ledger.tcp` move its messages.

Inputs: :meth:`Replica.receive` (a raw frame from the network), :meth:`Replica.on_timer`,
:meth:`Replica.start`; each takes ``now_ms`` from the caller (the state machine reads no clock).
Outputs: a list of actions, to be performed in order by the caller:

Module layout: this module (the :class:`Replica` and its inputs), :mod:`ledger.pbft_state` (the
replica's typed state parts, the :data:`Action` union, configuration, durable records),
:mod:`ledger.pbft_normal` (section 4.2), :mod:`ledger.pbft_checkpoint` (4.3, 5.3) and
:mod:`ledger.pbft_viewchange` (4.4): each phase is a mixin of :class:`Replica`.

* :class:`Persist` (key, value) — a vote or the current view. The caller must make every
  ``Persist`` durable before performing any later ``Send`` (votes are persisted before they are
  sent, so a replica that restarts never casts a conflicting vote).
* :class:`Send` (to replica id, ``None`` = broadcast to the other replicas, ``CLIENT`` = reply).
* :class:`SetTimer` / :class:`CancelTimer` (name, delay in ms).
* :class:`Committed` — a batch executed at ``seq`` (block height == sequence number).

Execution is delegated to an injected :class:`App` (the replicated service in Castro-Liskov
terms): ``check_tx`` authenticates a client transaction (Ed25519; each signature is checked once
per replica and cached), ``tx_root`` is the RFC 6962 Merkle root of a batch, ``execute`` builds and
stores the block and returns its hash and state root, ``make_snapshot``/``install_snapshot`` serve
state transfer. The App is where I/O happens; the replica itself has no networking, clock or disk.

Protocol summary (what is implemented):
* requests: clients broadcast REQUEST frames; every replica authenticates each transaction; the
  primary batches up to ``batch_size`` pending transactions per PRE-PREPARE and keeps at most
  ``max_inflight`` batches in flight (a new batch is proposed as soon as one executes, so batches
  grow with load);
* normal case: PRE-PREPARE (batch, digest, Merkle tx root) / PREPARE (2f matching from backups) /
  COMMIT (2f+1 matching, carrying the tx root); execution strictly in sequence order; the 2f+1
  COMMIT frames a batch committed on go to the App with it (the block's commit certificate,
  :mod:`ledger.certificate`);
* checkpoints every ``checkpoint_interval`` sequence numbers, carrying block hash and contract
  state root; stable at 2f+1 matching; the log below the stable checkpoint is discarded and
  sequence numbers are accepted only in the window ``(h, h + window]``;
* view change: a backup with a pending request starts a timer; on expiry it sends VIEW-CHANGE
  (stable checkpoint certificate + prepared certificates); the new primary sends NEW-VIEW with
  2f+1 VIEW-CHANGEs and re-issued PRE-PREPAREs (null batches for gaps), which every backup
  re-computes and checks. Timeouts double on each consecutive unsuccessful view change and reset
  once a batch executes. A replica that sees f+1 VIEW-CHANGEs for higher views joins the smallest;
* equivocation: two PRE-PREPAREs signed by one primary for the same (view, seq) with different
  digests are recorded in :attr:`Replica.equivocations` and trigger a view change; a replica that
  receives a PREPARE conflicting with its accepted PRE-PREPARE forwards that PRE-PREPARE once to
  the sender so the conflict becomes provable there too;
* state transfer: a replica that sees a stable checkpoint certificate above its executed height
  (and does not catch up through the normal protocol in time), or that restarts, sends
  STATE-REQUEST; a STATE-RESPONSE with a valid 2f+1 checkpoint certificate and a snapshot that the
  App verifies against the certified block hash / state root is installed;
* old-view, out-of-window, duplicate, unsigned, forged and malformed messages are dropped and
  counted in :attr:`Replica.stats`.

Deviations from the paper's PBFT (see docs/ledger.md): signatures instead of MAC authenticators
everywhere; replies are per batch (f+1 matching REPLY frames + Merkle inclusion proof) rather
than per request; the pre-prepare timestamp is the primary's clock and is not checked against
the backups' clocks.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from ledger import messages as M
from ledger.pbft_checkpoint import Checkpointing
from ledger.pbft_normal import NormalCase
from ledger.pbft_state import (CLIENT, Action, App, CancelTimer, Checkpoints, Committed, Config, ExecResult, Log,
                               Persist, PreparedRecord, Requests, Send, SetTimer, Ticks, ViewChanges, Vote,
                               decode_prepared, encode_prepared, restored_prepared, restored_votes)
from ledger.pbft_viewchange import ViewChanging

__all__ = [
    "CLIENT", "Action", "App", "CancelTimer", "Committed", "Config", "ExecResult", "Persist", "Replica", "Send",
    "SetTimer", "decode_prepared", "encode_prepared", "restored_prepared", "restored_votes",
]


class Replica(NormalCase, Checkpointing, ViewChanging):
    """One PBFT replica. Deterministic given its inputs. Its state is in typed parts
    (:mod:`ledger.pbft_state`): ``log`` (normal case), ``ckpt`` (checkpoints, state transfer),
    ``vc`` (view changes), ``req`` (client requests), ``ticks`` (retransmission), plus ``view``."""

    def __init__(self, rid: int, cfg: Config, keyring: M.KeyRing, signer: M.Signer, app: App, *,
                 view: int = 0, votes: Optional[dict[int, Vote]] = None,
                 prepared: Optional[dict[int, PreparedRecord]] = None) -> None:
        if keyring.n != cfg.n:
            raise ValueError("keyring size != n")
        if cfg.n < 1:
            raise ValueError("n must be >= 1")
        self.id = rid
        self.cfg = cfg
        self.n, self.f = cfg.n, cfg.f
        self.keys = keyring
        self.signer = signer
        self.app = app
        self.view = view
        self.now = 0
        self.stats = {}
        executed = app.height()
        self.log = Log(last_exec=executed, next_seq=executed + 1,
                       votes={s: Vote(*v) for s, v in (votes or {}).items()})
        self.ckpt = Checkpoints(h=executed)  # restart: the low watermark is the executed height
        self.vc = ViewChanges()
        self.req = Requests()
        self.ticks = Ticks()
        for seq, rec in (prepared or {}).items():
            # Restored from disk after a restart: certificates above the executed height minus
            # the log window (older ones are below every replica's stable checkpoint), checked
            # again so that a damaged record can never make our VIEW-CHANGE invalid.
            rec = PreparedRecord(*rec)
            if not self._own_proof_ok(seq, rec.view, rec.digest, rec.proof):
                self.log.damaged.append(seq)
            elif seq > executed - 2 * cfg.L:
                self.log.prepared[seq] = rec

    # -- inputs ------------------------------------------------------------------------------

    def start(self, now_ms: int, *, restarted: bool = False) -> list[Action]:
        self.now = now_ms
        out: list[Action] = []
        if restarted and self.n > 1:
            out.append(Send(None, self._sign(M.StateRequest(self.log.last_exec + 1, self.log.last_exec))))
            if self.view > 0:
                # We may have crashed in the middle of a view change (our VIEW-CHANGE may never
                # have left): rejoin it with a fresh VIEW-CHANGE and wait for its NEW-VIEW.
                self._start_view_change(self.view, out, rejoin=True)
        return out

    def receive(self, raw: bytes, now_ms: int) -> list[Action]:
        """Handle one frame from the network. Never raises on bad input."""
        self.now = now_ms
        try:
            env = M.decode(raw)
        except M.MessageDecodeError:
            self._count("malformed")
            return []
        body = env.body
        out: list[Action] = []
        if isinstance(body, M.Request):
            self._on_request(body, out)
            return out
        if isinstance(body, M.Reply):
            self._count("ignored")
            return out
        if env.sender == self.id:
            self._count("bad_signature")
            return out
        if self._surplus_vote(body):
            # A vote this replica no longer needs (the slot is already prepared / committed with
            # the same digest): dropped unverified, as if the network had lost it. Saves the
            # Ed25519 check of about 2 of every 5 normal-case votes (n = 4).
            self._count("surplus_vote")
            return out
        if not self.keys.verify_envelope(env):
            self._count("bad_signature")
            return out
        v = getattr(body, "view", None)
        if v is None:
            v = getattr(body, "new_view", None)
        if v is not None and v < self.view:
            self._help_lagging(env.sender, out)
        handler = self._HANDLERS.get(type(body))
        if handler is not None:
            handler(self, env, body, out)
        return out

    def _surplus_vote(self, body: Any) -> bool:
        t = type(body)
        if t is M.Prepare:
            slot = self.log.slots.get(body.seq)
            return (slot is not None and slot.prepared and slot.view == body.view == self.view
                    and slot.digest == body.digest)
        if t is M.Commit:
            slot = self.log.slots.get(body.seq)
            return (slot is not None and slot.committed and slot.view == body.view == self.view
                    and slot.digest == body.digest and slot.tx_root == body.tx_root)
        return False

    def on_timer(self, name: str, now_ms: int) -> list[Action]:
        self.now = now_ms
        out: list[Action] = []
        if name == "view":
            self.vc.timer_on = False
            if self.vc.active:
                if self.req.pending or any(not s.committed for s in self.log.slots.values() if s.view == self.view):
                    self._count("view_timeout")
                    self._start_view_change(self.view + 1, out)
            elif len(self.vc.received.get(self.view, {})) >= 2 * self.f + 1:
                # Castro-Liskov: escalate only once 2f+1 replicas are in this view change too.
                self._count("view_change_timeout")
                self._start_view_change(self.view + 1, out)
            else:
                if self.vc.own is not None:
                    out.append(Send(None, self.vc.own))  # retransmit; stay in this view change
                self.vc.timer_on = True
                out.append(SetTimer("view", self._view_timeout()))
        elif name == "tick":
            self.ticks.on = False
            self._tick(out)
        elif name == "state":
            if self.ckpt.target is not None and self.ckpt.target.seq > self.log.last_exec:
                self._request_state(out)
            else:
                self.ckpt.target = None
        return out

    _HANDLERS: dict[type, Callable[..., None]] = {
        M.PrePrepare: NormalCase._on_pre_prepare,
        M.Prepare: NormalCase._on_prepare,
        M.Commit: NormalCase._on_commit,
        M.Checkpoint: Checkpointing._on_checkpoint,
        M.ViewChange: ViewChanging._on_view_change,
        M.NewView: ViewChanging._on_new_view,
        M.StateRequest: Checkpointing._on_state_request,
        M.StateResponse: Checkpointing._on_state_response,
    }

    # -- introspection (tests) ---------------------------------------------------------------

    def memory_footprint(self) -> int:
        return (len(self.log.slots) + len(self.log.prepares) + len(self.log.commits) + len(self.log.prepared)
                + len(self.ckpt.votes) + len(self.log.votes) + len(self.vc.received))
