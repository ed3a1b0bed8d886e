"""Where a run's secure-aggregation identities come from (issue 18.1; paper 3.1 and 3.5).

A :class:`Keyring` gives the round driver, per hospital, the Ed25519 identity signer and the
long-term X25519 kx key (hospital side), the roster every party checks messages against, and the
run id bound into every protocol message (with the B-FDL ledger: the chain id, which the
``secagg.transcript`` contract checks). Protocol ids are ``1..K`` in sorted hospital-name order
(:func:`protocol_ids`), stable across rounds.

* :class:`EphemeralKeyring`: fresh in-memory keys for one process (runs without a ledger, tests,
  benchmarks). Nobody outside the process can check them; say so in results.

``noise_rng(hospital, round)``: the generator of the hospital's distributed DP noise (client-level
DP under masking, :mod:`bfdl_tff.federated.masked`), derived from a secret the server does not
hold (ledger keyring: the hospital's kx private key, HKDF with its own label) so that it cannot
regenerate and subtract the noise, and deterministic per (hospital, round) so that a resumed run
repeats the interrupted one. An ephemeral keyring derives it from ``noise_seed`` (the run's public
``dp_noise`` seed, as TFF's central DP noise in this simulation is) or from fresh randomness.
* ``bfdl_tff.integration.secagg.LedgerKeyring``: the institutions' keystore keys, the roster read
  from the ledger's registry (identity keys and the kx keys registered with ``secagg.register_kx``).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from bfdl_tff.secagg.errors import UnknownParticipantError
from bfdl_tff.secagg.keys import Ed25519Signer, KxKey, Signer
from bfdl_tff.secagg.params import Participant


def protocol_ids(hospitals: Sequence[str]) -> dict[str, int]:
    """Hospital name -> protocol id (the Shamir x-coordinate): ``1..K`` in sorted name order."""
    names = sorted(set(hospitals))
    if len(names) != len(list(hospitals)):
        raise UnknownParticipantError(f"hospital names must be distinct: {list(hospitals)}")
    return {n: i for i, n in enumerate(names, start=1)}


@runtime_checkable
class Keyring(Protocol):
    """The identities of one run (see the module docstring)."""

    @property
    def run_id(self) -> str: ...

    def roster(self, hospitals: Sequence[str]) -> dict[int, Participant]: ...

    def signer(self, hospital: str) -> Signer: ...

    def kx_key(self, hospital: str) -> KxKey: ...

    def noise_rng(self, hospital: str, round_num: int) -> np.random.Generator: ...

    def describe(self) -> str: ...


def derived_rng(secret: bytes, *, hospital: str, round_num: int) -> np.random.Generator:
    """A numpy generator seeded by SHA-256(label, secret, hospital, round) (256 bits)."""
    h = hashlib.sha256(b"bfdl-secagg-dp-noise-v1\0" + secret + b"\0" + hospital.encode() + b"\0"
                       + str(int(round_num)).encode()).digest()
    return np.random.default_rng(np.frombuffer(h, dtype=np.uint32).tolist())


class EphemeralKeyring:
    """In-memory identities for one process: an Ed25519 signer and an X25519 key per hospital."""

    def __init__(self, hospitals: Sequence[str], *, run_id: str | None = None, noise_seed: int | None = None) -> None:
        self._ids = protocol_ids(hospitals)
        self._run_id = run_id or f"ephemeral-{secrets.token_hex(8)}"
        self._noise_secret = (f"seed:{int(noise_seed)}".encode() if noise_seed is not None else secrets.token_bytes(32))
        self._signers: dict[str, Signer] = {h: Ed25519Signer() for h in self._ids}
        self._kx: dict[str, KxKey] = {h: KxKey.generate() for h in self._ids}

    @property
    def run_id(self) -> str:
        return self._run_id

    def _known(self, hospital: str) -> str:
        if hospital not in self._ids:
            raise UnknownParticipantError(f"hospital {hospital!r} has no secure-aggregation keys in this keyring")
        return hospital

    def roster(self, hospitals: Sequence[str]) -> dict[int, Participant]:
        return roster_from(self._ids, {h: (self._signers[self._known(h)].public_key(), self._kx[h].public_bytes())
                                       for h in hospitals})

    def signer(self, hospital: str) -> Signer:
        return self._signers[self._known(hospital)]

    def kx_key(self, hospital: str) -> KxKey:
        return self._kx[self._known(hospital)]

    def noise_rng(self, hospital: str, round_num: int) -> np.random.Generator:
        return derived_rng(self._noise_secret, hospital=self._known(hospital), round_num=round_num)

    def describe(self) -> str:
        return "ephemeral in-memory keys (not registered anywhere)"


def roster_from(ids: Mapping[str, int], keys: Mapping[str, tuple[bytes, bytes]]) -> dict[int, Participant]:
    """The roster of ``keys`` (hospital -> (identity public key, kx public key)) by protocol id."""
    return {ids[h]: Participant(id=ids[h], name=h, sign_public=sign, kx_public=kx) for h, (sign, kx) in keys.items()}


__all__ = ["EphemeralKeyring", "Keyring", "derived_rng", "protocol_ids", "roster_from"]
