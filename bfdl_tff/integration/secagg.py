"""Secure aggregation on the B-FDL ledger (issue 18.1; paper 3.1 and 3.5: "secure aggregation was
also performed during the aggregation process").

* Keys: each hospital has an X25519 key-agreement (kx) key next to its Ed25519 identity key, in
  the local kx store under the keystore directory (``<keystore>/kx/``, with the vault backend
  too: transit has no X25519, see ``docs/secagg.md``). :func:`register_kx_keys` registers each
  hospital's kx public key on the chain with ``secagg.register_kx``, signed by the hospital's
  identity key (once; on resume the chain's key must be the keystore's).
* Roster: :func:`roster_from_chain` builds the protocol roster (protocol id -> identity key, kx
  key) from the chain's registry, after registration; :class:`LedgerKeyring` hands it, the
  keystore signers and kx keys, and the chain id (the protocol's run id, checked by the
  ``secagg.transcript`` contract) to the training side (:class:`bfdl_tff.secagg.keyring.Keyring`).
* Transcripts: the round hook commits each round's transcript with ``secagg.transcript``
  (:mod:`bfdl_tff.integration.round_txs`); the audit re-checks them
  (:func:`bfdl_tff.integration.audit.checks.check_secagg`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
from ledger.cluster import LocalCluster

from bfdl_tff.errors import BfdlError
from bfdl_tff.keys import Signer
from bfdl_tff.secagg.errors import UnknownParticipantError
from bfdl_tff.secagg.keyring import derived_rng, protocol_ids, roster_from
from bfdl_tff.secagg.keys import KxKey, KxKeyStore
from bfdl_tff.secagg.params import Participant

REGISTER_KX_KIND = "secagg.register_kx"
TRANSCRIPT_KIND = "secagg.transcript"


class SecAggLedgerError(BfdlError):
    """A kx key cannot be registered, or the chain's kx key differs from the keystore's."""


def register_kx_keys(cluster: LocalCluster, *, sign: Any, signers: Mapping[str, Signer], kx_store: KxKeyStore,
                     key_names: Sequence[str], create: bool) -> dict[str, str]:
    """Load (or, with ``create``, create) each hospital's kx key and register the ones the chain
    lacks with ``secagg.register_kx`` signed by the hospital (``sign(key name, kind, payload)``);
    waited for. Returns key name -> kx public key (hex). A kx key on the chain that differs from
    the keystore's (a resumed run with another keystore) is an error."""
    out: dict[str, str] = {}
    txs = []
    for kname in key_names:
        key = kx_store.load_or_create(kname) if create else kx_store.load(kname)
        pub = key.public_bytes().hex()
        onchain = cluster.query(f"kx/{signers[kname].public_key().hex()}")
        if onchain is None:
            txs.append(sign(kname, REGISTER_KX_KIND, {"kx_pubkey": pub}))
        elif onchain["kx_pubkey"] != pub:
            raise SecAggLedgerError(
                f"{kx_store.path}: {kname}'s key-agreement key differs from the one registered on the chain at "
                f"height {onchain['height']} (a resumed run needs the keystore it started with)")
        out[kname] = pub
    for tx, r in zip(txs, cluster.submit_many(txs)):
        if not r.ok:
            raise SecAggLedgerError(f"registering the key-agreement key of {tx.sender[:16]} was refused: "
                                    f"{r.code} {r.message}")
    return out


def roster_from_chain(cluster: LocalCluster, *, hospitals: Sequence[str], identity_keys: Mapping[str, str]
                      ) -> dict[int, Participant]:
    """The protocol roster read from the chain: ``identity_keys`` maps each hospital (runner name)
    to its identity key (hex); the key must be an active hospital and have a registered kx key."""
    keys: dict[str, tuple[bytes, bytes]] = {}
    for h in hospitals:
        ident = identity_keys[h]
        inst = cluster.query(f"institutions/{ident}")
        kx = cluster.query(f"kx/{ident}")
        if not inst or not inst.get("active") or inst.get("role") != "hospital" or kx is None:
            raise SecAggLedgerError(f"hospital {h} ({ident[:16]}) is not an active hospital with a registered "
                                    "key-agreement key on the chain")
        keys[h] = (bytes.fromhex(ident), bytes.fromhex(kx["kx_pubkey"]))
    return roster_from(protocol_ids(hospitals), keys)


@dataclass(frozen=True)
class SecAggIdentities:
    """What the round hook learned at start: the run id (chain id), the roster from the chain,
    the hospitals' signers and key names."""

    run_id: str
    hospitals: tuple[str, ...]
    roster: Mapping[int, Participant]
    signers: Mapping[str, Signer]  # runner name -> identity signer
    key_names: Mapping[str, str]  # runner name -> key name
    kx_store: KxKeyStore
    where: str  # where the keys live (for messages and results)


class _HasIdentities(Protocol):
    secagg_identities: SecAggIdentities | None


class LedgerKeyring:
    """:class:`bfdl_tff.secagg.keyring.Keyring` backed by a started ledger hook (keystore keys,
    roster from the chain); used by the runner after the hook's ``on_start``."""

    def __init__(self, hook: _HasIdentities) -> None:
        self._hook = hook
        self._kx: dict[str, KxKey] = {}

    def _ids(self) -> SecAggIdentities:
        ids = self._hook.secagg_identities
        if ids is None:
            raise SecAggLedgerError("the ledger hook has not registered secure-aggregation keys "
                                    "(not started, or privacy.secure_aggregation is not masked)")
        return ids

    @property
    def run_id(self) -> str:
        return self._ids().run_id

    def roster(self, hospitals: Sequence[str]) -> dict[int, Participant]:
        ids = self._ids()
        pid = protocol_ids(ids.hospitals)
        unknown = [h for h in hospitals if h not in pid]
        if unknown:
            raise UnknownParticipantError(f"hospitals {unknown} were not registered for secure aggregation")
        return {pid[h]: ids.roster[pid[h]] for h in hospitals}

    def signer(self, hospital: str) -> Signer:
        return self._ids().signers[hospital]

    def kx_key(self, hospital: str) -> KxKey:
        if hospital not in self._kx:
            ids = self._ids()
            self._kx[hospital] = ids.kx_store.load(ids.key_names[hospital])
        return self._kx[hospital]

    def noise_rng(self, hospital: str, round_num: int) -> np.random.Generator:
        """Derived from the hospital's kx private key (a secret the server never holds)."""
        secret = hashlib.sha256(b"bfdl-dp-noise-key-v1\0" + self.kx_key(hospital).private_bytes()).digest()
        return derived_rng(secret + self.run_id.encode(), hospital=hospital, round_num=round_num)

    def describe(self) -> str:
        return self._ids().where


__all__ = ["LedgerKeyring", "REGISTER_KX_KIND", "SecAggIdentities", "SecAggLedgerError", "TRANSCRIPT_KIND",
           "register_kx_keys", "roster_from_chain"]
