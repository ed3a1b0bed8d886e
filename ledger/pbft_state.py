"""The PBFT replica's typed state, actions and durable records (Castro & Liskov, OSDI 1999).

Paper link: B-FDL section 3.4 (PBFT consensus among the consortium's nodes). :mod:`ledger.pbft`
documents the protocol; this module holds what a :class:`ledger.pbft.Replica` remembers, grouped
by protocol part (each a dataclass, every field commented, records as named tuples):

* :class:`Log` — the normal case (section 4.2): accepted PRE-PREPAREs, PREPARE/COMMIT votes,
  prepared certificates, our persisted votes, execution progress;
* :class:`Checkpoints` — checkpoints and garbage collection (4.3) and state transfer (5.3);
* :class:`ViewChanges` — view changes (4.4), NEW-VIEW and equivocation evidence;
* :class:`Requests` — authenticated client requests waiting to be ordered;
* :class:`Ticks` — retransmission (messages may be lost).

It also defines the replica's outputs (:data:`Action`: :class:`Send`, :class:`Persist`,
:class:`SetTimer`, :class:`CancelTimer`, :class:`Committed`), its configuration, the :class:`App`
it executes batches on, the :class:`ReplicaCore` base the protocol phases share, and the encoding
of the records a replica persists (votes and prepared certificates).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple, Optional, Protocol, Union

from ledger import messages as M

__all__ = [
    "CLIENT", "Action", "App", "CancelTimer", "CheckpointVote", "Checkpoints", "CommitVote", "Committed", "Config",
    "Equivocation", "ExecResult", "Forward", "Log", "NewViewRecord", "Persist", "PrepareVote", "PreparedRecord",
    "ReceivedViewChange", "ReplicaCore", "Requests", "Roots", "Send", "SetTimer", "Slot", "StateTarget", "Ticks",
    "ViewChanges", "ViewSeq", "Vote", "decode_prepared", "digest_ok", "encode_prepared", "restored_prepared",
    "restored_votes",
]

CLIENT = -1  # Send.to value: the client(s)


# ---------------------------------------------------------------------------------------------
# Actions (the replica's outputs, performed in order by the caller)


@dataclass(frozen=True)
class Send:
    to: Optional[int]  # replica id, None = all other replicas, CLIENT = the client(s)
    raw: bytes  # a signed frame (ledger.messages)


@dataclass(frozen=True)
class Persist:
    key: str  # "view", "vote/<slot>" or "prep/<slot>"
    value: Optional[bytes]  # None deletes; durable before any later Send is performed


@dataclass(frozen=True)
class SetTimer:
    name: str  # "view", "tick" or "state"; re-arming replaces the running timer of that name
    delay_ms: int


@dataclass(frozen=True)
class CancelTimer:
    name: str


@dataclass(frozen=True)
class Committed:
    seq: int  # = block height
    view: int  # view of the COMMIT votes
    digest: bytes  # batch digest
    tx_root: bytes  # RFC 6962 Merkle root of the batch
    block_hash: bytes  # hash of the block the App built
    state_root: bytes  # contract state root after the block
    n_txs: int


Action = Union[Send, Persist, SetTimer, CancelTimer, Committed]


@dataclass(frozen=True)
class ExecResult:
    block_hash: bytes
    state_root: bytes
    results_digest: bytes  # digest of the per-transaction results (carried in REPLY)


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
    n: int  # replicas (3f + 1)
    checkpoint_interval: int = 10  # K: a checkpoint every K sequence numbers
    window: int = 0  # L: sequence numbers accepted above the low watermark; 0 -> 2K
    batch_size: int = 64  # max transactions per PRE-PREPARE
    max_inflight: int = 2  # batches proposed but not yet executed
    view_timeout_ms: int = 500  # view-change timer (doubles per unsuccessful view change)
    state_timeout_ms: int = 200  # wait before fetching a certified checkpoint we lag behind

    @property
    def f(self) -> int:
        return (self.n - 1) // 3

    @property
    def L(self) -> int:
        return self.window or 2 * self.checkpoint_interval


# ---------------------------------------------------------------------------------------------
# Records (immutable, typed)


class ViewSeq(NamedTuple):
    view: int
    seq: int


class Vote(NamedTuple):
    """Our vote at a sequence number (persisted: a restarted replica never votes otherwise)."""

    view: int
    digest: bytes


class PrepareVote(NamedTuple):
    digest: bytes
    raw: bytes  # the signed PREPARE frame (part of a prepared certificate)


class CommitVote(NamedTuple):
    digest: bytes
    tx_root: bytes
    raw: bytes  # the signed COMMIT frame (part of the block's commit certificate)


class PreparedRecord(NamedTuple):
    view: int
    digest: bytes
    proof: M.PreparedProof  # PRE-PREPARE + 2f matching PREPAREs


class CheckpointVote(NamedTuple):
    block_hash: bytes
    state_root: bytes
    raw: bytes  # the signed CHECKPOINT frame (part of a stable-checkpoint certificate)


class Roots(NamedTuple):
    block_hash: bytes
    state_root: bytes


class StateTarget(NamedTuple):
    """A certified checkpoint above our executed height, to fetch by state transfer."""

    seq: int
    block_hash: bytes
    state_root: bytes
    proof: tuple[bytes, ...]  # 2f+1 CHECKPOINT frames
    senders: tuple[int, ...]  # who signed them (asked for the state)


class Equivocation(NamedTuple):
    view: int
    seq: int
    primary: int  # the primary that signed two PRE-PREPAREs for (view, seq)


class Forward(NamedTuple):
    view: int
    seq: int
    peer: int  # the peer our PRE-PREPARE was forwarded to (once)


class ReceivedViewChange(NamedTuple):
    body: M.ViewChange
    raw: bytes


class NewViewRecord(NamedTuple):
    view: int
    raw: bytes  # the NEW-VIEW frame that justifies the view


# ---------------------------------------------------------------------------------------------
# The replica's state, by protocol part


@dataclass
class Slot:
    """Per-sequence-number log entry for the currently accepted pre-prepare."""

    view: int  # view of the PRE-PREPARE
    digest: bytes  # batch digest
    tx_root: bytes  # Merkle root of the batch's transactions
    batch: M.Batch
    pp_raw: bytes  # the signed PRE-PREPARE frame (retransmitted, forwarded)
    prepared: bool = False  # 2f matching PREPAREs seen
    committed: bool = False  # 2f+1 matching COMMITs seen (committed-local)
    sent_commit: bool = False  # our COMMIT was sent
    my_prepare: Optional[bytes] = None  # our PREPARE frame (retransmitted)
    my_commit: Optional[bytes] = None  # our COMMIT frame (retransmitted)
    commit_cert: tuple[bytes, ...] = ()  # the 2f+1 matching COMMIT frames it committed on


@dataclass
class Log:
    """Normal-case state (Castro-Liskov 4.2)."""

    last_exec: int  # highest executed sequence number (= block height)
    next_seq: int  # next sequence number this replica assigns as primary
    slots: dict[int, Slot] = field(default_factory=dict)  # seq -> accepted PRE-PREPARE
    prepares: dict[ViewSeq, dict[int, PrepareVote]] = field(default_factory=dict)  # -> sender -> vote
    commits: dict[ViewSeq, dict[int, CommitVote]] = field(default_factory=dict)  # -> sender -> vote
    prepared: dict[int, PreparedRecord] = field(default_factory=dict)  # seq -> our prepared certificate
    votes: dict[int, Vote] = field(default_factory=dict)  # seq -> our persisted vote (restart safety)
    executed: dict[int, bytes] = field(default_factory=dict)  # seq -> digest executed (above stable)
    forwarded: set[Forward] = field(default_factory=set)  # PRE-PREPAREs forwarded to prove equivocation
    damaged: list[int] = field(default_factory=list)  # restored certificates that fail their checks


@dataclass
class Checkpoints:
    """Checkpoints, garbage collection (4.3) and state transfer (5.3)."""

    h: int  # low watermark: last stable checkpoint (or the executed height on restart)
    stable_seq: int = 0  # last checkpoint with a 2f+1 certificate we hold
    stable_proof: tuple[bytes, ...] = ()  # that certificate (CHECKPOINT frames)
    votes: dict[int, dict[int, CheckpointVote]] = field(default_factory=dict)  # seq -> sender -> vote
    own: dict[int, Roots] = field(default_factory=dict)  # seq -> our roots at checkpoint seq
    target: Optional[StateTarget] = None  # a certified checkpoint above our height to fetch


@dataclass
class ViewChanges:
    """View changes (4.4)."""

    active: bool = True  # False between sending VIEW-CHANGE and entering the new view
    received: dict[int, dict[int, ReceivedViewChange]] = field(default_factory=dict)  # view -> sender -> VC
    new_view_sent: set[int] = field(default_factory=set)  # views we sent NEW-VIEW for (as primary)
    attempts: int = 0  # consecutive unsuccessful view changes (the timeout doubles each)
    timer_on: bool = False  # the "view" timer is armed
    own: Optional[bytes] = None  # our VIEW-CHANGE of the view change in progress (retransmitted)
    own_by_view: dict[int, bytes] = field(default_factory=dict)  # our recent VIEW-CHANGEs, for lagging peers
    last_new_view: Optional[NewViewRecord] = None  # the NEW-VIEW that justifies our view
    helped: dict[tuple[int, int], int] = field(default_factory=dict)  # (peer, view key) -> last time helped
    equivocations: list[Equivocation] = field(default_factory=list)  # provably equivocating primaries


@dataclass
class Requests:
    """Client requests (authenticated transactions) waiting to be ordered."""

    pending: "OrderedDict[bytes, bytes]" = field(default_factory=OrderedDict)  # tx hash -> raw tx
    proposed: set[bytes] = field(default_factory=set)  # tx hashes in a PRE-PREPARE of this view
    verified: dict[bytes, bytes] = field(default_factory=dict)  # raw tx -> tx hash (authenticated once)
    proposing: bool = False  # re-entrancy guard of the propose loop (n = 1 executes while proposing)


@dataclass
class Ticks:
    """Retransmission timer."""

    on: bool = False  # the "tick" timer is armed
    exec_seen: int = -1  # executed height at the last tick (no progress since -> ask the others)


def digest_ok(pp: M.PrePrepare) -> bool:
    return pp.digest == M.batch_digest(pp.tx_root, pp.batch.timestamp_ms, pp.batch.proposal_view)


class ReplicaCore:
    """What every protocol phase of :class:`ledger.pbft.Replica` shares: identity, configuration,
    the state parts and small helpers. The phases (:mod:`ledger.pbft_normal`,
    :mod:`ledger.pbft_checkpoint`, :mod:`ledger.pbft_viewchange`) are mixins over this class; the
    methods one phase calls in another are declared here."""

    id: int  # this replica's id (0..n-1)
    cfg: Config
    n: int
    f: int
    keys: M.KeyRing  # replica public keys (signature checks with a verified-signature cache)
    signer: M.Signer  # this replica's signing key
    app: App
    view: int  # current view (its primary is view mod n)
    now: int  # time of the current input (ms, from the caller: the replica reads no clock)
    stats: dict[str, int]  # counters of dropped / notable events
    log: Log
    ckpt: Checkpoints
    vc: ViewChanges
    req: Requests
    ticks: Ticks

    def primary(self, view: Optional[int] = None) -> int:
        return (self.view if view is None else view) % self.n

    @property
    def is_primary(self) -> bool:
        return self.primary() == self.id

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    def _sign(self, body: Any) -> bytes:
        return M.encode(body, self.id, self.signer)

    def _in_window(self, seq: int) -> bool:
        return self.ckpt.h < seq <= self.ckpt.h + self.cfg.L

    def _view_timeout(self) -> int:
        return self.cfg.view_timeout_ms << min(self.vc.attempts, 10)

    # -- implemented by the phases ------------------------------------------------------------
    def _auth(self, raw: bytes) -> Optional[bytes]:
        raise NotImplementedError

    def _vote(self, seq: int, view: int, digest: bytes, out: list[Action]) -> bool:
        raise NotImplementedError

    def _accept_pre_prepare(self, env: M.Envelope, pp: M.PrePrepare, out: list[Action]) -> bool:
        raise NotImplementedError

    def _check_prepared(self, seq: int, out: list[Action]) -> None:
        raise NotImplementedError

    def _execute_ready(self, out: list[Action]) -> None:
        raise NotImplementedError

    def _try_propose(self, out: list[Action]) -> None:
        raise NotImplementedError

    def _arm_view_timer(self, out: list[Action]) -> None:
        raise NotImplementedError

    def _send_checkpoint(self, seq: int, block_hash: bytes, state_root: bytes, out: list[Action]) -> None:
        raise NotImplementedError

    def _make_stable(self, seq: int, proof: tuple[bytes, ...], out: list[Action]) -> None:
        raise NotImplementedError

    def _request_state(self, out: list[Action]) -> None:
        raise NotImplementedError

    def _valid_checkpoint_proof(self, seq: int, proof: tuple[bytes, ...]) -> Optional[Roots]:
        raise NotImplementedError

    def _start_view_change(self, new_view: int, out: list[Action], *, rejoin: bool = False) -> None:
        raise NotImplementedError

    def _help_lagging(self, peer: int, out: list[Action]) -> None:
        raise NotImplementedError

    def _proof_pre_prepare(self, proof: M.PreparedProof) -> Optional[M.PrePrepare]:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# Durable records (``prep/<slot>`` and ``vote/<slot>`` in the replica's metadata)


def encode_prepared(seq: int, view: int, digest: bytes, proof: M.PreparedProof) -> bytes:
    """``seq u64 | view u64 | digest(32) | len u32 | PRE-PREPARE | count u16 | (len u32 | PREPARE)*``."""
    parts = [seq.to_bytes(8, "big"), view.to_bytes(8, "big"), digest,
             len(proof.pre_prepare).to_bytes(4, "big"), proof.pre_prepare, len(proof.prepares).to_bytes(2, "big")]
    for p in proof.prepares:
        parts += [len(p).to_bytes(4, "big"), p]
    return b"".join(parts)


def decode_prepared(data: bytes) -> Optional[tuple[int, PreparedRecord]]:
    """Inverse of :func:`encode_prepared`: ``(seq, record)``; None for a malformed record."""
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
        return seq, PreparedRecord(view, digest, M.PreparedProof(pp, tuple(prepares)))
    except (IndexError, ValueError):
        return None


def restored_prepared(meta: Iterable[tuple[str, bytes]]) -> dict[int, PreparedRecord]:
    """Parse persisted ``prep/<slot>`` entries (prepared certificates) by sequence number."""
    out: dict[int, PreparedRecord] = {}
    for k, v in meta:
        if k.startswith("prep/"):
            rec = decode_prepared(bytes(v))
            if rec is None:
                raise ValueError(f"consensus log entry {k!r} is malformed")
            seq, prep = rec
            if seq not in out or prep.view > out[seq].view:
                out[seq] = prep
    return out


def restored_votes(meta: Iterable[tuple[str, bytes]]) -> tuple[int, dict[int, Vote]]:
    """Parse persisted ``view`` / ``vote/<slot>`` entries back into (view, votes by seq)."""
    view = 0
    votes: dict[int, Vote] = {}
    for k, v in meta:
        if k == "view" and len(v) == 8:
            view = int.from_bytes(v, "big")
        elif k.startswith("vote/") and len(v) == 48:
            votes[int.from_bytes(v[:8], "big")] = Vote(int.from_bytes(v[8:16], "big"), v[16:])
    return view, votes
