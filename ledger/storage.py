"""Durable block storage for a ledger replica (paper 3.4; issue 6 "Storage").

One sqlite database per replica, in WAL mode with ``synchronous=FULL`` (every commit is fsynced
before ``append_block`` / ``put_meta`` return), holding:

* ``blocks(height, hash, prev_hash, header, body)``: canonical header and body bytes;
* ``txs(height, idx, tx_hash, ok, code)``: transaction index (a replayed transaction may appear
  twice in the chain, rejected the second time, so the hash is indexed but not unique);
* ``certs(height, cert)``: each block's commit certificate (the 2f+1 signed COMMIT votes that
  committed it, :mod:`ledger.certificate`), written in the same sqlite transaction as the block;
* ``meta(key, value)``: consensus metadata.  The PBFT replica persists its votes here *before*
  sending them (``put_meta`` returns only after the fsync), so after a hard kill it neither
  forgets a vote nor casts a conflicting one.

Integrity on open (``verify="full"`` by default): ``PRAGMA quick_check`` (page-level damage, a
truncated file), then for every block in height order: contiguous heights from 0, the stored hash
equals the recomputed header hash, ``prev_hash`` links to the previous block, the body decodes
strictly and its Merkle root equals ``tx_root``, the result count matches, its commit certificate
(if stored) decodes, and (when ``genesis``
is given) block 0 is that genesis block.  Any failure raises :class:`StorageCorruptError` naming
the file, the first bad block and the problem: a corrupted database refuses to start.
A torn write inside sqlite's own WAL is rolled back by sqlite (only an uncommitted transaction
can be torn, and ``append_block`` returns only after commit), so no committed block is lost.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from .block import Block, BlockDecodeError, BlockHeader, genesis_block
from .certificate import CommitCertificate
from .contracts import TxResult
from .errors import StorageCorruptError, StorageError
from .tx import Transaction, TxDecodeError

__all__ = ["LedgerStore", "StorageCorruptError", "StorageError"]

SCHEMA_VERSION = "2"  # 2 added the certs table; a version-1 database is upgraded on open
_KNOWN_SCHEMAS = ("1", "2")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY,
    hash BLOB NOT NULL,
    prev_hash BLOB NOT NULL,
    header BLOB NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS txs (
    height INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    tx_hash BLOB NOT NULL,
    ok INTEGER NOT NULL,
    code TEXT NOT NULL,
    PRIMARY KEY (height, idx)
);
CREATE INDEX IF NOT EXISTS txs_by_hash ON txs(tx_hash);
CREATE TABLE IF NOT EXISTS certs (
    height INTEGER PRIMARY KEY,
    cert BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
"""


class LedgerStore:
    """A replica's block store.  Thread-safe (one lock around the connection).

    ``verify``: ``"full"`` (default: headers, linkage, bodies and Merkle roots), ``"headers"``
    (hashes and linkage only) or ``"none"``.  ``sync``: sqlite ``synchronous`` level, ``"FULL"``
    by default (durable); ``"OFF"`` exists only for throughput experiments and is never the
    default.  ``genesis``: if given, block 0 must be ``genesis_block(genesis)``.
    """

    def __init__(self, path: str | os.PathLike, *, verify: str = "full", sync: str = "FULL", genesis: Any = None) -> None:
        if verify not in ("full", "headers", "none"):
            raise ValueError("verify must be 'full', 'headers' or 'none'")
        if sync.upper() not in ("FULL", "NORMAL", "OFF", "EXTRA"):
            raise ValueError("sync must be FULL, EXTRA, NORMAL or OFF")
        self.path = str(path)
        self._lock = threading.RLock()
        self._closed = False
        memory = self.path == ":memory:"
        if not memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StorageCorruptError(self.path, None, f"cannot open: {exc}") from None
        try:
            if not memory:
                mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StorageCorruptError(self.path, None, f"cannot enable WAL (journal_mode={mode})")
            self._db.execute(f"PRAGMA synchronous={sync.upper()}")
            if verify != "none":
                rows = self._db.execute("PRAGMA quick_check").fetchall()
                if rows != [("ok",)]:
                    raise StorageCorruptError(self.path, None, f"sqlite quick_check: {rows[0][0] if rows else '?'}")
            self._db.executescript(_SCHEMA)
            cur = self._db.execute("SELECT value FROM meta WHERE key='__schema__'").fetchone()
            if cur is None:
                self._db.execute("INSERT INTO meta(key, value) VALUES('__schema__', ?)", (SCHEMA_VERSION.encode(),))
            elif bytes(cur[0]).decode() not in _KNOWN_SCHEMAS:
                raise StorageCorruptError(self.path, None, f"unknown schema version {cur[0]!r}")
            elif bytes(cur[0]).decode() != SCHEMA_VERSION:
                self._db.execute("UPDATE meta SET value=? WHERE key='__schema__'", (SCHEMA_VERSION.encode(),))
            self._height, self._head_hash = -1, None
            self._check_chain(verify, genesis)
        except StorageCorruptError:
            self._db.close()
            raise
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StorageCorruptError(self.path, None, f"sqlite: {exc}") from None

    # ---- integrity ----------------------------------------------------------------------------
    def _check_chain(self, verify: str, genesis: Any) -> None:
        if verify == "none":
            row = self._db.execute("SELECT height, hash FROM blocks ORDER BY height DESC LIMIT 1").fetchone()
            if row:
                self._height, self._head_hash = int(row[0]), bytes(row[1])
            return
        expect_genesis = genesis_block(genesis).hash() if genesis is not None else None
        prev: bytes | None = None
        expected_h = 0
        for height, h, prev_col, header_b, body_b, cert in self._db.execute(
            "SELECT b.height, b.hash, b.prev_hash, b.header, b.body, c.cert FROM blocks b "
            "LEFT JOIN certs c ON c.height = b.height ORDER BY b.height"
        ):
            problem = self._check_row(expected_h, prev, height, bytes(h), bytes(prev_col), bytes(header_b),
                                      bytes(body_b), verify == "full")
            if problem is None and cert is not None and verify == "full":
                try:
                    CommitCertificate.decode(bytes(cert))
                except BlockDecodeError as exc:
                    problem = str(exc)
            if problem is None and height == 0 and expect_genesis is not None and bytes(h) != expect_genesis:
                problem = "block 0 is not the configured genesis block"
            if problem is not None:
                raise StorageCorruptError(self.path, int(height), problem)
            prev = bytes(h)
            expected_h += 1
        self._height = expected_h - 1
        self._head_hash = prev

    @staticmethod
    def _check_row(expected_h: int, prev: bytes | None, height: int, h: bytes, prev_col: bytes,
                   header_b: bytes, body_b: bytes, full: bool) -> str | None:
        if height != expected_h:
            return f"height gap: expected {expected_h}"
        try:
            header = BlockHeader.from_dict(json.loads(header_b.decode("utf-8")))
        except (BlockDecodeError, ValueError, UnicodeDecodeError) as exc:
            return f"header does not decode ({exc})"
        if header.height != height:
            return f"header height {header.height} stored at height {height}"
        if header.hash() != h:
            return "stored block hash does not match the recomputed header hash"
        if header.prev_hash != prev_col:
            return "prev_hash column disagrees with the header"
        if prev is not None and header.prev_hash != prev:
            return "prev_hash does not link to the previous block"
        if prev is None and height == 0 and header.prev_hash != bytes(32):
            return "genesis prev_hash is not zero"
        if full:
            try:
                block = Block.from_parts(header, json.loads(body_b.decode("utf-8")))
            except (TxDecodeError, ValueError, UnicodeDecodeError, RecursionError) as exc:
                return f"body does not decode ({exc})"
            bad = block.check_body()
            if bad:
                return bad
        return None

    # ---- writes -------------------------------------------------------------------------------
    def append_block(self, block: Block, *, meta: dict[str, bytes] | None = None,
                     certificate: bytes | None = None) -> bytes:
        """Durably append the next block with its encoded commit certificate and optional meta
        updates, atomically (one sqlite transaction); returns the block hash."""
        bad = block.check_body()
        if bad:
            raise StorageError(f"{self.path}: block {block.height} is inconsistent: {bad}")
        h = block.hash()
        with self._lock:
            self._check_open()
            if block.height != self._height + 1:
                raise StorageError(f"{self.path}: block height {block.height}, expected {self._height + 1}")
            want_prev = self._head_hash if self._head_hash is not None else bytes(32)
            if block.header.prev_hash != want_prev:
                raise StorageError(f"{self.path}: block {block.height} prev_hash does not link to the head")
            rows = [(block.height, i, t.tx_hash(), int(bool(r.ok)), str(r.code))
                    for i, (t, r) in enumerate(zip(block.txs, block.results))]
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "INSERT INTO blocks(height, hash, prev_hash, header, body) VALUES (?,?,?,?,?)",
                    (block.height, h, block.header.prev_hash, block.header.encode(), block.encode_body()),
                )
                db.executemany("INSERT INTO txs(height, idx, tx_hash, ok, code) VALUES (?,?,?,?,?)", rows)
                if certificate is not None:
                    db.execute("INSERT INTO certs(height, cert) VALUES (?,?)", (block.height, bytes(certificate)))
                for k, v in (meta or {}).items():
                    db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?,?)", (k, bytes(v)))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._height, self._head_hash = block.height, h
        return h

    def put_meta(self, key: str, value: bytes) -> None:
        """Durably store consensus metadata (returns after the fsync)."""
        self.put_meta_many({key: value})

    def put_meta_many(self, items: Mapping[str, bytes | None] | Iterable[tuple[str, bytes | None]]) -> None:
        """Durably apply several meta updates in one transaction; a ``None`` value deletes the key."""
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        with self._lock:
            self._check_open()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for k, v in pairs:
                    if k == "__schema__":
                        raise StorageError("reserved meta key")
                    if v is None:
                        self._db.execute("DELETE FROM meta WHERE key=?", (str(k),))
                    else:
                        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?,?)", (str(k), bytes(v)))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def delete_meta(self, key: str) -> None:
        self.put_meta_many([(key, None)])

    def get_meta(self, key: str) -> bytes | None:
        with self._lock:
            self._check_open()
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (str(key),)).fetchone()
        return None if row is None else bytes(row[0])

    def meta_keys(self, prefix: str = "") -> list[str]:
        with self._lock:
            self._check_open()
            rows = self._db.execute("SELECT key FROM meta WHERE key >= ? ORDER BY key", (prefix,)).fetchall()
        return [r[0] for r in rows if r[0].startswith(prefix) and r[0] != "__schema__"]

    # ---- reads --------------------------------------------------------------------------------
    @property
    def height(self) -> int:
        """Height of the head block (-1 when empty)."""
        return self._height

    @property
    def head_hash(self) -> bytes | None:
        return self._head_hash

    def head(self) -> tuple[int, bytes | None]:
        return self._height, self._head_hash

    def __len__(self) -> int:
        return self._height + 1

    def get_header(self, height: int) -> BlockHeader | None:
        with self._lock:
            self._check_open()
            row = self._db.execute("SELECT header FROM blocks WHERE height=?", (int(height),)).fetchone()
        return None if row is None else BlockHeader.from_dict(json.loads(bytes(row[0]).decode("utf-8")))

    def block_hash(self, height: int) -> bytes | None:
        with self._lock:
            self._check_open()
            row = self._db.execute("SELECT hash FROM blocks WHERE height=?", (int(height),)).fetchone()
        return None if row is None else bytes(row[0])

    def get_block(self, height: int) -> Block | None:
        with self._lock:
            self._check_open()
            row = self._db.execute("SELECT header, body FROM blocks WHERE height=?", (int(height),)).fetchone()
        if row is None:
            return None
        return self._decode_row(bytes(row[0]), bytes(row[1]))

    @staticmethod
    def _decode_row(header_b: bytes, body_b: bytes) -> Block:
        header = BlockHeader.from_dict(json.loads(header_b.decode("utf-8")))
        return Block.from_parts(header, json.loads(body_b.decode("utf-8")))

    def iter_blocks(self, start: int = 0, end: int | None = None) -> Iterator[Block]:
        """Blocks with ``start <= height <= end`` in order (reads in pages)."""
        end = self._height if end is None else end
        h = start
        while h <= end:
            with self._lock:
                self._check_open()
                rows = self._db.execute(
                    "SELECT header, body FROM blocks WHERE height>=? AND height<=? ORDER BY height LIMIT 256",
                    (h, end),
                ).fetchall()
            if not rows:
                return
            for hb, bb in rows:
                yield self._decode_row(bytes(hb), bytes(bb))
            h += len(rows)

    def get_certificate(self, height: int) -> bytes | None:
        """The encoded commit certificate stored with block ``height`` (None if none)."""
        with self._lock:
            self._check_open()
            row = self._db.execute("SELECT cert FROM certs WHERE height=?", (int(height),)).fetchone()
        return None if row is None else bytes(row[0])

    def find_tx(self, tx_hash: bytes) -> tuple[int, int] | None:
        """(height, index) of the first occurrence of a transaction, or None."""
        with self._lock:
            self._check_open()
            row = self._db.execute(
                "SELECT height, idx FROM txs WHERE tx_hash=? ORDER BY height, idx LIMIT 1", (bytes(tx_hash),)
            ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def get_tx(self, tx_hash: bytes) -> tuple[Transaction, TxResult, int, int] | None:
        loc = self.find_tx(tx_hash)
        if loc is None:
            return None
        block = self.get_block(loc[0])
        assert block is not None
        return block.txs[loc[1]], block.results[loc[1]], loc[0], loc[1]

    def count_txs(self) -> int:
        with self._lock:
            self._check_open()
            return int(self._db.execute("SELECT COUNT(*) FROM txs").fetchone()[0])

    def size_bytes(self) -> int:
        """Bytes on disk (database + WAL + shared-memory index)."""
        if self.path == ":memory:":
            return 0
        return sum(os.path.getsize(p) for p in (self.path, self.path + "-wal", self.path + "-shm") if os.path.exists(p))

    def checkpoint(self) -> None:
        """Fold the WAL into the main database file (``PRAGMA wal_checkpoint(TRUNCATE)``)."""
        with self._lock:
            self._check_open()
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # ---- lifecycle ----------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{self.path}: store is closed")

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def __enter__(self) -> "LedgerStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
