"""PBFT replica as a pure state machine (Castro & Liskov, OSDI 1999 / TOCS 2002).

Paper link: B-FDL section 3.4 ("PBFT consensus ... tolerates f faulty nodes out of 3f+1") and
section 2.1. This module implements the ordering protocol; :mod:`ledger.node` glues it to blocks,
contracts and durable storage, :mod:`ledger.sim` and :mod:`ledger.tcp` move its messages.

Inputs: :meth:`Replica.receive` (a raw frame from the network), :meth:`Replica.on_timer`,
:meth:`Replica.start`; each takes ``now_ms`` from the caller (the state machine reads no clock).
Outputs: a list of actions, to be performed in order by the caller:

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
  COMMIT (2f+1 matching, carrying the tx root); execution strictly in sequence order;
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

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Protocol

from ledger import messages as M

CLIENT = -1


# ---------------------------------------------------------------------------------------------
# Actions


@dataclass(frozen=True)
class Send:
    to: Optional[int]  # replica id, None = all other replicas, CLIENT = the client(s)
    raw: bytes


@dataclass(frozen=True)
class Persist:
    key: str
    value: Optional[bytes]  # None deletes


@dataclass(frozen=True)
class SetTimer:
    name: str
    delay_ms: int


@dataclass(frozen=True)
class CancelTimer:
    name: str


@dataclass(frozen=True)
class Committed:
    seq: int
    view: int
    digest: bytes
    tx_root: bytes
    block_hash: bytes
    state_root: bytes
    n_txs: int


Action = Any


@dataclass(frozen=True)
class ExecResult:
    block_hash: bytes
    state_root: bytes
    results_digest: bytes


class App(Protocol):
    """The replicated service (implemented by :class:`ledger.node.LedgerApp`)."""

    def check_tx(self, raw: bytes) -> Optional[bytes]:
        """Decode and authenticate a transaction; its hash (SHA-256 of the raw bytes), or None."""

    def tx_root(self, tx_hashes: list[bytes]) -> bytes: ...

    def is_executed(self, tx_hash: bytes) -> bool: ...

    def execute(self, seq: int, batch: M.Batch, proposer: int, commits: tuple[bytes, ...]) -> ExecResult:
        """Execute the committed batch at ``seq`` and store its block with ``commits`` (the 2f+1
        signed COMMIT frames that committed it: the block's commit certificate)."""

    def height(self) -> int: ...

    def make_snapshot(self, seq: int, have_height: int) -> Optional[bytes]: ...

    def install_snapshot(self, seq: int, block_hash: bytes, state_root: bytes, snapshot: bytes) -> bool: ...

    def on_stable(self, seq: int) -> None: ...


@dataclass
class Config:
    n: int
    checkpoint_interval: int = 10
    window: int = 0  # 0 -> 2 * checkpoint_interval
    batch_size: int = 64
    max_inflight: int = 2
    view_timeout_ms: int = 500
    state_timeout_ms: int = 200

    @property
    def f(self) -> int:
        return (self.n - 1) // 3

    @property
    def L(self) -> int:
        return self.window or 2 * self.checkpoint_interval


@dataclass
class _Slot:
    """Per-sequence-number log entry for the currently accepted pre-prepare."""

    view: int
    digest: bytes
    tx_root: bytes
    batch: M.Batch
    pp_raw: bytes
    prepared: bool = False
    committed: bool = False
    sent_commit: bool = False
    my_prepare: Optional[bytes] = None
    my_commit: Optional[bytes] = None
    commit_cert: tuple[bytes, ...] = ()  # the 2f+1 matching COMMIT frames it committed on


def _digest_ok(pp: M.PrePrepare) -> bool:
    return pp.digest == M.batch_digest(pp.tx_root, pp.batch.timestamp_ms, pp.batch.proposal_view)


class Replica:
    """One PBFT replica. Deterministic given its inputs."""

    def __init__(self, rid: int, cfg: Config, keyring: M.KeyRing, signer: M.Signer, app: App, *,
                 view: int = 0, votes: Optional[dict[int, tuple[int, bytes]]] = None,
                 prepared: Optional[dict[int, tuple[int, bytes, M.PreparedProof]]] = None) -> None:
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
        self.active = True
        self.last_exec = app.height()
        self.h = self.last_exec  # low watermark (last stable checkpoint, or executed height on restart)
        self.stable_proof: tuple[bytes, ...] = ()
        self.stable_seq = 0  # last checkpoint with a 2f+1 certificate we hold (stable_proof)
        self.log: dict[int, _Slot] = {}
        self.prepares: dict[tuple[int, int], dict[int, tuple[bytes, bytes]]] = {}
        self.commits: dict[tuple[int, int], dict[int, tuple[bytes, bytes, bytes]]] = {}
        self.prepared_proofs: dict[int, tuple[int, bytes, M.PreparedProof]] = {}
        self.damaged_proofs: list[int] = []  # restored certificates that fail their checks
        if prepared:
            # Restored from disk after a restart: certificates above the executed height minus
            # the log window (older ones are below every replica's stable checkpoint), checked
            # again so that a damaged record can never make our VIEW-CHANGE invalid.
            for seq, (pv, pd, proof) in prepared.items():
                if not self._own_proof_ok(seq, pv, pd, proof):
                    self.damaged_proofs.append(seq)
                elif seq > self.last_exec - 2 * cfg.L:
                    self.prepared_proofs[seq] = (pv, pd, proof)
        self.checkpoints: dict[int, dict[int, tuple[bytes, bytes, bytes]]] = {}
        self.own_checkpoints: dict[int, tuple[bytes, bytes]] = {}
        self.pending: "OrderedDict[bytes, bytes]" = OrderedDict()  # tx_hash -> raw tx
        self.proposed: set[bytes] = set()
        self.verified: dict[bytes, bytes] = {}  # raw tx -> tx hash (authenticated once)
        self.next_seq = self.last_exec + 1
        self.vcs: dict[int, dict[int, tuple[M.ViewChange, bytes]]] = {}
        self.new_view_sent: set[int] = set()
        self.vc_attempts = 0
        self.view_timer_on = False
        self.votes = dict(votes or {})  # seq -> (view, digest) persisted votes (restart safety)
        self.equivocations: list[tuple[int, int, int]] = []
        self.forwarded: set[tuple[int, int, int]] = set()
        self.state_target: Optional[tuple[int, bytes, bytes, tuple[bytes, ...], tuple[int, ...]]] = None
        self.stats: dict[str, int] = {}
        self.last_new_view: Optional[tuple[int, bytes]] = None
        self.tick_on = False
        self.tick_exec = -1
        self.own_vc: Optional[bytes] = None
        self.own_vcs: dict[int, bytes] = {}
        self.exec_digests: dict[int, bytes] = {}  # digest executed at seq (above the stable checkpoint)  # our VIEW-CHANGE per view (recent), for lagging peers
        self.nv_helped: dict[tuple[int, int], int] = {}  # (peer, view) -> last time helped
        self._proposing = False  # re-entrancy guard of _try_propose (n = 1 executes while proposing)
        self.now = 0

    # -- helpers -----------------------------------------------------------------------------

    def primary(self, view: Optional[int] = None) -> int:
        return (self.view if view is None else view) % self.n

    @property
    def is_primary(self) -> bool:
        return self.primary() == self.id

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    def _sign(self, body: Any) -> bytes:
        return M.encode(body, self.id, self.signer)

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
        if ppe.sender != pp.view % self.n or not _digest_ok(pp):
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

    def _in_window(self, seq: int) -> bool:
        return self.h < seq <= self.h + self.cfg.L

    # -- inputs ------------------------------------------------------------------------------

    def start(self, now_ms: int, *, restarted: bool = False) -> list[Action]:
        self.now = now_ms
        out: list[Action] = []
        if restarted and self.n > 1:
            out.append(Send(None, self._sign(M.StateRequest(self.last_exec + 1, self.last_exec))))
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
            slot = self.log.get(body.seq)
            return (slot is not None and slot.prepared and slot.view == body.view == self.view
                    and slot.digest == body.digest)
        if t is M.Commit:
            slot = self.log.get(body.seq)
            return (slot is not None and slot.committed and slot.view == body.view == self.view
                    and slot.digest == body.digest and slot.tx_root == body.tx_root)
        return False

    def _help_lagging(self, peer: int, out: list[Action]) -> None:
        """A peer speaks in an older view: send it the NEW-VIEW that justifies ours (once per view)."""
        if self.last_new_view is None:
            return
        if not self._may_help((peer, self.last_new_view[0])):
            return
        out.append(Send(peer, self.last_new_view[1]))

    def _may_help(self, key: tuple[int, int]) -> bool:
        """Rate limit for help sent to a lagging peer: at most once per half view timeout."""
        last = self.nv_helped.get(key)
        if last is not None and self.now - last < self.cfg.view_timeout_ms // 2:
            return False
        if len(self.nv_helped) > 10_000:
            self.nv_helped.clear()
        self.nv_helped[key] = self.now
        return True

    def on_timer(self, name: str, now_ms: int) -> list[Action]:
        self.now = now_ms
        out: list[Action] = []
        if name == "view":
            self.view_timer_on = False
            if self.active:
                if self.pending or any(not s.committed for s in self.log.values() if s.view == self.view):
                    self._count("view_timeout")
                    self._start_view_change(self.view + 1, out)
            elif len(self.vcs.get(self.view, {})) >= 2 * self.f + 1:
                # Castro-Liskov: escalate only once 2f+1 replicas are in this view change too.
                self._count("view_change_timeout")
                self._start_view_change(self.view + 1, out)
            else:
                if self.own_vc is not None:
                    out.append(Send(None, self.own_vc))  # retransmit; stay in this view change
                self.view_timer_on = True
                out.append(SetTimer("view", self.cfg.view_timeout_ms << min(self.vc_attempts, 10)))
        elif name == "tick":
            self.tick_on = False
            self._tick(out)
        elif name == "state":
            if self.state_target is not None and self.state_target[0] > self.last_exec:
                self._request_state(out)
            else:
                self.state_target = None
        return out

    # -- requests ----------------------------------------------------------------------------

    def _auth(self, raw: bytes) -> Optional[bytes]:
        h = self.verified.get(raw)
        if h is None:
            h = self.app.check_tx(raw)
            if h is None:
                self._count("bad_tx")
                return None
            if len(self.verified) > 200_000:  # a cache: bounded even under Byzantine floods
                self.verified = {r: x for r, x in self.verified.items() if x in self.pending}
            self.verified[raw] = h
        return h

    def _on_request(self, req: M.Request, out: list[Action]) -> None:
        added = False
        for raw in req.txs:
            h = self._auth(raw)
            if h is None:
                continue
            if h in self.pending:
                self._count("duplicate_request")
                continue
            if self.app.is_executed(h):
                self._count("duplicate_request")
                self.verified.pop(raw, None)
                continue
            self.pending[h] = raw
            added = True
        if not added:
            return
        if self.active and self.is_primary:
            self._try_propose(out)
        self._arm_view_timer(out)

    def _arm_tick(self, out: list[Action]) -> None:
        if self.n > 1 and not self.tick_on and (self.pending or self.last_exec < max(self.log, default=0)
                                                 or not self.active):
            self.tick_on = True
            out.append(SetTimer("tick", max(1, self.cfg.view_timeout_ms // 4)))

    def _tick(self, out: list[Action]) -> None:
        """Retransmission (messages may be lost): resend our votes for unexecuted slots and, if we
        made no progress since the last tick, ask the others for what we miss."""
        if self.active:
            for seq in sorted(self.log):
                sl = self.log[seq]
                if seq <= self.last_exec or sl.view != self.view:
                    continue
                if self.primary(sl.view) == self.id:
                    out.append(Send(None, sl.pp_raw))
                if sl.my_prepare is not None:
                    out.append(Send(None, sl.my_prepare))
                if sl.my_commit is not None:
                    out.append(Send(None, sl.my_commit))
        if self.last_exec == self.tick_exec and (self.pending or self.log or not self.active):
            out.append(Send(None, self._sign(M.StateRequest(self.last_exec + 1, self.last_exec))))
            self._count("sync_request")
            if self.active and not self.is_primary and self.pending:
                # PBFT request forwarding: the primary may never have received these requests
                # (it was down or partitioned when the client broadcast them).
                fwd = tuple(raw for h, raw in self.pending.items() if h not in self.proposed)[: 4 * self.cfg.batch_size]
                if fwd:
                    out.append(Send(self.primary(), M.encode(M.Request(fwd), M.CLIENT_SENDER, None)))
                    self._count("requests_forwarded")
        self.tick_exec = self.last_exec
        self._arm_tick(out)

    def _arm_view_timer(self, out: list[Action]) -> None:
        self._arm_tick(out)
        if self.n > 1 and self.active and self.pending and not self.view_timer_on and not self.is_primary:
            self.view_timer_on = True
            out.append(SetTimer("view", self.cfg.view_timeout_ms << min(self.vc_attempts, 10)))

    def _try_propose(self, out: list[Action]) -> None:
        if not (self.active and self.is_primary):
            return
        if self._proposing:
            # Re-entered from the execution of a batch we are proposing (n = 1: f = 0, so our own
            # PRE-PREPARE prepares, commits and executes synchronously inside ``_propose``). The
            # outer loop below re-reads next_seq/last_exec/pending after ``_propose`` returns.
            return
        self._proposing = True
        try:
            self._propose_loop(out)
        finally:
            self._proposing = False

    def _propose_loop(self, out: list[Action]) -> None:
        while True:
            if self.next_seq <= self.last_exec:
                self.next_seq = self.last_exec + 1
            inflight = self.next_seq - 1 - self.last_exec
            if inflight >= self.cfg.max_inflight or not self._in_window(self.next_seq):
                return
            txs: list[bytes] = []
            hashes: list[bytes] = []
            for h, raw in self.pending.items():
                if h in self.proposed:
                    continue
                txs.append(raw)
                hashes.append(h)
                if len(txs) >= self.cfg.batch_size:
                    break
            if not txs:
                return
            old = self.votes.get(self.next_seq)
            if old is not None and old[0] == self.view:
                # We voted at (view, seq) before a restart and no longer hold that batch: a new
                # PRE-PREPARE there would equivocate. Hand the view over instead; the view change
                # re-proposes whatever may have prepared at seq.
                self._count("voted_slot_after_restart")
                self._start_view_change(self.view + 1, out)
                return
            self.proposed.update(hashes)
            # Claim the sequence number before proposing: with n = 1 the batch executes inside
            # ``_propose``, and advancing next_seq afterwards left a gap (seq + 2 proposed next,
            # seq + 1 never: the single-replica ledger stopped after its first batch).
            seq = self.next_seq
            self.next_seq = seq + 1
            self._propose(seq, M.Batch(self.now, self.view, tuple(txs)), hashes, out)

    def _propose(self, seq: int, batch: M.Batch, hashes: list[bytes], out: list[Action]) -> None:
        root = self.app.tx_root(hashes)
        digest = M.batch_digest(root, batch.timestamp_ms, batch.proposal_view)
        pp = M.PrePrepare(self.view, seq, digest, root, batch)
        raw = self._sign(pp)
        self._vote(seq, self.view, digest, out)
        out.append(Send(None, raw))
        self.log[seq] = _Slot(self.view, digest, root, batch, raw)
        self._check_prepared(seq, out)

    def _vote(self, seq: int, view: int, digest: bytes, out: list[Action]) -> bool:
        """Record (and persist) our vote for (view, seq); False if it would conflict."""
        old = self.votes.get(seq)
        if old is not None and old[0] == view and old[1] != digest:
            self._count("conflicting_vote_refused")
            return False
        if old != (view, digest):
            self.votes[seq] = (view, digest)
            # A ring of 4L keys: votes below the stable checkpoint are simply overwritten later.
            out.append(Persist(f"vote/{seq % (4 * self.cfg.L)}",
                               seq.to_bytes(8, "big") + view.to_bytes(8, "big") + digest))
        return True

    # -- normal case -------------------------------------------------------------------------

    def _on_pre_prepare(self, env: M.Envelope, pp: M.PrePrepare, out: list[Action]) -> None:
        if env.sender != self.primary(pp.view):
            self._count("pre_prepare_not_from_primary")
            return
        if pp.view < self.view:
            self._count("old_view")
            return
        if pp.view > self.view or not self.active:
            self._count("future_view")
            return
        if not self._in_window(pp.seq):
            self._count("out_of_window")
            if pp.seq > self.h and self.view_timer_on:
                # The primary is making progress we cannot follow yet: we are the one lagging.
                out.append(SetTimer("view", self.cfg.view_timeout_ms << min(self.vc_attempts, 10)))
            return
        self._accept_pre_prepare(env, pp, out)

    def _accept_pre_prepare(self, env: M.Envelope, pp: M.PrePrepare, out: list[Action]) -> bool:
        slot = self.log.get(pp.seq)
        if slot is not None and slot.view == pp.view:
            if slot.digest != pp.digest:
                self._record_equivocation(pp.view, pp.seq, out)
            else:
                self._count("duplicate")
            return False
        if slot is not None and slot.view > pp.view:
            self._count("old_view")
            return False
        if not _digest_ok(pp):
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
        if pp.seq <= self.last_exec:
            # Already executed (e.g. re-proposed in a new view): take part again so that lagging
            # replicas can commit it in this view, but only for the batch we executed.
            if self.exec_digests.get(pp.seq) != pp.digest:
                self._count("conflicts_with_executed")
                return False
        if not self._vote(pp.seq, pp.view, pp.digest, out):
            return False
        slot = _Slot(pp.view, pp.digest, pp.tx_root, pp.batch, env.raw)
        self.log[pp.seq] = slot
        if env.sender != self.id:
            praw = self._sign(M.Prepare(pp.view, pp.seq, pp.digest))
            slot.my_prepare = praw
            self.prepares.setdefault((pp.view, pp.seq), {})[self.id] = (pp.digest, praw)
            out.append(Send(None, praw))
        for h in hashes:
            self.proposed.add(h)
        self._check_prepared(pp.seq, out)
        self._arm_view_timer(out)
        return True

    def _record_equivocation(self, view: int, seq: int, out: list[Action]) -> None:
        rec = (view, seq, self.primary(view))
        if rec not in self.equivocations:
            self.equivocations.append(rec)
            self._count("equivocation")
            if self.active and view == self.view:
                self._start_view_change(self.view + 1, out)

    def _on_prepare(self, env: M.Envelope, p: M.Prepare, out: list[Action]) -> None:
        if p.view != self.view or not self.active:
            self._count("old_view" if p.view < self.view else "future_view")
            return
        if not self._in_window(p.seq) or env.sender == self.primary(p.view):
            self._count("out_of_window")
            return
        votes = self.prepares.setdefault((p.view, p.seq), {})
        if env.sender in votes:
            self._count("duplicate")
            return
        votes[env.sender] = (p.digest, env.raw)
        slot = self.log.get(p.seq)
        if slot is not None and slot.view == p.view and slot.digest != p.digest:
            key = (p.view, p.seq, env.sender)
            if key not in self.forwarded and len(self.forwarded) < 10_000:
                self.forwarded.add(key)
                out.append(Send(env.sender, slot.pp_raw))  # make a possible equivocation provable
        self._check_prepared(p.seq, out)

    def _check_prepared(self, seq: int, out: list[Action]) -> None:
        slot = self.log.get(seq)
        if slot is None or slot.view != self.view:
            return
        if not slot.prepared:
            votes = self.prepares.get((slot.view, seq), {})
            matching = [raw for d, raw in votes.values() if d == slot.digest]
            if len(matching) < 2 * self.f:
                return
            slot.prepared = True
            proof = M.PreparedProof(slot.pp_raw, tuple(matching[: 2 * self.f]))
            self.prepared_proofs[seq] = (slot.view, slot.digest, proof)
            # The prepared certificate is durable before our COMMIT leaves (Castro-Liskov keep
            # the log on disk): after a crash, our VIEW-CHANGE still carries it, so a batch that
            # may have committed is re-proposed at the same sequence number in the next view.
            out.append(Persist(f"prep/{seq % (4 * self.cfg.L)}", encode_prepared(seq, slot.view, slot.digest, proof)))
        if not slot.sent_commit:
            slot.sent_commit = True
            slot.my_commit = self._sign(M.Commit(slot.view, seq, slot.digest, slot.tx_root))
            out.append(Send(None, slot.my_commit))
            self.commits.setdefault((slot.view, seq), {})[self.id] = (slot.digest, slot.tx_root, slot.my_commit)
        self._check_committed(seq, out)

    def _on_commit(self, env: M.Envelope, c: M.Commit, out: list[Action]) -> None:
        if c.view != self.view or not self.active:
            self._count("old_view" if c.view < self.view else "future_view")
            return
        if not self._in_window(c.seq):
            self._count("out_of_window")
            return
        votes = self.commits.setdefault((c.view, c.seq), {})
        if env.sender in votes:
            self._count("duplicate")
            return
        votes[env.sender] = (c.digest, c.tx_root, env.raw)
        self._check_committed(c.seq, out)

    def _check_committed(self, seq: int, out: list[Action]) -> None:
        slot = self.log.get(seq)
        if slot is None or not slot.prepared or slot.committed or slot.view != self.view:
            return
        votes = self.commits.get((slot.view, seq), {})
        matching = sorted((s, raw) for s, (d, r, raw) in votes.items() if d == slot.digest and r == slot.tx_root)
        if len(matching) >= 2 * self.f + 1:
            slot.committed = True
            slot.commit_cert = tuple(raw for _s, raw in matching[: 2 * self.f + 1])
            self._execute_ready(out)

    def _execute_ready(self, out: list[Action]) -> None:
        progressed = False
        while True:
            seq = self.last_exec + 1
            slot = self.log.get(seq)
            if slot is None or not slot.committed:
                break
            proposer = slot.batch.proposal_view % self.n
            res = self.app.execute(seq, slot.batch, proposer, slot.commit_cert)
            self.last_exec = seq
            self.exec_digests[seq] = slot.digest
            progressed = True
            for raw in slot.batch.txs:
                h = self.verified.pop(raw, None) or M.sha256(raw)
                self.pending.pop(h, None)
                self.proposed.discard(h)
            out.append(Committed(seq, slot.view, slot.digest, slot.tx_root, res.block_hash, res.state_root, len(slot.batch.txs)))
            out.append(Send(CLIENT, self._sign(M.Reply(slot.view, seq, res.block_hash, slot.tx_root, res.results_digest))))
            if seq % self.cfg.checkpoint_interval == 0:
                self._send_checkpoint(seq, res.block_hash, res.state_root, out)
        if progressed:
            self.vc_attempts = 0
            if self.view_timer_on:
                self.view_timer_on = False
                out.append(CancelTimer("view"))
            self._arm_view_timer(out)
            self._try_propose(out)

    # -- checkpoints and garbage collection --------------------------------------------------

    def _send_checkpoint(self, seq: int, block_hash: bytes, state_root: bytes, out: list[Action]) -> None:
        self.own_checkpoints[seq] = (block_hash, state_root)
        raw = self._sign(M.Checkpoint(seq, block_hash, state_root))
        self.checkpoints.setdefault(seq, {})[self.id] = (block_hash, state_root, raw)
        out.append(Send(None, raw))
        self._check_stable(seq, out)

    def _on_checkpoint(self, env: M.Envelope, c: M.Checkpoint, out: list[Action]) -> None:
        if c.seq <= self.h or c.seq % self.cfg.checkpoint_interval != 0:
            self._count("old_checkpoint")
            return
        if c.seq > self.h + 50 * self.cfg.L:
            self._count("out_of_window")  # bound memory: absurdly far checkpoints are ignored
            return
        votes = self.checkpoints.setdefault(c.seq, {})
        if env.sender in votes:
            self._count("duplicate")
            return
        votes[env.sender] = (c.block_hash, c.state_root, env.raw)
        self._check_stable(c.seq, out)

    def _certificate(self, seq: int) -> Optional[tuple[bytes, bytes, tuple[bytes, ...], tuple[int, ...]]]:
        votes = self.checkpoints.get(seq, {})
        groups: dict[tuple[bytes, bytes], list[int]] = {}
        for sender, (bh, sr, _raw) in votes.items():
            groups.setdefault((bh, sr), []).append(sender)
        for (bh, sr), senders in groups.items():
            if len(senders) >= 2 * self.f + 1:
                raws = tuple(votes[s][2] for s in sorted(senders)[: 2 * self.f + 1])
                return bh, sr, raws, tuple(sorted(senders))
        return None

    def _check_stable(self, seq: int, out: list[Action]) -> None:
        cert = self._certificate(seq)
        if cert is None:
            return
        bh, sr, raws, senders = cert
        own = self.own_checkpoints.get(seq)
        if own is not None:
            if own != (bh, sr):
                self._count("divergence_detected")
                self.stats["diverged_at"] = seq
                return
            self._make_stable(seq, raws, out)
        elif seq > self.last_exec:
            # We are behind: give the normal protocol a moment, then fetch the state.
            if self.state_target is None or self.state_target[0] < seq:
                self.state_target = (seq, bh, sr, raws, senders)
                out.append(SetTimer("state", self.cfg.state_timeout_ms))

    def _make_stable(self, seq: int, proof: tuple[bytes, ...], out: list[Action]) -> None:
        if seq <= self.h:
            return
        self.h = seq
        self.stable_seq = seq
        self.stable_proof = proof
        for s in [s for s in self.log if s <= seq]:
            del self.log[s]
        for d in (self.prepares, self.commits):
            for k in [k for k in d if k[1] <= seq]:
                del d[k]
        for s in [s for s in self.prepared_proofs if s <= seq]:
            del self.prepared_proofs[s]
        for s in [s for s in self.exec_digests if s <= seq]:
            del self.exec_digests[s]
        for s in [s for s in self.checkpoints if s < seq]:
            del self.checkpoints[s]
        for s in [s for s in self.own_checkpoints if s < seq]:
            del self.own_checkpoints[s]
        for s in [s for s in self.votes if s <= seq]:
            del self.votes[s]
        self.forwarded = {k for k in self.forwarded if k[1] > seq}
        self.app.on_stable(seq)
        self._count("stable_checkpoint")
        self._try_propose(out)

    # -- state transfer ----------------------------------------------------------------------

    def _request_state(self, out: list[Action]) -> None:
        assert self.state_target is not None
        seq, _bh, _sr, _raws, senders = self.state_target
        req = self._sign(M.StateRequest(seq, self.last_exec))
        for s in senders:
            if s != self.id:
                out.append(Send(s, req))
        out.append(SetTimer("state", self.cfg.state_timeout_ms * 2))

    def _on_state_request(self, env: M.Envelope, r: M.StateRequest, out: list[Action]) -> None:
        self._help_lagging(env.sender, out)
        if self.active:
            for seq in range(r.have_height + 1, r.have_height + 1 + self.cfg.max_inflight + 1):
                sl = self.log.get(seq)
                if sl is None or sl.view != self.view:
                    continue
                out.append(Send(env.sender, sl.pp_raw))
                for raw in (sl.my_prepare, sl.my_commit):
                    if raw is not None:
                        out.append(Send(env.sender, raw))
        s = self.stable_seq
        if s <= r.have_height or s < r.seq or not self.stable_proof:
            self._count("state_request_unserved")
            return
        snap = self.app.make_snapshot(s, r.have_height)
        if snap is None:
            return
        out.append(Send(env.sender, self._sign(M.StateResponse(s, self.stable_proof, snap))))

    def _valid_checkpoint_proof(self, seq: int, proof: tuple[bytes, ...]) -> Optional[tuple[bytes, bytes]]:
        seen: dict[int, tuple[bytes, bytes]] = {}
        for raw in proof:
            env = self.keys.decode_verified(raw, M.Checkpoint)
            if env is None or env.body.seq != seq:
                return None
            seen[env.sender] = (env.body.block_hash, env.body.state_root)
        vals = set(seen.values())
        if len(seen) < 2 * self.f + 1 or len(vals) != 1:
            return None
        return vals.pop()

    def _on_state_response(self, env: M.Envelope, r: M.StateResponse, out: list[Action]) -> None:
        if r.seq <= self.last_exec:
            self._count("stale_state_response")
            return
        roots = self._valid_checkpoint_proof(r.seq, r.checkpoint_proof)
        if roots is None:
            self._count("bad_state_response")
            return
        if not self.app.install_snapshot(r.seq, roots[0], roots[1], r.snapshot):
            self._count("bad_snapshot")
            return
        self._count("state_transfer")
        self.last_exec = r.seq
        self.own_checkpoints[r.seq] = roots
        self.state_target = None
        out.append(CancelTimer("state"))
        for h in [h for h in self.pending if self.app.is_executed(h)]:
            raw = self.pending.pop(h)
            self.verified.pop(raw, None)
            self.proposed.discard(h)
        self._make_stable(r.seq, r.checkpoint_proof, out)
        if self.next_seq <= self.last_exec:
            self.next_seq = self.last_exec + 1
        self._execute_ready(out)

    # -- view change -------------------------------------------------------------------------

    def _make_view_change(self, new_view: int) -> tuple[M.ViewChange, bytes]:
        prepared = tuple(p for s, (v, _d, p) in sorted(self.prepared_proofs.items())
                         if s > self.stable_seq and v < new_view)
        vc = M.ViewChange(new_view, self.stable_seq, self.stable_proof, prepared)
        return vc, self._sign(vc)

    def _start_view_change(self, new_view: int, out: list[Action], *, rejoin: bool = False) -> None:
        if not rejoin:
            if new_view <= self.view and not self.active:
                return
            if new_view < self.view:
                return
        self.view = new_view
        self.active = False
        self.vc_attempts += 1
        self.view_timer_on = False
        vc, raw = self._make_view_change(new_view)
        out.append(Persist("view", new_view.to_bytes(8, "big")))
        out.append(Send(None, raw))
        self.own_vc = raw
        self.own_vcs[new_view] = raw
        for v in sorted(self.own_vcs)[:-8]:
            del self.own_vcs[v]
        self.vcs.setdefault(new_view, {})[self.id] = (vc, raw)
        self._count("view_change_sent")
        out.append(SetTimer("view", self.cfg.view_timeout_ms << min(self.vc_attempts, 10)))
        self.view_timer_on = True
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
        if vc.new_view < self.view or (vc.new_view == self.view and self.active):
            self._count("old_view")
            if self.active and vc.new_view == self.view:
                self._help_lagging(env.sender, out)
            elif vc.new_view < self.view:
                # The peer is still collecting VIEW-CHANGEs for a view we already left behind: ours
                # may have been lost (or we restarted). Resend it, or a fresh one for that view (we
                # accept nothing below our current view anyway, so it promises nothing new).
                if self._may_help((env.sender, -vc.new_view - 1)):
                    raw = self.own_vcs.get(vc.new_view) or self._make_view_change(vc.new_view)[1]
                    out.append(Send(env.sender, raw))
            return
        if vc.new_view > self.view + 1000:
            self._count("future_view")
            return
        bucket = self.vcs.setdefault(vc.new_view, {})
        if env.sender in bucket:
            self._count("duplicate")
            return
        if not self._valid_view_change(env.sender, vc):
            self._count("bad_view_change")
            return
        bucket[env.sender] = (vc, env.raw)
        # Liveness rule: f+1 replicas want a higher view -> join the smallest such view.
        latest: dict[int, int] = {}
        for v, b in self.vcs.items():
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
        if self.primary(view) != self.id or view in self.new_view_sent or view != self.view or self.active:
            return
        bucket = self.vcs.get(view, {})
        if len(bucket) < 2 * self.f + 1 or self.id not in bucket:
            return
        chosen = sorted(bucket)[: 2 * self.f + 1]
        if self.id not in chosen:
            chosen = chosen[:-1] + [self.id]
        vcs = [bucket[s][0] for s in chosen]
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
        nv = M.NewView(view, tuple(bucket[s][1] for s in chosen), tuple(pps))
        raw = self._sign(nv)
        self.new_view_sent.add(view)
        self.last_new_view = (view, raw)
        out.append(Send(None, raw))
        self._count("new_view_sent")
        self._enter_view(view, min_s, max_s, [M.decode(p) for p in pps], vcs, out)

    def _on_new_view(self, env: M.Envelope, nv: M.NewView, out: list[Action]) -> None:
        if nv.view < self.view or (nv.view == self.view and self.active) or env.sender != self.primary(nv.view):
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
            if e is None or e.sender != env.sender or e.body.view != nv.view or not _digest_ok(e.body):
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
        self.last_new_view = (nv.view, env.raw)
        self._enter_view(nv.view, min_s, max_s, pps, list(vcs.values()), out)

    def _enter_view(self, view: int, min_s: int, max_s: int, pps: list[M.Envelope], vcs: list[M.ViewChange],
                    out: list[Action]) -> None:
        self.view = view
        self.active = True
        self.own_vc = None
        self._count("new_view")
        out.append(Persist("view", view.to_bytes(8, "big")))
        if self.view_timer_on:
            self.view_timer_on = False
            out.append(CancelTimer("view"))
        for v in [v for v in self.vcs if v <= view]:
            del self.vcs[v]
        # Drop uncommitted slots from older views; their requests are re-proposed if needed.
        for s in [s for s, sl in self.log.items() if sl.view < view and not sl.committed]:
            del self.log[s]
        for d in (self.prepares, self.commits):
            for k in [k for k in d if k[0] < view]:
                del d[k]
        self.proposed = set()
        if min_s > self.last_exec:
            # The new view starts above what we executed: fetch the certified checkpoint.
            for vc in vcs:
                if vc.stable_seq == min_s and vc.checkpoint_proof:
                    roots = self._valid_checkpoint_proof(min_s, vc.checkpoint_proof)
                    if roots is not None:
                        senders = tuple(sorted({M.decode(r).sender for r in vc.checkpoint_proof}))
                        self.state_target = (min_s, roots[0], roots[1], vc.checkpoint_proof, senders)
                        self._request_state(out)
                    break
        for e in pps:
            pp = e.body
            if pp.seq <= self.h:
                continue
            old = self.log.pop(pp.seq, None)
            if e.sender == self.id:
                self._vote(pp.seq, view, pp.digest, out)
                self.log[pp.seq] = _Slot(view, pp.digest, pp.tx_root, pp.batch, e.raw)
                for raw in pp.batch.txs:
                    h = self._auth(raw)
                    if h is not None:
                        self.proposed.add(h)
            else:
                self._accept_pre_prepare(e, pp, out)
            new = self.log.get(pp.seq)
            if old is not None and old.committed and new is not None and new.digest == old.digest:
                new.committed = True  # already committed in an earlier view: same batch, keep it
                new.commit_cert = old.commit_cert
        self.next_seq = max(max_s, self.last_exec) + 1
        for s in list(self.log):
            self._check_prepared(s, out)
        self._execute_ready(out)
        self._try_propose(out)
        self._arm_view_timer(out)

    _HANDLERS = {
        M.PrePrepare: _on_pre_prepare,
        M.Prepare: _on_prepare,
        M.Commit: _on_commit,
        M.Checkpoint: _on_checkpoint,
        M.ViewChange: _on_view_change,
        M.NewView: _on_new_view,
        M.StateRequest: _on_state_request,
        M.StateResponse: _on_state_response,
    }

    # -- introspection (tests) ---------------------------------------------------------------

    def memory_footprint(self) -> int:
        return (len(self.log) + len(self.prepares) + len(self.commits) + len(self.prepared_proofs)
                + len(self.checkpoints) + len(self.votes) + len(self.vcs))


def encode_prepared(seq: int, view: int, digest: bytes, proof: M.PreparedProof) -> bytes:
    """``seq u64 | view u64 | digest(32) | len u32 | PRE-PREPARE | count u16 | (len u32 | PREPARE)*``."""
    parts = [seq.to_bytes(8, "big"), view.to_bytes(8, "big"), digest,
             len(proof.pre_prepare).to_bytes(4, "big"), proof.pre_prepare, len(proof.prepares).to_bytes(2, "big")]
    for p in proof.prepares:
        parts += [len(p).to_bytes(4, "big"), p]
    return b"".join(parts)


def decode_prepared(data: bytes) -> Optional[tuple[int, int, bytes, M.PreparedProof]]:
    """Inverse of :func:`encode_prepared`; None for a malformed record."""
    try:
        seq, view, digest = int.from_bytes(data[:8], "big"), int.from_bytes(data[8:16], "big"), data[16:48]
        i = 48
        n = int.from_bytes(data[i:i + 4], "big")
        pp = data[i + 4:i + 4 + n]
        i += 4 + n
        k = int.from_bytes(data[i:i + 2], "big")
        i += 2
        prepares = []
        for _ in range(k):
            n = int.from_bytes(data[i:i + 4], "big")
            prepares.append(data[i + 4:i + 4 + n])
            i += 4 + n
        if len(digest) != 32 or len(pp) == 0 or i != len(data) or any(len(p) == 0 for p in prepares):
            return None
        return seq, view, digest, M.PreparedProof(pp, tuple(prepares))
    except (IndexError, ValueError):
        return None


def restored_prepared(meta: Iterable[tuple[str, bytes]]) -> dict[int, tuple[int, bytes, M.PreparedProof]]:
    """Parse persisted ``prep/<slot>`` entries (prepared certificates) by sequence number."""
    out: dict[int, tuple[int, bytes, M.PreparedProof]] = {}
    for k, v in meta:
        if k.startswith("prep/"):
            rec = decode_prepared(bytes(v))
            if rec is None:
                raise ValueError(f"consensus log entry {k!r} is malformed")
            if rec[0] not in out or rec[1] > out[rec[0]][0]:
                out[rec[0]] = (rec[1], rec[2], rec[3])
    return out


def restored_votes(meta: Iterable[tuple[str, bytes]]) -> tuple[int, dict[int, tuple[int, bytes]]]:
    """Parse persisted ``view`` / ``vote/<slot>`` entries back into (view, votes by seq)."""
    view = 0
    votes: dict[int, tuple[int, bytes]] = {}
    for k, v in meta:
        if k == "view" and len(v) == 8:
            view = int.from_bytes(v, "big")
        elif k.startswith("vote/") and len(v) == 48:
            votes[int.from_bytes(v[:8], "big")] = (int.from_bytes(v[8:16], "big"), v[16:])
    return view, votes
