"""``LocalCluster``: an n-replica PBFT ledger embedded in the calling process.

Paper link: B-FDL section 3.4 — the consortium chain that records every federated round. This is
what the B-FDL round hook uses by default: n replicas (n = 3f+1), each with its own sqlite
database (``<data_dir>/replica_<i>.sqlite``, WAL, synchronous=FULL), running the full protocol of
:mod:`ledger.pbft` (every replica verifies every client signature and every replica message) over
the deterministic in-process network of :mod:`ledger.sim` with faults off. Calls are synchronous:
``submit_many`` broadcasts the transactions, drives the network until every transaction is in a
block certified by f+1 matching replies, and returns one :class:`ledger.client.Receipt` each.

``transport="threads"`` runs each replica in its own thread of this process on a real clock
(:mod:`ledger.threadnet`: signature checks and fsyncs of different replicas overlap on the
machine's cores); ``transport="tcp"`` starts the replicas as separate ``bfdl ledger node``
processes on loopback ports (:mod:`ledger.tcp`).

Replica keys (issue 17.2): replica ``i`` signs with the key in ``<keys_dir>/replica-<i>.key``
(created 0600 in a 0700 directory if missing, never derived from a seed; see
:mod:`ledger.replica_keys`). :func:`replica_public_keys` creates/loads them before the cluster
starts so that the genesis can list the replica set (``Genesis.replicas``); a cluster whose keys
do not match a genesis that lists replicas refuses to start. Every block is stored with its commit
certificate. Reopening ``data_dir`` with the same ``keys_dir`` resumes the same chain; every
replica re-checks its database on open and refuses a corrupted one. ``keys_dir=None`` is only for
a chain kept in memory (``data_dir=None``): fresh random keys that die with the process.
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Optional

from ledger import crypto, pbft
from ledger.client import LedgerError, Receipt, receipt_from_block
from ledger.contracts import Genesis
from ledger.errors import KeyFileError
from ledger.node import MemoryChain, StoreChain
from ledger.sim import SimCluster
from ledger.replica_keys import load_or_create_replica_keys, replica_public_keys
from ledger.storage import LedgerStore
from ledger.tx import Transaction

__all__ = ["LocalCluster", "replica_public_keys", "cluster_keys"]


def cluster_keys(n: int, *, genesis: Genesis, keys_dir: str | os.PathLike | None,
                 data_dir: str | os.PathLike | None) -> list[crypto.SigningKey]:
    """The signing keys of replicas ``0..n-1``: from ``keys_dir`` (created if missing), or fresh
    random keys for a chain kept in memory. Raises :class:`KeyFileError` if they do not match
    ``genesis.replicas`` (when the genesis lists replicas)."""
    if keys_dir is None:
        if data_dir is not None:
            raise KeyFileError(f"{data_dir}: a ledger kept on disk needs a keys_dir for its replica keys")
        keys = [crypto.SigningKey.generate() for _ in range(n)]
    else:
        keys = load_or_create_replica_keys(keys_dir, n)
    if genesis.replicas and tuple(k.key_id() for k in keys) != genesis.replicas:
        where = keys_dir if keys_dir is not None else "<memory>"
        raise KeyFileError(f"{where}: the {n} replica keys do not match the {len(genesis.replicas)} replicas "
                           "listed in the genesis")
    return keys


def _locked(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(self: "LocalCluster", *a: Any, **kw: Any) -> Any:
        with self._lock:
            return fn(self, *a, **kw)

    return wrapper


class LocalCluster:
    """See the module docstring. Thread-safe: every public method holds one lock (the B-FDL hook
    submits from a worker thread)."""

    def __init__(self, n: int = 4, *, data_dir: str | os.PathLike | None, genesis: Genesis,
                 keys_dir: str | os.PathLike | None, seed: int = 0, batch_size: int = 64,
                 transport: str = "inproc", checkpoint_interval: int = 10, sync: str = "FULL", max_inflight: int = 2,
                 timeout_ms: float = 60_000.0) -> None:
        """``seed`` only seeds the in-process network's scheduler (never a key)."""
        if n < 1:
            raise LedgerError(f"a ledger needs at least one replica (got {n})")
        if transport not in ("inproc", "threads", "tcp"):
            raise LedgerError(f"unknown ledger transport {transport!r} (inproc, threads or tcp)")
        self.n = n
        self.genesis = genesis
        self.transport = transport
        self.timeout_ms = timeout_ms
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.cfg = pbft.Config(n=n, checkpoint_interval=checkpoint_interval, batch_size=batch_size,
                               max_inflight=max_inflight)
        self._closed = False
        self._lock = threading.RLock()
        self._impl: Any
        if transport == "tcp":
            from ledger.tcp import TcpCluster

            if self.data_dir is None or keys_dir is None:
                raise LedgerError("transport='tcp' needs a data_dir and a keys_dir")
            cluster_keys(n, genesis=genesis, keys_dir=keys_dir, data_dir=data_dir)  # create / check them
            self._impl = TcpCluster(n, data_dir=self.data_dir, genesis=genesis, keys_dir=keys_dir, cfg=self.cfg,
                                    sync=sync)
            return
        keys = cluster_keys(n, genesis=genesis, keys_dir=keys_dir, data_dir=data_dir)

        def chain(i: int) -> Any:
            if self.data_dir is None:
                return MemoryChain()
            return StoreChain(LedgerStore(self.data_dir / f"replica_{i}.sqlite", genesis=genesis, sync=sync))

        chains = []
        try:
            for i in range(n):
                chains.append(chain(i))
            if transport == "threads":
                from ledger.threadnet import ThreadCluster

                self._impl = ThreadCluster(n, genesis=genesis, seed=seed, cfg=self.cfg, chains=chains, keys=keys)
                return
            self._impl = SimCluster(n, genesis=genesis, seed=seed, cfg=self.cfg, chains=chains, keys=keys)
        except BaseException:
            for c in chains:
                c.close()
            raise
        self._impl.record_commits = False

    # -- API ---------------------------------------------------------------------------------------

    @property
    def f(self) -> int:
        return self.cfg.f

    def db_paths(self) -> list[Path]:
        if self.data_dir is None:
            return []
        return [self.data_dir / f"replica_{i}.sqlite" for i in range(self.n)]

    def submit(self, tx: Transaction) -> Receipt:
        return self.submit_many([tx])[0]

    @_locked
    def submit_many(self, txs: Iterable[Transaction]) -> list[Receipt]:
        self._check_open()
        txs = list(txs)
        if not txs:
            return []
        if self.transport in ("tcp", "threads"):
            return self._impl.submit_many(txs, timeout_s=self.timeout_ms / 1000.0)
        sim: SimCluster = self._impl
        hashes = sim.submit(txs)
        if not sim.run_until_committed(hashes, max_ms=self.timeout_ms):
            missing = sum(1 for h in hashes if sim.located(h) is None)
            raise LedgerError(f"{missing} of {len(hashes)} transactions not committed within "
                              f"{self.timeout_ms:.0f} ms (virtual) — heights {sim.heights()}")
        out = []
        blocks: dict[int, Any] = {}
        for h in hashes:
            height, index, block_hash = sim.located(h)  # type: ignore[misc]
            if height not in blocks:
                blocks[height] = self._honest_block(height, block_hash)
            out.append(receipt_from_block(blocks[height], index))
        top = max(blocks)
        sim.client.forget_below(top - 2 * self.cfg.L)
        return out

    def _honest_block(self, height: int, block_hash: bytes) -> Any:
        sim: SimCluster = self._impl
        for i in sim.honest():
            node = sim.nodes[i]
            if node is not None and node.app.block_hash(height) == block_hash:
                return node.app.block(height)
        raise LedgerError(f"no replica holds the certified block {height}")

    @_locked
    def query(self, path: str) -> Any:
        """State at ``path`` as reported by f+1 replicas at the same height."""
        self._check_open()
        if self.transport == "tcp":
            return self._impl.query(path)
        import json

        sim: Any = self._impl
        if self.transport == "threads":
            sim.wait_until(lambda: len(set(sim.heights())) == 1, self.timeout_ms / 1000.0)
            honest = list(range(self.n))
        else:
            sim.net.run(until=lambda: len(set(sim.heights())) == 1, max_ms=self.timeout_ms)
            honest = sim.honest()
        votes: dict[str, int] = {}
        values: dict[str, Any] = {}
        for i in honest:
            node = sim.nodes[i]
            if node is None or not node.alive:
                continue
            v = node.app.contracts.query(path)
            key = json.dumps([node.app.height(), v], sort_keys=True, default=str)
            votes[key] = votes.get(key, 0) + 1
            values[key] = v
            if votes[key] >= self.f + 1:
                return v
        raise LedgerError(f"no f+1 replicas agree on {path!r}")

    @_locked
    def heads(self) -> list[tuple[int, str]]:
        self._check_open()
        if self.transport == "threads":
            self._impl.wait_until(lambda: len(set(self._impl.heights())) == 1, self.timeout_ms / 1000.0)
        return self._impl.heads()

    def bytes_on_chain(self) -> int:
        """Size of replica 0's database (sqlite main file + WAL)."""
        paths = self.db_paths()
        if not paths:
            return 0
        total = 0
        for suffix in ("", "-wal"):
            p = Path(str(paths[0]) + suffix)
            if p.exists():
                total += p.stat().st_size
        return total

    def _check_open(self) -> None:
        if self._closed:
            raise LedgerError("the ledger cluster is closed")

    @_locked
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.transport in ("tcp", "threads"):
            self._impl.close()
            return
        for c in self._impl.chains:
            c.close()

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def sim(self) -> Optional[SimCluster]:
        return self._impl if self.transport == "inproc" else None
