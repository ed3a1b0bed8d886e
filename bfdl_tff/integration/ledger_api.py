"""The integration's single point of contact with the :mod:`ledger` package.

Everything the round hook and the auditor need from the ledger (genesis, the in-process PBFT
cluster, the off-chain store, chain verification, contract queries) goes through these small
functions, so an API change in ``ledger`` is absorbed here.

Layout of ``<run_dir>/ledger/``: ``genesis.json`` (the chain's genesis: admin keys, privacy
cap, chain id), ``replicas/`` (one database per replica, written by
:class:`ledger.cluster.LocalCluster`), ``offchain/`` (content-addressed checkpoints),
``registry.json`` (institution names, roles and public keys, for humans; the authority is the
on-chain registry), ``openings/`` (hospital-private commitment openings),
``ledger_summary.json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

from bfdl_tff.io_utils import atomic_write_json


def chain_id_for(run_name: str) -> str:
    cid = re.sub(r"[^A-Za-z0-9._-]", "-", f"bfdl-{run_name}")[:64]
    return cid


def replicas_dir(ledger_dir: Path) -> Path:
    return Path(ledger_dir) / "replicas"


def replica_keys_dir(keystore: Any, chain_id: str) -> Path:
    """Replica signing keys (``replica-<i>.key``, 0600): ``<keystore>/ledger/<chain_id>/`` for a
    local keystore, else under ``$BFDL_KEYSTORE`` (default ``~/.local/share/bfdl-tff/keystore``).
    Interim (H-ledger): issue 17.4's keystore layout is H-integration's."""
    import os

    root = getattr(keystore, "path", None)
    if root is None:
        root = Path(os.environ.get("BFDL_KEYSTORE", "~/.local/share/bfdl-tff/keystore")).expanduser()
    return Path(root) / "ledger" / chain_id


def replica_public_keys(keys_dir: Path, n: int) -> tuple[str, ...]:
    """Create/load the replica keys and return their hex public keys (``Genesis.replicas``)."""
    from ledger.cluster import replica_public_keys as _pubs

    return _pubs(keys_dir, n)


def sign_tx(signer: Any, kind: str, payload: dict[str, Any], *, chain_id: str) -> Any:
    from ledger.tx import sign_tx as _sign

    return _sign(signer, kind, payload, chain_id=chain_id)


# --------------------------------------------------------------------------- genesis
def make_genesis(*, admin_pubkeys: Sequence[bytes], epsilon_cap: float, chain_id: str,
                 replicas: Sequence[str] = ()) -> Any:
    from ledger.contracts import Genesis

    return Genesis(
        admins=tuple(bytes(p).hex() for p in admin_pubkeys),
        epsilon_cap=float(epsilon_cap) if epsilon_cap and epsilon_cap > 0 else None,
        chain_id=chain_id,
        replicas=tuple(replicas),
    )


def genesis_to_dict(genesis: Any) -> dict[str, Any]:
    return genesis.to_dict()


def genesis_from_dict(d: dict[str, Any]) -> Any:
    from ledger.contracts import Genesis

    return Genesis.from_dict(d)


def load_genesis(ledger_dir: Path) -> Any:
    p = Path(ledger_dir) / "genesis.json"
    return genesis_from_dict(json.loads(p.read_text(encoding="utf-8")))


def load_or_create_genesis(
    ledger_dir: Path, *, admin_pubkeys: Sequence[bytes], epsilon_cap: float, chain_id: str,
    replicas: Sequence[str] = (),
) -> Any:
    p = Path(ledger_dir) / "genesis.json"
    if p.exists():
        return load_genesis(ledger_dir)
    g = make_genesis(admin_pubkeys=admin_pubkeys, epsilon_cap=epsilon_cap, chain_id=chain_id, replicas=replicas)
    atomic_write_json(p, genesis_to_dict(g))
    return g


# --------------------------------------------------------------------------- cluster / stores
def open_cluster(
    ledger_dir: Path, *, genesis: Any, replicas: int, transport: str, batch_size: int, seed: int, keys_dir: Path,
    **kw: Any
) -> Any:
    from ledger.cluster import LocalCluster

    return LocalCluster(
        replicas,
        data_dir=replicas_dir(ledger_dir),
        genesis=genesis,
        keys_dir=keys_dir,
        seed=seed,
        batch_size=batch_size,
        transport=transport,
        **kw,
    )


def open_offchain(ledger_dir: Path) -> Any:
    from ledger.offchain import OffchainStore

    return OffchainStore(Path(ledger_dir) / "offchain")


def registered_keys(cluster: Any) -> set[str]:
    """Hex public keys currently registered (and not revoked) on the chain."""
    reg = cluster.query("institutions") or {}
    return {pk for pk, entry in reg.items() if entry.get("active")}


def round_recorded(cluster: Any, round_num: int, committed: set[int] | None = None) -> bool:
    """True if the contract already closed ``round_num`` (resume after a crash)."""
    st = cluster.query(f"rounds/{round_num}/status")
    return st == "closed"


def dir_bytes(path: Path) -> int:
    path = Path(path)
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bytes_on_chain(ledger_dir: Path) -> int:
    """Bytes on disk of replica 0's database (main file + WAL; all replicas hold the same chain)."""
    p = replicas_dir(ledger_dir) / "replica_0.sqlite"
    return sum(q.stat().st_size for q in (p, Path(str(p) + "-wal")) if q.exists())


def replica_db_paths(ledger_dir: Path) -> list[Path]:
    """Replica databases in replica order (``replica_<i>.sqlite``)."""
    rd = replicas_dir(ledger_dir)
    if not rd.exists():
        return []
    paths = list(rd.glob("replica_*.sqlite"))
    return sorted(paths, key=lambda p: int(p.stem.split("_")[1]) if p.stem.split("_")[1].isdigit() else 1 << 30)
