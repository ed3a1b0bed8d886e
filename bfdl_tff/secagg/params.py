"""Round parameters, the roster, and the SecAgg+ neighbour graph.

Bonawitz et al. (CCS 2017) use the complete graph: every hospital masks with every other and
Shamir-shares its secrets to all of them. SecAgg+ (Bell et al., CCS 2020, section 3) replaces it
with a sparse k-regular graph: masks and shares only between neighbours, cost O(k) instead of
O(K) per hospital. Here the graph is a Harary graph H(k, K) on a cycle whose order is a public,
deterministic permutation of the hospital ids derived by SHA-256 from (run, round, ids, k): every
party and the auditor recompute the same graph, and it changes every round.

Shares of a hospital's secrets go to its *holders*: its neighbours plus itself (it reveals its own
share of its self-mask seed when it survives), so ``threshold <= degree + 1``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Mapping

from bfdl_tff.secagg.keys import KEY_BYTES

PROTOCOL_VERSION = "bfdl-secagg/1"


@dataclass(frozen=True, kw_only=True)
class Participant:
    """A hospital on the roster: protocol id (>= 1, the Shamir x-coordinate), name and keys.

    ``sign_public``: Ed25519 identity key; ``kx_public``: long-term X25519 key (both registered
    on the ledger in wave 2)."""

    id: int
    name: str
    sign_public: bytes
    kx_public: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.id, int) or isinstance(self.id, bool) or not 1 <= self.id < 2**31:
            raise ValueError(f"participant id must be an integer in [1, 2^31), got {self.id!r}")
        for what, key in (("sign_public", self.sign_public), ("kx_public", self.kx_public)):
            if not isinstance(key, bytes) or len(key) != KEY_BYTES:
                raise ValueError(f"participant {self.id}: {what} must be {KEY_BYTES} raw bytes")


def default_threshold(holders: int) -> int:
    """``floor(n/2) + 1`` of the share holders: a majority (Bonawitz et al. recommend t > n/2)."""
    return holders // 2 + 1


@dataclass(frozen=True, kw_only=True)
class RoundParams:
    """Everything the parties must agree on for one round; its digest is bound into every signature.

    ``neighbours``: ``None`` = SecAgg (complete graph); an integer k = SecAgg+ with a k-regular
    graph (k even, or K even; ``k = K - 1`` is the complete graph)."""

    run_id: str
    round: int
    participants: tuple[int, ...]
    threshold: int
    bits: int
    vector_length: int
    neighbours: int | None = None
    consistency_check: bool = True

    def __post_init__(self) -> None:
        ids = self.participants
        if not isinstance(self.run_id, str) or not self.run_id:
            raise ValueError("run_id must be a non-empty string")
        if not isinstance(self.round, int) or self.round < 0:
            raise ValueError(f"round must be a non-negative integer, got {self.round!r}")
        if tuple(sorted(set(ids))) != tuple(ids) or len(ids) < 2:
            raise ValueError("participants must be at least two distinct ids in increasing order")
        if not isinstance(self.vector_length, int) or self.vector_length < 1:
            raise ValueError(f"vector_length must be a positive integer, got {self.vector_length!r}")
        if not isinstance(self.bits, int) or not 8 <= self.bits <= 64:
            raise ValueError(f"bits must be an integer in [8, 64], got {self.bits!r}")
        k = self.degree
        if not 2 <= k <= len(ids) - 1 or (k < len(ids) - 1 and (k * len(ids)) % 2):
            raise ValueError(f"no {k}-regular graph on {len(ids)} hospitals (need 2 <= k <= K-1, k*K even)")
        if not isinstance(self.threshold, int) or not 2 <= self.threshold <= k + 1:
            raise ValueError(f"threshold must be in [2, {k + 1}] (degree + 1 share holders), got {self.threshold!r}")

    @property
    def degree(self) -> int:
        return len(self.participants) - 1 if self.neighbours is None else self.neighbours

    @property
    def protocol(self) -> str:
        return "secagg" if self.degree == len(self.participants) - 1 else "secagg+"

    def to_record(self) -> dict[str, object]:
        return {
            "version": PROTOCOL_VERSION,
            "run_id": self.run_id,
            "round": self.round,
            "participants": list(self.participants),
            "threshold": self.threshold,
            "bits": self.bits,
            "vector_length": self.vector_length,
            "neighbours": self.neighbours,
            "consistency_check": self.consistency_check,
        }

    @cached_property
    def digest(self) -> bytes:
        text = json.dumps(self.to_record(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).digest()

    @cached_property
    def graph(self) -> Mapping[int, frozenset[int]]:
        return neighbour_graph(self.participants, degree=self.degree, run_id=self.run_id, round_num=self.round)

    def neighbours_of(self, hospital: int) -> frozenset[int]:
        return self.graph[hospital]

    def holders_of(self, hospital: int) -> frozenset[int]:
        """Who holds shares of ``hospital``'s secrets: its neighbours and itself."""
        return self.graph[hospital] | {hospital}


def _order(ids: tuple[int, ...], *, degree: int, run_id: str, round_num: int) -> list[int]:
    def key(i: int) -> bytes:
        tag = json.dumps([PROTOCOL_VERSION, "graph", run_id, round_num, list(ids), degree, i])
        return hashlib.sha256(tag.encode("utf-8")).digest()

    return sorted(ids, key=key)


def neighbour_graph(
    ids: tuple[int, ...], *, degree: int, run_id: str, round_num: int
) -> dict[int, frozenset[int]]:
    """The k-regular Harary graph H(k, K) on a public pseudo-random cycle order of ``ids``.

    Each hospital is joined to the ``k // 2`` nearest on either side of the cycle and, for odd k
    (K even), to the opposite one. ``k = K - 1`` yields the complete graph."""
    n = len(ids)
    if degree >= n - 1:
        return {i: frozenset(ids) - {i} for i in ids}
    cycle = _order(ids, degree=degree, run_id=run_id, round_num=round_num)
    adj: dict[int, set[int]] = {i: set() for i in ids}
    for pos, node in enumerate(cycle):
        for step in range(1, degree // 2 + 1):
            peer = cycle[(pos + step) % n]
            adj[node].add(peer)
            adj[peer].add(node)
        if degree % 2:
            peer = cycle[(pos + n // 2) % n]
            adj[node].add(peer)
            adj[peer].add(node)
    return {i: frozenset(adj[i]) for i in ids}
