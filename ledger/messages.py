"""PBFT wire messages (Castro & Liskov 1999, section 4) with Ed25519 replica signatures.

Paper link: B-FDL section 3.4 orders every round record with PBFT; this module is the wire
format of that ordering protocol.

Frame layout (all integers big-endian)::

    b"PB" | version u8 | type u8 | sender u16 | body ... | signature (64 bytes)

The signature is Ed25519 by replica ``sender`` over every byte before it. Client REQUEST frames
use ``sender = CLIENT_SENDER`` and an all-zero signature: each transaction inside carries its own
client signature (checked by every replica, see :mod:`ledger.pbft`).

Messages that embed other signed messages (VIEW-CHANGE carries checkpoint and prepared
certificates, NEW-VIEW carries VIEW-CHANGEs and PRE-PREPAREs, STATE-RESPONSE carries a checkpoint
certificate) embed them as raw frames, so each inner signature is verified against its original
bytes.

:func:`decode` is strict: it checks every length against the remaining buffer and the limits
below, rejects trailing bytes, unknown types and versions, and raises only
:class:`MessageDecodeError` on any malformed input (fuzzed with Hypothesis in
``tests/test_ledger_pbft_messages.py``).

Deviation from the letter of PBFT (documented in docs/ledger.md): the batch digest is
``H("pbft-batch" | tx_root | timestamp_ms | proposal_view)`` where ``tx_root`` is the RFC 6962
Merkle root of the batch's transaction hashes; the block header's timestamp, view and proposer are
taken from the batch, so every replica builds byte-identical blocks even when a batch is
re-proposed in a later view. COMMIT messages carry ``tx_root`` too, and CHECKPOINT messages carry
the block hash and contract state root at the checkpoint height, so cross-replica agreement on
the Merkle roots is checked by consensus itself. Client replies are per batch (one signed REPLY
per block, with the tx root) instead of per request; a client combines f+1 matching replies with
an inclusion proof for its transaction.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any, Protocol, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.errors import MessageDecodeError

MAGIC = b"PB"
VERSION = 1
SIG_LEN = 64
HEADER_LEN = 6
CLIENT_SENDER = 0xFFFF
ZERO_SIG = bytes(SIG_LEN)

# Limits (bytes / counts). A frame larger than MAX_FRAME is rejected before parsing.
MAX_FRAME = 64 * 1024 * 1024
MAX_TX_BYTES = 256 * 1024
MAX_BATCH_TXS = 8192
MAX_CERT_MSGS = 256
MAX_SNAPSHOT_BYTES = 60 * 1024 * 1024
MAX_NESTED_FRAME = 32 * 1024 * 1024


class Signer(Protocol):
    def public_key(self) -> bytes: ...

    def sign(self, msg: bytes) -> bytes: ...


def sha256(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def batch_digest(tx_root: bytes, timestamp_ms: int, proposal_view: int) -> bytes:
    return sha256(b"pbft-batch" + tx_root + struct.pack(">QQ", timestamp_ms, proposal_view))


# ---------------------------------------------------------------------------------------------
# Message bodies


@dataclass(frozen=True)
class Batch:
    """An ordered batch of encoded client transactions, as proposed by a primary."""

    timestamp_ms: int
    proposal_view: int
    txs: tuple[bytes, ...]


@dataclass(frozen=True)
class Request:
    TYPE = 1
    txs: tuple[bytes, ...]


@dataclass(frozen=True)
class PrePrepare:
    TYPE = 2
    view: int
    seq: int
    digest: bytes
    tx_root: bytes
    batch: Batch


@dataclass(frozen=True)
class Prepare:
    TYPE = 3
    view: int
    seq: int
    digest: bytes


@dataclass(frozen=True)
class Commit:
    TYPE = 4
    view: int
    seq: int
    digest: bytes
    tx_root: bytes


@dataclass(frozen=True)
class Checkpoint:
    TYPE = 5
    seq: int
    block_hash: bytes
    state_root: bytes


@dataclass(frozen=True)
class PreparedProof:
    pre_prepare: bytes  # raw signed PRE-PREPARE frame
    prepares: tuple[bytes, ...]  # raw signed PREPARE frames (2f, from distinct backups)


@dataclass(frozen=True)
class ViewChange:
    TYPE = 6
    new_view: int
    stable_seq: int
    checkpoint_proof: tuple[bytes, ...]  # raw CHECKPOINT frames (2f+1) for stable_seq (empty at 0)
    prepared: tuple[PreparedProof, ...]


@dataclass(frozen=True)
class NewView:
    TYPE = 7
    view: int
    view_changes: tuple[bytes, ...]  # raw VIEW-CHANGE frames (2f+1)
    pre_prepares: tuple[bytes, ...]  # raw PRE-PREPARE frames for view, signed by the new primary


@dataclass(frozen=True)
class StateRequest:
    TYPE = 8
    seq: int  # the requester wants a stable checkpoint at least this high
    have_height: int


@dataclass(frozen=True)
class StateResponse:
    TYPE = 9
    seq: int
    checkpoint_proof: tuple[bytes, ...]
    snapshot: bytes


@dataclass(frozen=True)
class Reply:
    TYPE = 10
    view: int
    seq: int
    block_hash: bytes
    tx_root: bytes
    results_digest: bytes


Body = Union[Request, PrePrepare, Prepare, Commit, Checkpoint, ViewChange, NewView, StateRequest, StateResponse, Reply]
TYPES: dict[int, type] = {
    c.TYPE: c
    for c in (Request, PrePrepare, Prepare, Commit, Checkpoint, ViewChange, NewView, StateRequest, StateResponse, Reply)
}
NAMES = {1: "REQUEST", 2: "PRE-PREPARE", 3: "PREPARE", 4: "COMMIT", 5: "CHECKPOINT", 6: "VIEW-CHANGE",
         7: "NEW-VIEW", 8: "STATE-REQUEST", 9: "STATE-RESPONSE", 10: "REPLY"}


@dataclass(frozen=True)
class Envelope:
    """A decoded frame: who signed it, the body, the signed bytes and the signature."""

    sender: int
    body: Any
    signed: bytes = field(repr=False)
    sig: bytes = field(repr=False)

    @property
    def raw(self) -> bytes:
        return self.signed + self.sig


# ---------------------------------------------------------------------------------------------
# Encoding

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def _vb(b: bytes) -> bytes:
    return _U32.pack(len(b)) + b


def _vlist(items: tuple[bytes, ...]) -> bytes:
    return _U32.pack(len(items)) + b"".join(_U32.pack(len(x)) + x for x in items)


def _encode_body(body: Any) -> bytes:
    t = type(body)
    if t is Request:
        return _vlist(body.txs)
    if t is PrePrepare:
        b = body.batch
        return (_U64.pack(body.view) + _U64.pack(body.seq) + body.digest + body.tx_root
                + _U64.pack(b.timestamp_ms) + _U64.pack(b.proposal_view) + _vlist(b.txs))
    if t is Prepare:
        return _U64.pack(body.view) + _U64.pack(body.seq) + body.digest
    if t is Commit:
        return _U64.pack(body.view) + _U64.pack(body.seq) + body.digest + body.tx_root
    if t is Checkpoint:
        return _U64.pack(body.seq) + body.block_hash + body.state_root
    if t is ViewChange:
        out = [_U64.pack(body.new_view), _U64.pack(body.stable_seq), _vlist(body.checkpoint_proof),
               _U32.pack(len(body.prepared))]
        for p in body.prepared:
            out.append(_vb(p.pre_prepare))
            out.append(_vlist(p.prepares))
        return b"".join(out)
    if t is NewView:
        return _U64.pack(body.view) + _vlist(body.view_changes) + _vlist(body.pre_prepares)
    if t is StateRequest:
        return _U64.pack(body.seq) + _U64.pack(body.have_height)
    if t is StateResponse:
        return _U64.pack(body.seq) + _vlist(body.checkpoint_proof) + _vb(body.snapshot)
    if t is Reply:
        return _U64.pack(body.view) + _U64.pack(body.seq) + body.block_hash + body.tx_root + body.results_digest
    raise TypeError(f"not a message body: {t!r}")


def encode(body: Any, sender: int, signer: Signer | None) -> bytes:
    """Encode and sign ``body``. ``signer`` is None only for client REQUEST frames."""
    head = MAGIC + _U8.pack(VERSION) + _U8.pack(body.TYPE) + _U16.pack(sender)
    signed = head + _encode_body(body)
    if signer is None:
        if not isinstance(body, Request):
            raise ValueError("only REQUEST frames may be unsigned")
        return signed + ZERO_SIG
    sig = signer.sign(signed)
    if len(sig) != SIG_LEN:
        raise ValueError("signer returned a signature of the wrong length")
    return signed + sig


# ---------------------------------------------------------------------------------------------
# Decoding


class _Reader:
    __slots__ = ("b", "i", "end")

    def __init__(self, b: bytes, start: int, end: int) -> None:
        self.b, self.i, self.end = b, start, end

    def take(self, n: int) -> bytes:
        j = self.i + n
        if n < 0 or j > self.end:
            raise MessageDecodeError("truncated frame")
        out = self.b[self.i:j]
        self.i = j
        return out

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def u64(self) -> int:
        return _U64.unpack(self.take(8))[0]

    def h32(self) -> bytes:
        return self.take(32)

    def vb(self, limit: int) -> bytes:
        n = self.u32()
        if n > limit:
            raise MessageDecodeError(f"field of {n} bytes exceeds the limit {limit}")
        return self.take(n)

    def vlist(self, max_items: int, max_item: int) -> tuple[bytes, ...]:
        k = self.u32()
        if k > max_items:
            raise MessageDecodeError(f"list of {k} items exceeds the limit {max_items}")
        return tuple(self.vb(max_item) for _ in range(k))

    def done(self) -> None:
        if self.i != self.end:
            raise MessageDecodeError(f"{self.end - self.i} trailing bytes")


def _decode_body(t: int, r: _Reader) -> Any:
    if t == 1:
        txs = r.vlist(MAX_BATCH_TXS, MAX_TX_BYTES)
        return Request(txs)
    if t == 2:
        view, seq, digest, root, ts, pv = r.u64(), r.u64(), r.h32(), r.h32(), r.u64(), r.u64()
        txs = r.vlist(MAX_BATCH_TXS, MAX_TX_BYTES)
        return PrePrepare(view, seq, digest, root, Batch(ts, pv, txs))
    if t == 3:
        return Prepare(r.u64(), r.u64(), r.h32())
    if t == 4:
        return Commit(r.u64(), r.u64(), r.h32(), r.h32())
    if t == 5:
        return Checkpoint(r.u64(), r.h32(), r.h32())
    if t == 6:
        nv, ss = r.u64(), r.u64()
        cp = r.vlist(MAX_CERT_MSGS, 4096)
        k = r.u32()
        if k > MAX_BATCH_TXS:
            raise MessageDecodeError("too many prepared certificates")
        prepared = tuple(PreparedProof(r.vb(MAX_NESTED_FRAME), r.vlist(MAX_CERT_MSGS, 4096)) for _ in range(k))
        return ViewChange(nv, ss, cp, prepared)
    if t == 7:
        v = r.u64()
        return NewView(v, r.vlist(MAX_CERT_MSGS, MAX_NESTED_FRAME), r.vlist(MAX_BATCH_TXS, MAX_NESTED_FRAME))
    if t == 8:
        return StateRequest(r.u64(), r.u64())
    if t == 9:
        seq = r.u64()
        return StateResponse(seq, r.vlist(MAX_CERT_MSGS, 4096), r.vb(MAX_SNAPSHOT_BYTES))
    if t == 10:
        return Reply(r.u64(), r.u64(), r.h32(), r.h32(), r.h32())
    raise MessageDecodeError(f"unknown message type {t}")


def decode(raw: Any, *, max_size: int = MAX_FRAME) -> Envelope:
    """Parse a frame. Raises :class:`MessageDecodeError` (only) on malformed input.

    The signature is NOT checked here: call :meth:`KeyRing.verify_envelope`.
    """
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise MessageDecodeError("frame is not bytes")
    raw = bytes(raw)
    n = len(raw)
    if n > max_size:
        raise MessageDecodeError(f"frame of {n} bytes exceeds the limit {max_size}")
    if n < HEADER_LEN + SIG_LEN:
        raise MessageDecodeError("frame too short")
    if raw[:2] != MAGIC:
        raise MessageDecodeError("bad magic")
    if raw[2] != VERSION:
        raise MessageDecodeError(f"unsupported version {raw[2]}")
    t = raw[3]
    sender = _U16.unpack_from(raw, 4)[0]
    end = n - SIG_LEN
    r = _Reader(raw, HEADER_LEN, end)
    try:
        body = _decode_body(t, r)
    except struct.error as e:  # pragma: no cover - guarded by take()
        raise MessageDecodeError(f"bad integer field: {e}") from None
    r.done()
    if t != 1 and sender == CLIENT_SENDER:
        raise MessageDecodeError("replica message with the client sender id")
    return Envelope(sender, body, raw[:end], raw[end:])


class KeyRing:
    """Replica public keys by replica id, with parsed-key and verified-signature caches."""

    def __init__(self, pubkeys: list[bytes]) -> None:
        self.pubkeys = list(pubkeys)
        self._keys = [Ed25519PublicKey.from_public_bytes(p) for p in pubkeys]
        self._ok: dict[bytes, bool] = {}
        self.verifications = 0

    @property
    def n(self) -> int:
        return len(self.pubkeys)

    def verify_envelope(self, env: Envelope) -> bool:
        if not (0 <= env.sender < len(self._keys)):
            return False
        # Cache by (signature, full frame hash): a replayed identical frame is not re-verified.
        key = sha256(env.signed) + env.sig
        hit = self._ok.get(key)
        if hit is not None:
            return hit
        self.verifications += 1
        try:
            self._keys[env.sender].verify(env.sig, env.signed)
            ok = True
        except InvalidSignature:
            ok = False
        if len(self._ok) > 200_000:
            self._ok.clear()
        self._ok[key] = ok
        return ok

    def decode_verified(self, raw: bytes, expect: type | None = None) -> Envelope | None:
        """Decode a nested frame and check its signature; None if anything is wrong."""
        try:
            env = decode(raw)
        except MessageDecodeError:
            return None
        if expect is not None and type(env.body) is not expect:
            return None
        if not self.verify_envelope(env):
            return None
        return env


def type_name(body: Any) -> str:
    return NAMES.get(getattr(body, "TYPE", 0), type(body).__name__)


__all__ = [
    "Batch", "Request", "PrePrepare", "Prepare", "Commit", "Checkpoint", "PreparedProof", "ViewChange",
    "NewView", "StateRequest", "StateResponse", "Reply", "Envelope", "KeyRing", "MessageDecodeError",
    "encode", "decode", "batch_digest", "sha256", "CLIENT_SENDER", "MAX_FRAME", "Signer", "type_name",
]
