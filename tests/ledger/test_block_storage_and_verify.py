"""ledger.storage / offchain / verify: durable chain, tamper and torn-tail detection, hard-kill
recovery, content-addressed store, full chain verification by re-execution.

The chains here are built without consensus (``build_block``), so they carry no commit certificates
and are verified with ``require_certificates=False``; certificates are tested in
``test_pbft_commit_certificates.py``."""

from __future__ import annotations

import dataclasses

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ledger import crypto
from ledger.block import Block, BlockHeader, build_block, genesis_block
from ledger.contracts import ContractState, Genesis, TxResult
from ledger.offchain import OffchainIntegrityError, OffchainStore, cid_to_address, cid_v1
from ledger.storage import LedgerStore, StorageCorruptError, StorageError
from ledger.tx import sign_tx
from ledger.verify import verify_chain

REPO = Path(__file__).resolve().parents[2]
ADMIN = crypto.SigningKey.from_seed(bytes([1]) * 32)
AGG = crypto.SigningKey.from_seed(bytes([3]) * 32)
HOSP = [crypto.SigningKey.from_seed(bytes([10 + i]) * 32) for i in range(3)]
OUTSIDER = crypto.SigningKey.from_seed(bytes([99]) * 32)
GENESIS = Genesis(
    admins=(ADMIN.key_id(),),
    epsilon_cap=1.0,
    institutions=(("aggregator", "agg", AGG.key_id()),
                  *(("hospital", f"hospital_{i}", k.key_id()) for i, k in enumerate(HOSP))),
)


def round_txs(r: int) -> list:
    txs = [sign_tx(AGG, "round.open", {"round": r}, nonce=f"o{r}")]
    txs += [sign_tx(k, "round.commit_update", {"round": r, "commitment": crypto.sha256(b"%d%d" % (r, i)).hex(),
                                                 "num_examples": 100 + i}, nonce=f"c{r}") for i, k in enumerate(HOSP)]
    txs.append(sign_tx(OUTSIDER, "round.commit_update", {"round": r, "commitment": "00" * 32, "num_examples": 1},
                       nonce=f"x{r}"))
    txs.append(sign_tx(AGG, "privacy.record", {"round": r, "epsilon": r / 100, "delta": 1e-5, "accountant": "rdp",
                                               "noise_multiplier": 1.1}, nonce=f"p{r}"))
    txs.append(sign_tx(AGG, "round.close", {"round": r}, nonce=f"z{r}"))
    return txs


def make_chain(path: Path, rounds: int) -> tuple[LedgerStore, ContractState]:
    store = LedgerStore(path, genesis=GENESIS)
    state = ContractState(GENESIS)
    store.append_block(genesis_block(GENESIS))
    for r in range(1, rounds + 1):
        blk = build_block(state, round_txs(r), height=r, prev_hash=store.head_hash, view=0, proposer=r % 4,
                          timestamp_ms=1_700_000_000_000 + r)
        store.append_block(blk)
    return store, state


def test_append_read_and_linkage(tmp_path: Path) -> None:
    store, state = make_chain(tmp_path / "l.db", 5)
    assert store.height == 5 and len(store) == 6
    b3 = store.get_block(3)
    assert b3 is not None and b3.header.prev_hash == store.block_hash(2) and b3.check_body() is None
    assert b3.results[4] == TxResult(False, "unregistered", "sender key is not registered")
    assert [b.height for b in store.iter_blocks(2, 4)] == [2, 3, 4]
    tx = round_txs(2)[1]
    assert store.find_tx(tx.tx_hash()) == (2, 1)
    got = store.get_tx(tx.tx_hash())
    assert got is not None and got[0] == tx and got[1].code == "accepted"
    # receipts: inclusion proof against the header's tx root
    from ledger import merkle
    proof = b3.inclusion_proof(1)
    assert merkle.verify_inclusion(b3.txs[1].tx_hash(), 1, len(b3.txs), proof, b3.header.tx_root)
    # wrong height / wrong prev hash are refused
    nxt = build_block(ContractState.from_snapshot(GENESIS, state.snapshot()), round_txs(6), height=7,
                      prev_hash=store.head_hash, timestamp_ms=1)
    with pytest.raises(StorageError):
        store.append_block(nxt)
    bad_prev = build_block(ContractState.from_snapshot(GENESIS, state.snapshot()), round_txs(6), height=6,
                           prev_hash=bytes(32), timestamp_ms=1)
    with pytest.raises(StorageError):
        store.append_block(bad_prev)
    # meta for consensus votes
    store.put_meta("vote/7/prepare", b"\x01\x02")
    store.put_meta_many({"view": b"3", "vote/8/commit": b"x"})
    assert store.get_meta("vote/7/prepare") == b"\x01\x02" and store.get_meta("nope") is None
    assert store.meta_keys("vote/") == ["vote/7/prepare", "vote/8/commit"]
    store.put_meta_many([("vote/7/prepare", None), ("vote/9/commit", b"y")])  # atomic delete + put
    assert store.meta_keys("vote/") == ["vote/8/commit", "vote/9/commit"]
    store.delete_meta("vote/8/commit")
    assert store.get_meta("vote/8/commit") is None
    store.close()
    with LedgerStore(tmp_path / "l.db", genesis=GENESIS) as again:
        assert again.height == 5 and again.get_meta("view") == b"3" and again.get_meta("vote/9/commit") == b"y"
        rep = verify_chain(again, genesis=GENESIS, require_certificates=False)
        assert rep.ok, rep
        assert rep.blocks == 6 and rep.txs == 35 and rep.rejected_txs == 5
        assert rep.state_root == state.state_root().hex()
    with pytest.raises(StorageCorruptError, match="genesis"):
        LedgerStore(tmp_path / "l.db", genesis=Genesis(admins=(OUTSIDER.key_id(),)))


def _flip_in_file(path: Path, needle: bytes, offset: int = 0) -> None:
    data = bytearray(path.read_bytes())
    i = data.find(needle)
    assert i >= 0, "needle not found in the database file"
    data[i + offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_byte_flip_in_block_is_detected(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    store, _ = make_chain(db, 4)
    target = store.get_block(3).txs[1].payload["commitment"].encode()  # a commitment stored in block 3
    store.close()
    assert not Path(str(db) + "-wal").exists() or Path(str(db) + "-wal").stat().st_size == 0
    _flip_in_file(db, target, 5)
    with pytest.raises(StorageCorruptError) as ei:
        LedgerStore(db)
    assert ei.value.height == 3 and "block 3" in str(ei.value)
    rep = verify_chain(db, genesis=GENESIS, require_certificates=False)
    assert not rep.ok and rep.failing_height == 3


def test_altered_header_and_torn_tail_detected(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    store, _ = make_chain(db, 4)
    ts = b'"timestamp_ms":1700000000004'
    store.close()
    _flip_in_file(db, ts, len(ts) - 1)  # rewrite the head block's timestamp
    with pytest.raises(StorageCorruptError, match="block 4: stored block hash"):
        LedgerStore(db)
    # truncated file (torn tail at the file level)
    db2 = tmp_path / "t.db"
    s2, _ = make_chain(db2, 30)
    s2.close()
    size = db2.stat().st_size
    with open(db2, "r+b") as f:
        f.truncate(size - 4096 - 100)
    with pytest.raises(StorageCorruptError):
        LedgerStore(db2)
    # garbage file
    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(8192))
    with pytest.raises(StorageCorruptError):
        LedgerStore(junk)


def test_deleted_tail_row_breaks_nothing_but_gap_is_detected(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "l.db"
    store, _ = make_chain(db, 4)
    store.close()
    con = sqlite3.connect(db)
    con.execute("DELETE FROM blocks WHERE height=2")
    con.commit()
    con.close()
    with pytest.raises(StorageCorruptError, match="block 3: height gap"):
        LedgerStore(db)


WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    from ledger import crypto
    from ledger.block import build_block, genesis_block
    from ledger.contracts import ContractState, Genesis
    from ledger.storage import LedgerStore
    from ledger.tx import sign_tx
    admin = crypto.SigningKey.from_seed(bytes([1]) * 32)
    agg = crypto.SigningKey.from_seed(bytes([3]) * 32)
    g = Genesis(admins=(admin.key_id(),), institutions=(("aggregator", "agg", agg.key_id()),))
    store = LedgerStore({db!r}, genesis=g)
    state = ContractState(g)
    if store.height < 0:
        store.append_block(genesis_block(g))
    for b in store.iter_blocks(1):  # a restarted replica re-executes its chain
        state.apply_block(b.txs, height=b.height, timestamp_ms=b.header.timestamp_ms)
    h = store.height
    while True:
        h += 1
        txs = [sign_tx(agg, "round.open", {{"round": h}}, nonce=f"o{{h}}"),
               sign_tx(agg, "metrics.record", {{"round": h, "metrics": {{"h": h}}}}, nonce=f"m{{h}}"),
               sign_tx(agg, "round.close", {{"round": h}}, nonce=f"c{{h}}")]
        txs += [sign_tx(agg, "access.request_summary", {{"round": h}}, nonce=f"{{h}}-{{i}}") for i in range(17)]
        blk = build_block(state, txs, height=h, prev_hash=store.head_hash, timestamp_ms=h)
        store.append_block(blk, meta={{"last": str(h).encode()}})
        print(h, flush=True)
    """
)


def test_hard_kill_loses_no_committed_block(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(repo=str(REPO), db=str(db)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    acked = -1
    deadline = time.monotonic() + 60
    try:
        while acked < 25 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked = int(line)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: the writer is inside its next append
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    assert acked >= 25, "writer did not make progress"
    with LedgerStore(db) as store:  # full integrity check on open
        assert store.height >= acked  # every acknowledged block survived
        assert int(store.get_meta("last")) == store.height  # block and meta committed atomically
        assert store.get_block(acked) is not None
        g = Genesis(admins=(ADMIN.key_id(),), institutions=(("aggregator", "agg", AGG.key_id()),))
        rep = verify_chain(store, genesis=g, require_certificates=False)
        assert rep.ok and rep.blocks == store.height + 1, rep


def test_offchain_store(tmp_path: Path) -> None:
    off = OffchainStore(tmp_path / "off")
    data = os.urandom(100_000)
    addr = off.put(data)
    assert addr == crypto.sha256(data).hex() and off.put(data) == addr
    assert off.get(addr) == data and off.has(addr)
    cid = cid_v1(data)
    assert cid.startswith("bafkrei") and cid_to_address(cid) == addr and off.get(cid) == data
    assert cid_v1(b"") == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"  # IPFS empty raw block
    p = off.path_of(addr)
    raw = bytearray(p.read_bytes())
    raw[500] ^= 0xFF
    p.write_bytes(bytes(raw))
    with pytest.raises(OffchainIntegrityError, match="does not hash"):
        off.get(addr)
    with pytest.raises(KeyError):
        off.get("00" * 32)
    with pytest.raises(OffchainIntegrityError):
        off.get("../../etc/passwd")
    assert off.addresses() == [addr] and off.total_bytes() == len(data)


def _rewrite_block(db: Path, height: int, block: Block) -> None:
    """Replace a stored block consistently (hash recomputed), as a malicious operator could."""
    import sqlite3

    con = sqlite3.connect(db)
    con.execute("UPDATE blocks SET hash=?, header=?, body=? WHERE height=?",
                (block.hash(), block.header.encode(), block.encode_body(), height))
    con.commit()
    con.close()


def test_verify_chain_detects_semantic_tampering(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    store, _ = make_chain(db, 3)
    blk = store.get_block(3)
    store.close()
    assert verify_chain(db, genesis=GENESIS, require_certificates=False).ok
    # 1) a stored result changed (unregistered tx marked accepted), hashes recomputed so storage is
    #    self-consistent: only re-execution catches it.
    results = list(blk.results)
    results[4] = TxResult(True, "accepted", "commitment for round 3")
    _rewrite_block(db, 3, Block(blk.header, blk.txs, tuple(results)))
    with LedgerStore(db):
        pass  # structurally fine
    rep = verify_chain(db, genesis=GENESIS, require_certificates=False)
    assert not rep.ok and (rep.failing_height, rep.failing_tx) == (3, 4) and "re-execution" in rep.first_error
    # 2) a header with a forged state root
    forged = dataclasses.replace(blk.header, state_root=bytes(32))
    _rewrite_block(db, 3, Block(forged, blk.txs, blk.results))
    rep = verify_chain(db, genesis=GENESIS, require_certificates=False)
    assert not rep.ok and rep.failing_height == 3 and "state root" in rep.first_error
    # 3) a transaction swapped for another with a forged signature (sender spoofed)
    t = blk.txs[1]
    from ledger.tx import Transaction
    spoof = Transaction(t.kind, HOSP[2].key_id(), t.payload, t.nonce, t.signature)
    txs = list(blk.txs)
    txs[1] = spoof
    from ledger.block import tx_root
    hdr = dataclasses.replace(blk.header, tx_root=tx_root(txs))
    _rewrite_block(db, 3, Block(hdr, tuple(txs), blk.results))
    rep = verify_chain(db, genesis=GENESIS, require_certificates=False)
    assert not rep.ok and (rep.failing_height, rep.failing_tx) == (3, 1) and "signature" in rep.first_error
    # 4) a rewritten middle block (new timestamp, hash recomputed) breaks the link of the next block
    #    for storage; re-execution already fails at the rewritten block (the round's opening time is
    #    part of the contract state).
    db2 = tmp_path / "v2.db"
    s2, _ = make_chain(db2, 3)
    b2 = s2.get_block(2)
    s2.close()
    hdr = dataclasses.replace(b2.header, timestamp_ms=5)
    _rewrite_block(db2, 2, Block(hdr, b2.txs, b2.results))
    with pytest.raises(StorageCorruptError, match="block 3: prev_hash does not link"):
        LedgerStore(db2)
    rep = verify_chain(db2, genesis=GENESIS, require_certificates=False)
    assert not rep.ok and rep.failing_height == 2 and "state root" in rep.first_error


def test_block_encoding_roundtrip() -> None:
    state = ContractState(GENESIS)
    blk = build_block(state, round_txs(1), height=1, prev_hash=genesis_block(GENESIS).hash(), timestamp_ms=9)
    again = Block.decode(blk.encode())
    assert again.hash() == blk.hash() and again.txs == blk.txs and again.results == blk.results
    # Encodings assembled from the cached transaction bytes equal the canonical JSON of the dicts.
    key = crypto.SigningKey.from_seed(bytes([5]) * 32)
    odd = sign_tx(key, "metrics.record", {"round": 1, "metrics": {"é\u2028": [1.5, None, "ü"]}}, nonce="u")
    mixed = Block(blk.header, (odd,) + blk.txs[:2], (TxResult(False, "bad_payload", "é ü"),) + blk.results[:2])
    for b in (blk, again, genesis_block(GENESIS), mixed):
        assert b.encode_body() == crypto.canonical_json(b.body_dict())
        assert b.encode() == crypto.canonical_json({"header": b.header.to_dict(), "body": b.body_dict()})
    from ledger.block import BlockDecodeError
    for bad in (b"{}", b"nope", blk.encode().replace(b'"height":1', b'"height":-1')):
        with pytest.raises(BlockDecodeError):
            Block.decode(bad)


@pytest.mark.slow
def test_repeated_hard_kills_resume_the_same_chain(tmp_path: Path) -> None:
    """10 kill -9 cycles at varying points; every restart resumes the chain it left, loses no
    acknowledged block and the final chain verifies end to end."""
    import random

    db = tmp_path / "k.db"
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(repo=str(REPO), db=str(db)))
    rng = random.Random(6)
    acked_total = -1
    for _cycle in range(10):
        proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        stop_after = rng.randint(1, 15)
        seen = 0
        try:
            while seen < stop_after:
                line = proc.stdout.readline()
                if not line:
                    break
                acked_total = max(acked_total, int(line))
                seen += 1
            time.sleep(rng.random() * 0.01)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            err = proc.stderr.read()
            proc.stdout.close()
            proc.stderr.close()
        assert seen == stop_after, err
        with LedgerStore(db) as store:
            assert store.height >= acked_total
            assert int(store.get_meta("last")) == store.height
    admin = crypto.SigningKey.from_seed(bytes([1]) * 32)
    agg = crypto.SigningKey.from_seed(bytes([3]) * 32)
    g = Genesis(admins=(admin.key_id(),), institutions=(("aggregator", "agg", agg.key_id()),))
    rep = verify_chain(db, genesis=g, require_certificates=False)
    assert rep.ok, rep
    assert rep.blocks == acked_total + 1 or rep.blocks == acked_total + 2  # at most one unacknowledged
