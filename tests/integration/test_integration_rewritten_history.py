"""A run's history rewritten without the replica keys fails ``bfdl audit verify`` (issue 17.2/17.3):
the audit relies on ``ledger.verify.verify_chain`` for the commit certificates and names the
replica database and block; a history re-committed by an attacker's own replicas under a replaced
``genesis.json`` is caught by the rounds check or, in general, by pinning the genesis hash
(``--genesis-hash``), which the audit prints."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from ledger.block import build_block, genesis_block
from ledger.cluster import LocalCluster, replica_public_keys
from ledger.contracts import ContractState, Genesis
from ledger.storage import LedgerStore
from ledger.tx import Transaction

from bfdl_tff.cli import main
from bfdl_tff.config import KeysConfig
from bfdl_tff.integration.audit import verify_run
from bfdl_tff.integration.chain import read_chain
from bfdl_tff.integration.hook import LedgerHook
from bfdl_tff.integration.ledger_api import LedgerFiles
from bfdl_tff.integration.ledger_summary import chain_keys
from bfdl_tff.integration.simulate import run_synthetic, synthetic_run_dir
from bfdl_tff.keys import open_keystore

H = ["hospital_a", "hospital_b", "hospital_c"]
Blocks = list[tuple[list[Transaction], "bytes | None", int]]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    run = synthetic_run_dir(tmp_path_factory.mktemp("hist") / "hist-bfdl")
    run_synthetic(LedgerHook(run, keystore=open_keystore(KeysConfig()), epsilon_cap=1.0), run, hospitals=H, rounds=4)
    return run.path


def _copy(src: Path, tmp_path: Path) -> tuple[Path, LedgerFiles]:
    dst = Path(shutil.copytree(src, tmp_path / src.name))
    return dst, LedgerFiles(dst / "ledger")


def _original(files: LedgerFiles) -> Blocks:
    with LedgerStore(files.replica_dbs()[0], verify="none") as st:
        return [(list(b.txs), st.get_certificate(b.height), b.header.timestamp_ms) for b in st.iter_blocks(1)]


def _rounds_of(txs: list[Transaction]) -> set[int]:
    return {t.payload.get("round") for t in txs}


def _rebuild_all(files: LedgerFiles, genesis: Genesis, blocks: Blocks) -> None:
    """Self-consistent replica databases (hashes, links, Merkle and state roots recomputed) with
    the given certificates: what anyone can write without a replica key."""
    n = len(files.replica_dbs())
    shutil.rmtree(files.replicas_dir)
    for i in range(n):
        state, prev = ContractState(genesis), genesis_block(genesis)
        with LedgerStore(files.replicas_dir / f"replica_{i}.sqlite", genesis=genesis) as st:
            st.append_block(prev)
            for h, (txs, cert, ts) in enumerate(blocks, start=1):
                b = build_block(state, txs, height=h, prev_hash=prev.hash(), view=0, proposer=0, timestamp_ms=ts)
                st.append_block(b, certificate=cert)
                prev = b


def _recommit_with_own_replicas(files: LedgerFiles, tmp_path: Path,
                                edit: Callable[[Blocks], Blocks]) -> tuple[Genesis, Genesis]:
    """The attacker's way around certificates: a genesis listing their own replica keys, the
    original signed transactions (edited) re-committed by their cluster, genesis.json and
    ledger_summary.json rewritten to match. Returns (original, forged) genesis."""
    original = files.load_genesis()
    keys = tmp_path / "attacker-keys"
    forged = dataclasses.replace(original, replicas=replica_public_keys(keys, len(original.replicas)))
    blocks = edit(_original(files))
    shutil.rmtree(files.replicas_dir)
    with LocalCluster(len(original.replicas), data_dir=files.replicas_dir, genesis=forged, keys_dir=keys) as c:
        for txs, _cert, _ts in blocks:
            c.submit_many(txs)
    files.write_genesis(forged)
    summary = json.loads(files.summary_file.read_text())
    heads = []
    for db in files.replica_dbs():
        with LedgerStore(db, verify="none") as st:
            h, x = st.head()
            heads.append((h, x.hex()))
    summary.update(chain_keys(read_chain(files.replica_dbs()[0], forged), heads))
    files.summary_file.write_text(json.dumps(summary))
    return original, forged


def _drop_round(r: int) -> Callable[[Blocks], Blocks]:
    return lambda blocks: [b for b in blocks if r not in _rounds_of(b[0])]


def _demote_commitment(r: int) -> Callable[[Blocks], Blocks]:
    """Move one hospital's round-``r`` commitment after ``round.close``: the contract now rejects it."""
    def edit(blocks: Blocks) -> Blocks:
        out = []
        for txs, cert, ts in blocks:
            if r in _rounds_of(txs) and any(t.kind == "round.close" for t in txs):
                txs = list(txs)
                c = next(t for t in txs if t.kind == "round.commit_update")
                txs.remove(c)
                txs.append(c)
            out.append((txs, cert, ts))
        return out
    return edit


def test_round_dropped_with_original_certificates_is_named_by_block(pristine, tmp_path):
    run, files = _copy(pristine, tmp_path)
    orig = _original(files)
    first = next(i for i, b in enumerate(orig) if 2 in _rounds_of(b[0])) + 1
    _rebuild_all(files, files.load_genesis(), _drop_round(2)(orig))
    res = verify_run(run, write=False)
    assert not res.ok
    assert res.first_failure.startswith(f"chain:replica_0: {files.replica_dbs()[0]} block {first}: ")
    assert f"commit certificate of block {first}" in res.first_failure
    assert all(not c.ok for c in res.checks if c.name.startswith("chain:"))


def test_history_without_certificates_fails_at_block_1(pristine, tmp_path):
    run, files = _copy(pristine, tmp_path)
    _rebuild_all(files, files.load_genesis(), [(t, None, ts) for t, _c, ts in _original(files)])
    res = verify_run(run, write=False)
    assert res.first_failure.startswith(f"chain:replica_0: {files.replica_dbs()[0]} block 1: ")
    assert main(["audit", "verify", str(run)]) == 1


def test_own_replicas_under_the_original_genesis_fail_at_block_0(pristine, tmp_path):
    run, files = _copy(pristine, tmp_path)
    original, _ = _recommit_with_own_replicas(files, tmp_path, _drop_round(2))
    files.write_genesis(original)  # the attacker kept the run's genesis.json
    res = verify_run(run, write=False)
    assert res.first_failure.startswith(f"chain:replica_0: {files.replica_dbs()[0]} block 0: ")


def test_own_replicas_and_replaced_genesis(pristine, tmp_path):
    """Dropping a round is still caught by the rounds check; any rewrite is caught by the pin."""
    run, files = _copy(pristine, tmp_path)
    original, forged = _recommit_with_own_replicas(files, tmp_path, _drop_round(2))
    res = verify_run(run, write=False)
    assert res.first_failure.startswith("rounds: ") and "round 2 is missing from the chain" in res.first_failure
    pinned = verify_run(run, genesis_hash=original.hash().hex(), write=False)
    assert pinned.first_failure.startswith("genesis: ") and "genesis.json was replaced" in pinned.first_failure
    assert main(["audit", "verify", str(run), "--genesis-hash", original.hash().hex()]) == 1
    assert verify_run(pristine, genesis_hash=original.hash().hex(), write=False).ok
    assert original.hash().hex() in verify_run(pristine, write=False).check("genesis").message


def test_demoted_commitment_under_a_replaced_genesis_needs_the_pin(pristine, tmp_path):
    run, files = _copy(pristine, tmp_path)
    original, _ = _recommit_with_own_replicas(files, tmp_path, _demote_commitment(3))
    res = verify_run(run, write=False)
    failing = [c.name for c in res.checks if not c.ok]
    assert failing == ["openings"], res.first_failure  # the hospital's private opening no longer matches
    assert "opening of round 3" in res.first_failure
    pinned = verify_run(run, genesis_hash=original.hash().hex(), write=False)
    assert pinned.first_failure.startswith("genesis: ")
