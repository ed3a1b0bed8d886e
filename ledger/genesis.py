"""Chain configuration fixed at block 0 (paper 3.4: a permissioned consortium chain).

The genesis names the administrators (and how many of them must agree on a registry change), the
privacy-budget cap, the chain id, pre-registered institutions and the PBFT replica set whose
signatures certify every block (:mod:`ledger.certificate`). Its hash is part of the contract
state, so replicas configured differently have different chains from block 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ledger import crypto
from ledger.tx import DEFAULT_CHAIN_ID
from ledger.txkinds import ROLES

__all__ = ["Genesis"]


@dataclass(frozen=True)
class Genesis:
    """Chain configuration fixed at block 0.

    ``admins``: hex Ed25519 public keys of the administrators; ``admin_quorum``: number of distinct
    admins needed for a registry change; ``epsilon_cap``: privacy budget cap (``None`` = none);
    ``institutions``: optional pre-registered ``(role, name, pubkey_hex)`` triples; ``replicas``:
    hex Ed25519 public keys of the PBFT replicas in replica-id order (``replicas[i]`` signs replica
    ``i``'s votes): the set every block's commit certificate is checked against
    (:func:`ledger.verify.verify_chain`). Empty only for chains from before commit certificates;
    it is then left out of ``to_dict`` so those chains keep their genesis hash.
    """

    admins: tuple[str, ...]
    epsilon_cap: float | None = None
    chain_id: str = DEFAULT_CHAIN_ID
    admin_quorum: int = 1
    institutions: tuple[tuple[str, str, str], ...] = field(default_factory=tuple)
    replicas: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "admins", tuple(self.admins))
        object.__setattr__(self, "replicas", tuple(self.replicas))
        for r in self.replicas:
            if not crypto.is_hex(r, 32):
                raise ValueError(f"replica key {r!r} is not 64 lowercase hex characters")
        if len(set(self.replicas)) != len(self.replicas):
            raise ValueError("duplicate replica key in genesis")
        object.__setattr__(self, "institutions", tuple(tuple(x) for x in self.institutions))
        if not self.admins:
            raise ValueError("genesis needs at least one admin public key")
        for a in self.admins:
            if not crypto.is_hex(a, 32):
                raise ValueError(f"admin key {a!r} is not 64 lowercase hex characters")
        if len(set(self.admins)) != len(self.admins):
            raise ValueError("duplicate admin key in genesis")
        if not isinstance(self.admin_quorum, int) or not 1 <= self.admin_quorum <= len(self.admins):
            raise ValueError(f"admin_quorum must be in 1..{len(self.admins)}")
        if self.epsilon_cap is not None:
            if isinstance(self.epsilon_cap, bool) or not isinstance(self.epsilon_cap, (int, float)):
                raise ValueError("epsilon_cap must be a number or None")
            if not math.isfinite(self.epsilon_cap) or self.epsilon_cap <= 0:
                raise ValueError("epsilon_cap must be finite and > 0 (None for no cap)")
            object.__setattr__(self, "epsilon_cap", float(self.epsilon_cap))
        seen = set(self.admins)
        for inst in self.institutions:
            if len(inst) != 3 or inst[0] not in ROLES or not isinstance(inst[1], str):
                raise ValueError(f"genesis institution {inst!r} must be (role, name, pubkey)")
            if not crypto.is_hex(inst[2], 32) or inst[2] in seen:
                raise ValueError(f"genesis institution key {inst[2]!r} invalid or duplicate")
            seen.add(inst[2])

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "admins": list(self.admins),
            "epsilon_cap": self.epsilon_cap,
            "chain_id": self.chain_id,
            "admin_quorum": self.admin_quorum,
            "institutions": [list(x) for x in self.institutions],
        }
        if self.replicas:
            d["replicas"] = list(self.replicas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Genesis":
        return cls(
            admins=tuple(d["admins"]),
            epsilon_cap=d.get("epsilon_cap"),
            chain_id=d.get("chain_id", DEFAULT_CHAIN_ID),
            admin_quorum=int(d.get("admin_quorum", 1)),
            institutions=tuple(tuple(x) for x in d.get("institutions", ())),
            replicas=tuple(d.get("replicas", ())),
        )

    def hash(self) -> bytes:
        return crypto.sha256(b"bfdl-genesis-v1\x00" + crypto.canonical_json(self.to_dict()))
