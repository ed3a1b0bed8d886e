"""Commit certificates: the 2f+1 signed COMMIT votes that committed a block (issue 17.2).

Paper link: B-FDL section 3.4 — PBFT "tolerates f faulty nodes out of 3f+1"; Castro & Liskov
(1999), section 4.2: a request is *committed-local* at a replica once it holds 2f+1 matching
COMMIT messages for its (view, sequence number, digest). Every replica stores, next to each block,
the COMMIT frames it executed that block on, so the chain carries its own proof of consensus: a
history rebuilt without the replica keys (a round dropped, a result changed, blocks reordered)
has no valid certificates and :func:`ledger.verify.verify_chain` names the first such block.

What a COMMIT signs is ``(view, seq, digest, tx_root)`` with ``digest = batch_digest(tx_root,
batch_timestamp_ms, proposal_view)`` (:mod:`ledger.messages`). A block header carries
``height = seq``, ``tx_root``, ``view = proposal_view`` and ``timestamp_ms = max(batch timestamp,
previous block's timestamp)``; the certificate adds the batch timestamp, so the digest is
recomputed from the header and every vote must match it. ``proposer`` must be
``view mod n``. The state root and results are then checked by re-execution.

Encoding (bytes, stored beside the block)::

    b"CC" | version u8 | batch_timestamp_ms u64 | count u16 | (length u16 | COMMIT frame)*

Checks (:func:`check_certificate`, strict: a stored certificate holds exactly the votes a replica
committed on, so any bad vote is tampering): every vote decodes as a COMMIT, its sender is a
replica id of the genesis (``0..n-1``), its Ed25519 signature verifies under ``genesis.replicas``,
no replica votes twice, all votes are for this block's sequence number, digest, tx root and one
view, and at least ``2f + 1`` distinct replicas voted (``f = (n - 1) // 3``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional, Sequence

from ledger import messages as M
from ledger.block import BlockHeader
from ledger.errors import BlockDecodeError

__all__ = ["CommitCertificate", "check_certificate", "keyring_of", "quorum"]

MAGIC = b"CC"
VERSION = 1
_HEAD = struct.Struct(">2sBQH")
_LEN = struct.Struct(">H")
MAX_VOTES = 1024


@dataclass(frozen=True)
class CommitCertificate:
    """The COMMIT votes one block was committed on."""

    batch_timestamp_ms: int  # the PRE-PREPARE's batch timestamp (an input of the signed digest)
    commits: tuple[bytes, ...]  # raw signed COMMIT frames, one per voting replica (sorted by id)

    def encode(self) -> bytes:
        parts = [_HEAD.pack(MAGIC, VERSION, self.batch_timestamp_ms, len(self.commits))]
        for c in self.commits:
            parts += [_LEN.pack(len(c)), c]
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> "CommitCertificate":
        """Strict decode; :class:`BlockDecodeError` on anything malformed."""
        data = bytes(data)
        if len(data) < _HEAD.size:
            raise BlockDecodeError("commit certificate: truncated")
        magic, version, ts, count = _HEAD.unpack_from(data)
        if magic != MAGIC or version != VERSION:
            raise BlockDecodeError("commit certificate: bad magic or version")
        if count > MAX_VOTES:
            raise BlockDecodeError(f"commit certificate: {count} votes exceed the limit {MAX_VOTES}")
        i, votes = _HEAD.size, []
        for _ in range(count):
            if i + 2 > len(data):
                raise BlockDecodeError("commit certificate: truncated")
            (k,) = _LEN.unpack_from(data, i)
            if i + 2 + k > len(data):
                raise BlockDecodeError("commit certificate: truncated")
            votes.append(data[i + 2:i + 2 + k])
            i += 2 + k
        if i != len(data):
            raise BlockDecodeError(f"commit certificate: {len(data) - i} trailing bytes")
        return cls(ts, tuple(votes))


def quorum(n: int) -> int:
    """Votes needed to commit with n replicas: 2f + 1, f = (n - 1) // 3."""
    return 2 * ((n - 1) // 3) + 1


def keyring_of(replicas: Sequence[str]) -> M.KeyRing:
    """A :class:`ledger.messages.KeyRing` over hex replica public keys (``Genesis.replicas``)."""
    return M.KeyRing([bytes.fromhex(r) for r in replicas])


def check_certificate(cert: CommitCertificate, h: BlockHeader, prev_timestamp_ms: int,
                      ring: M.KeyRing) -> Optional[str]:
    """None if ``cert`` proves that 2f+1 replicas of ``ring`` committed the batch of header ``h``
    (whose previous block has timestamp ``prev_timestamp_ms``), else the problem (one line)."""
    n = ring.n
    if h.proposer != h.view % n:
        return f"proposer {h.proposer} is not the primary of view {h.view}"
    if h.timestamp_ms != max(cert.batch_timestamp_ms, prev_timestamp_ms):
        return "header timestamp does not follow from the certified batch timestamp"
    digest = M.batch_digest(h.tx_root, cert.batch_timestamp_ms, h.view)
    voters: set[int] = set()
    views: set[int] = set()
    for k, raw in enumerate(cert.commits):
        try:
            env = M.decode(raw)
        except M.MessageDecodeError as e:
            return f"vote {k} does not decode ({e})"
        c = env.body
        if not isinstance(c, M.Commit):
            return f"vote {k} is a {M.type_name(c)}, not a COMMIT"
        if not 0 <= env.sender < n:
            return f"vote {k} is signed by sender {env.sender}, not a replica of the genesis (0..{n - 1})"
        if env.sender in voters:
            return f"replica {env.sender} votes twice"
        if not ring.verify_envelope(env):
            return f"vote of replica {env.sender} has an invalid signature"
        if c.seq != h.height or c.digest != digest or c.tx_root != h.tx_root:
            return f"vote of replica {env.sender} is for another batch or sequence number"
        voters.add(env.sender)
        views.add(c.view)
    if len(views) > 1:
        return f"votes from different views {sorted(views)}"
    if len(voters) < quorum(n):
        return f"{len(voters)} distinct replica signatures, {quorum(n)} needed (n = {n})"
    return None
