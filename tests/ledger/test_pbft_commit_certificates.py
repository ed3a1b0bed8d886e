"""Commit certificates and replica keys (issue 17.2; PBFT commit phase, Castro & Liskov 4.2;
B-FDL paper 3.4: the chain proves its own consensus).

Every block is stored with the 2f+1 signed COMMIT votes that committed it; replica keys are files
(0600 in a 0700 directory), never derived from a seed; the genesis lists the replica set and
``verify_chain`` checks every certificate against it. A history rebuilt without the replica keys
(a round dropped, a result changed, no certificates) fails and the message names the block.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from ledger import crypto
from ledger import messages as M
from ledger.block import build_block, genesis_block
from ledger.certificate import CommitCertificate, check_certificate, keyring_of, quorum
from ledger.cluster import LocalCluster, replica_public_keys
from ledger.contracts import ContractState
from ledger.errors import KeyFileError
from ledger.replica_keys import key_path, load_or_create_replica_keys, load_replica_key
from ledger.sim import Workload
from ledger.storage import LedgerStore
from ledger.verify import verify_chain

N = 4


@pytest.fixture(scope="module")
def honest_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Workload]:
    """Four rounds committed by a 4-replica cluster whose genesis lists its replica keys."""
    base = tmp_path_factory.mktemp("certs")
    w = Workload(31, 3, replicas=replica_public_keys(base / "keys", N))
    with LocalCluster(N, data_dir=base / "db", genesis=w.genesis, keys_dir=base / "keys", batch_size=64) as lc:
        for r in range(1, 5):
            assert all(x.ok for x in lc.submit_many(w.round_txs(r, 8)))
    return base, w


def _blocks(db: Path) -> list:
    with LedgerStore(db, verify="none") as st:
        return [(b, st.get_certificate(b.height)) for b in st.iter_blocks(1)]


def test_every_block_is_stored_with_a_valid_quorum_certificate(honest_run) -> None:
    base, w = honest_run
    ring = keyring_of(w.genesis.replicas)
    for i in range(N):
        db = base / "db" / f"replica_{i}.sqlite"
        rep = verify_chain(db, genesis=w.genesis)
        assert rep.ok and rep.certificates_checked and rep.blocks >= 5, rep
        prev_ts = 0
        for b, raw in _blocks(db):
            cert = CommitCertificate.decode(raw)
            assert CommitCertificate.decode(cert.encode()) == cert
            senders = [M.decode(v).sender for v in cert.commits]
            assert len(senders) == quorum(N) == 3 and len(set(senders)) == 3
            assert check_certificate(cert, b.header, prev_ts, ring) is None
            prev_ts = b.header.timestamp_ms


def test_replica_keys_are_private_files_not_derived_from_a_seed(tmp_path: Path) -> None:
    pubs = replica_public_keys(tmp_path / "a", N)
    assert len(set(pubs)) == N and all(crypto.is_hex(p, 32) for p in pubs)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    for i in range(N):
        assert stat.S_IMODE(key_path(tmp_path / "a", i).stat().st_mode) == 0o600
    assert replica_public_keys(tmp_path / "a", N) == pubs  # loaded, never regenerated
    assert set(replica_public_keys(tmp_path / "b", N)).isdisjoint(pubs)  # fresh randomness per directory
    os.chmod(key_path(tmp_path / "a", 2), 0o644)
    with pytest.raises(KeyFileError, match="replica-2.key: .*group or others"):
        load_replica_key(tmp_path / "a", 2)
    os.chmod(key_path(tmp_path / "a", 2), 0o600)
    key_path(tmp_path / "a", 1).write_text("not a key\n")
    with pytest.raises(KeyFileError, match="replica-1.key: not a replica key"):
        load_or_create_replica_keys(tmp_path / "a", N)
    os.chmod(tmp_path / "b", 0o755)
    with pytest.raises(KeyFileError, match="chmod 700"):
        replica_public_keys(tmp_path / "b", N)


def test_cluster_refuses_keys_that_are_not_the_genesis_replica_set(tmp_path: Path) -> None:
    w = Workload(32, 2, replicas=replica_public_keys(tmp_path / "keys", N))
    with pytest.raises(KeyFileError, match="do not match"):
        LocalCluster(N, data_dir=tmp_path / "db", genesis=w.genesis, keys_dir=tmp_path / "other")
    with pytest.raises(KeyFileError, match="needs a keys_dir"):
        LocalCluster(N, data_dir=tmp_path / "db", genesis=w.genesis, keys_dir=None)


# ---------------------------------------------------------------------------------------------
# Rewritten histories (issue 17 "Why" 3: all replica databases rebuilt from genesis, no key)


def _rebuild(db: Path, genesis, blocks: list[tuple[list, bytes | None, int]]) -> None:
    """Write a self-consistent chain (hashes, links, Merkle and state roots all recomputed) of
    ``(transactions, certificate, timestamp)`` blocks: what anyone can do without replica keys."""
    state = ContractState(genesis)
    prev = genesis_block(genesis)
    with LedgerStore(db, genesis=genesis) as st:
        st.append_block(prev)
        for h, (txs, cert, ts) in enumerate(blocks, start=1):
            b = build_block(state, txs, height=h, prev_hash=prev.hash(), view=0, proposer=0, timestamp_ms=ts)
            st.append_block(b, certificate=cert)
            prev = b


def _forge_all_replicas(base: Path, w: Workload, name: str, blocks) -> list[Path]:
    out = []
    for i in range(N):
        db = base / name / f"replica_{i}.sqlite"
        _rebuild(db, w.genesis, blocks)
        out.append(db)
    return out


def _original(base: Path) -> list[tuple[list, bytes, int]]:
    return [(list(b.txs), cert, b.header.timestamp_ms) for b, cert in _blocks(base / "db" / "replica_0.sqlite")]


def _round_of(block_txs: list) -> set[int]:
    return {t.payload.get("round") for t in block_txs}


def test_history_with_a_round_dropped_fails_at_the_first_renumbered_block(honest_run) -> None:
    base, w = honest_run
    orig = _original(base)
    dropped = [b for b in orig if 2 not in _round_of(b[0])]  # every block of round 2 removed
    first = next(i for i, b in enumerate(orig) if 2 in _round_of(b[0])) + 1
    assert len(dropped) < len(orig)
    for db in _forge_all_replicas(base, w, "drop_round", dropped):  # certificates copied with their blocks
        rep = verify_chain(db, genesis=w.genesis)
        assert not rep.ok and rep.failing_height == first, rep
        assert rep.first_error.startswith(f"commit certificate of block {first}: ")
        assert f"block {first}" in str(rep)
        # Without the certificate check the forged chain is self-consistent: only the certificates catch it.
        assert verify_chain(db, genesis=w.genesis, require_certificates=False).ok


def test_history_with_a_commitment_demoted_to_rejected_fails(honest_run) -> None:
    base, w = honest_run
    orig = _original(base)
    k = next(i for i, b in enumerate(orig) if 3 in _round_of(b[0]) and any(t.kind == "round.close" for t in b[0]))
    txs = list(orig[k][0])
    commit = next(t for t in txs if t.kind == "round.commit_update")
    txs.remove(commit)
    txs.append(commit)  # after round.close: the hospital's commitment now reads "wrong_round"
    forged = orig[:k] + [(txs, orig[k][1], orig[k][2])] + orig[k + 1:]
    for db in _forge_all_replicas(base, w, "demote", forged):
        with LedgerStore(db, verify="none") as st:
            assert st.get_block(k + 1).results[-1].code == "wrong_round"
        rep = verify_chain(db, genesis=w.genesis)
        assert not rep.ok and rep.failing_height == k + 1, rep
        assert "another batch" in rep.first_error and f"block {k + 1}" in rep.first_error


def test_history_rebuilt_without_certificates_fails_at_block_1(honest_run) -> None:
    base, w = honest_run
    for db in _forge_all_replicas(base, w, "bare", [(t, None, ts) for t, _c, ts in _original(base)]):
        rep = verify_chain(db, genesis=w.genesis)
        assert not rep.ok and rep.failing_height == 1 and "missing" in rep.first_error, rep


def test_genesis_without_replicas_cannot_be_certificate_checked(honest_run) -> None:
    base, w = honest_run
    bare = dataclasses.replace(w.genesis, replicas=())
    rep = verify_chain(base / "db" / "replica_0.sqlite", genesis=bare)
    assert not rep.ok and "lists no replica keys" in rep.first_error


# ---------------------------------------------------------------------------------------------
# Tampered certificates: too few, duplicate, non-replica, other block's votes


def _tampered(base: Path, name: str, height: int, fn) -> Path:
    src = base / "db" / "replica_1.sqlite"
    db = base / name / "replica_1.sqlite"
    db.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(src)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    db.write_bytes(src.read_bytes())
    con = sqlite3.connect(db)
    (raw,) = con.execute("SELECT cert FROM certs WHERE height=?", (height,)).fetchone()
    cert = CommitCertificate.decode(bytes(raw))
    new = fn(cert, con)
    con.execute("UPDATE certs SET cert=? WHERE height=?", (new.encode(), height))
    con.commit()
    con.close()
    return db


def _foreign_vote(cert: CommitCertificate, sender: int) -> bytes:
    """The same COMMIT, re-signed by a key that is not in the genesis."""
    env = M.decode(cert.commits[0])
    return M.encode(env.body, sender, crypto.SigningKey.generate())


@pytest.mark.parametrize("case,expect", [
    ("too_few", "2 distinct replica signatures, 3 needed"),
    ("duplicate", "votes twice"),
    ("outsider_key", "invalid signature"),
    ("outsider_id", "not a replica of the genesis"),
    ("other_block", "another batch or sequence number"),
])
def test_bad_certificate_is_named_with_its_block(honest_run, case: str, expect: str) -> None:
    base, w = honest_run
    h = 2

    def tamper(cert: CommitCertificate, con: sqlite3.Connection) -> CommitCertificate:
        v = list(cert.commits)
        if case == "too_few":
            v = v[:2]
        elif case == "duplicate":
            v[2] = v[0]
        elif case == "outsider_key":
            v[2] = _foreign_vote(cert, M.decode(v[2]).sender)
        elif case == "outsider_id":
            v[2] = _foreign_vote(cert, 7)
        elif case == "other_block":
            (raw,) = con.execute("SELECT cert FROM certs WHERE height=?", (h + 1,)).fetchone()
            other = CommitCertificate.decode(bytes(raw))
            return CommitCertificate(cert.batch_timestamp_ms, other.commits)
        return CommitCertificate(cert.batch_timestamp_ms, tuple(v))

    db = _tampered(base, case, h, tamper)
    rep = verify_chain(db, genesis=w.genesis)
    assert not rep.ok and rep.failing_height == h, rep
    assert rep.first_error.startswith(f"commit certificate of block {h}: ") and expect in rep.first_error, rep
