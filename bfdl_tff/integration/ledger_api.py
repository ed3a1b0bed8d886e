"""The files of a run's ledger and the few typed helpers the hook and the audit share (paper 3.4).

:class:`LedgerFiles` owns the layout of ``RunDir.ledger_dir`` (nothing else spells these paths):

==========================  =================================================================
``genesis.json``            the chain's genesis: admin keys, privacy cap, chain id
``replicas/``               one database per replica (``replica_<i>.sqlite``), written by
                            :class:`ledger.cluster.LocalCluster`
``offchain/``               content-addressed checkpoints (:class:`ledger.offchain.OffchainStore`)
``registry.json``           institution names, roles and public keys, for humans (the authority
                            is the on-chain registry)
``openings/``               hospital-private commitment openings (0700 / 0600)
``outbox/``                 every round's signed transactions, persisted before submission
                            (:mod:`bfdl_tff.integration.outbox`; 0700 / 0600)
``ledger_summary.json``     per-round ledger cost; its chain-derived keys are checked by
                            ``bfdl audit verify``, its measured keys are marked unverified
==========================  =================================================================

Everything else is the typed :mod:`ledger` API, called directly (``ledger.cluster.LocalCluster``,
``ledger.tx.sign_tx``, ``ledger.contracts.Genesis``, ``ledger.verify.verify_chain``).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from ledger.cluster import LocalCluster
from ledger.contracts import Genesis
from ledger.offchain import OffchainStore

from bfdl_tff.io_utils import atomic_write_json
from bfdl_tff.runs import RunDir

_REPLICA_DB = re.compile(r"^replica_(\d+)\.sqlite$")


@dataclass(frozen=True)
class LedgerFiles:
    """The layout of one run's ``ledger/`` directory (see the module docstring)."""

    root: Path

    @classmethod
    def of(cls, run: RunDir) -> "LedgerFiles":
        return cls(run.ledger_dir)

    @property
    def genesis_file(self) -> Path:
        return self.root / "genesis.json"

    @property
    def replicas_dir(self) -> Path:
        return self.root / "replicas"

    @property
    def offchain_dir(self) -> Path:
        return self.root / "offchain"

    @property
    def registry_file(self) -> Path:
        return self.root / "registry.json"

    @property
    def openings_dir(self) -> Path:
        return self.root / "openings"

    @property
    def outbox_dir(self) -> Path:
        return self.root / "outbox"

    @property
    def summary_file(self) -> Path:
        return self.root / "ledger_summary.json"

    def replica_dbs(self) -> list[Path]:
        """Replica databases in replica order (``replica_<i>.sqlite``)."""
        if not self.replicas_dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.replicas_dir.iterdir() if (m := _REPLICA_DB.match(p.name))]
        return [p for _, p in sorted(found)]

    def offchain(self) -> OffchainStore:
        return OffchainStore(self.offchain_dir)

    def load_genesis(self) -> Genesis:
        """The recorded genesis (raises ``OSError`` / ``ValueError`` / ``KeyError`` if unreadable)."""
        return Genesis.from_dict(json.loads(self.genesis_file.read_text(encoding="utf-8")))

    def write_genesis(self, genesis: Genesis) -> None:
        atomic_write_json(self.genesis_file, genesis.to_dict())


def new_chain_id(run_name: str) -> str:
    """A fresh chain id for a run: ``bfdl-<run name>-<8 random hex>`` (at most 64 characters).

    The random part keeps two runs of the same name (in different directories) on different
    chains, and so under different replica key directories in the keystore."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", f"bfdl-{run_name}")[:55]
    return f"{stem}-{secrets.token_hex(4)}"


def registered_keys(cluster: LocalCluster) -> set[str]:
    """Hex public keys currently registered (and not revoked) on the chain."""
    reg = cluster.query("institutions") or {}
    return {pk for pk, entry in reg.items() if entry["active"]}


def closed_rounds(cluster: LocalCluster) -> set[int]:
    """Rounds the contract has closed (a resumed run does not record them again)."""
    return {int(r) for r in (cluster.query("rounds") or []) if cluster.query(f"rounds/{r}/status") == "closed"}


def dir_bytes(path: Path) -> int:
    """Total size of the files under ``path`` (0 if it does not exist)."""
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


__all__ = ["LedgerFiles", "closed_rounds", "dir_bytes", "new_chain_id", "registered_keys"]
