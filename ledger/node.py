"""A ledger replica: the PBFT state machine glued to blocks, contracts and storage.

Paper link: B-FDL section 3.4 — each consortium node orders the round records with PBFT, executes
the smart contracts deterministically at commit and keeps the hash-linked block chain.

* :class:`LedgerApp` is the replicated service behind :class:`ledger.pbft.Replica`: it
  authenticates client transactions (``Transaction.decode`` + Ed25519 check, once per replica),
  computes the RFC 6962 tx root, executes committed batches (block = header with height == PBFT
  sequence number, prev hash, tx root, contract state root, view/proposer/timestamp of the batch),
  persists them through :class:`ledger.storage.LedgerStore` (or keeps them in memory for the fast
  simulated tests) and serves / installs state-transfer snapshots (contract snapshot at a stable
  checkpoint + the blocks the requester lacks; installed only if the blocks hash-chain to the
  2f+1-certified block hash and the restored state root matches it).
* :class:`ReplicaNode` drives a replica: it performs the actions the state machine returns, in
  order, making every ``Persist`` durable (one sqlite transaction) before the next ``Send``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

from ledger import merkle
from ledger import messages as M
from ledger import pbft
from ledger.block import Block, BlockHeader, genesis_block
from ledger.certificate import CommitCertificate, check_certificate
from ledger.contracts import ContractState, Genesis, TxResult
from ledger.errors import KeyFileError, SnapshotError, StorageCorruptError
from ledger.tx import Transaction, TxDecodeError


class MemoryChain:
    """Blocks and consensus metadata in memory (the simulated tests' "disk")."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.certs: dict[int, bytes] = {}  # height -> encoded commit certificate
        self.meta: dict[str, bytes] = {}

    # block store
    def height(self) -> int:
        return len(self.blocks) - 1

    def append(self, block: Block, certificate: Optional[bytes] = None) -> None:
        if block.height != len(self.blocks):
            raise ValueError(f"block {block.height} appended at height {len(self.blocks)}")
        self.blocks.append(block)
        if certificate is not None:
            self.certs[block.height] = certificate

    def get(self, height: int) -> Block:
        return self.blocks[height]

    def certificate(self, height: int) -> Optional[bytes]:
        return self.certs.get(height)

    # metadata
    def put_meta_many(self, items: list[tuple[str, Optional[bytes]]]) -> None:
        for k, v in items:
            if v is None:
                self.meta.pop(k, None)
            else:
                self.meta[k] = v

    def meta_items(self) -> list[tuple[str, bytes]]:
        return list(self.meta.items())

    def close(self) -> None:
        pass


class StoreChain:
    """Adapter from :class:`ledger.storage.LedgerStore` to the chain interface used here."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def height(self) -> int:
        return self.store.height

    def append(self, block: Block, certificate: Optional[bytes] = None) -> None:
        self.store.append_block(block, certificate=certificate)

    def get(self, height: int) -> Block:
        b = self.store.get_block(height)
        if b is None:
            raise KeyError(f"no block at height {height}")
        return b

    def certificate(self, height: int) -> Optional[bytes]:
        return self.store.get_certificate(height)

    def put_meta_many(self, items: list[tuple[str, Optional[bytes]]]) -> None:
        puts = {k: v for k, v in items if v is not None}
        if puts:
            self.store.put_meta_many(puts)
        for k, v in items:
            if v is None:
                self.store.delete_meta(k)

    def meta_items(self) -> list[tuple[str, bytes]]:
        out = []
        for k in self.store.meta_keys(""):
            v = self.store.get_meta(k)
            if v is not None:
                out.append((k, v))
        return out

    def close(self) -> None:
        self.store.close()


def _results_digest(results: list[TxResult]) -> bytes:
    return M.sha256(json.dumps([[bool(r.ok), r.code] for r in results], separators=(",", ":")).encode())


class LedgerApp:
    """Blocks + contracts behind a PBFT replica (implements :class:`ledger.pbft.App`)."""

    RECENT_BLOCKS = 64

    def __init__(self, genesis: Genesis, chain: Any, *, ring: M.KeyRing, checkpoint_interval: int = 10,
                 keep_snapshots: int = 3) -> None:
        self.genesis = genesis
        self.chain = chain
        self.ring = ring  # replica public keys: commit certificates of transferred blocks are checked
        self.K = checkpoint_interval
        self.keep = keep_snapshots
        self.contracts = ContractState(genesis)
        self.tx_loc: dict[bytes, tuple[int, int]] = {}
        self.decoded: dict[bytes, Transaction] = {}
        self.authenticated: set[bytes] = set()  # hashes of transactions whose signature checked out
        self.recent: dict[int, Block] = {}  # the last executed/installed blocks (receipts read them)
        self.snapshots: dict[int, Any] = {}  # seq -> contracts.StateCheckpoint
        self.hashes: dict[int, bytes] = {}
        self.verify_count = 0
        if chain.height() < 0:
            chain.append(genesis_block(genesis))
        g = chain.get(0)
        if g.hash() != genesis_block(genesis).hash():
            raise SnapshotError("the stored chain was created with a different genesis")
        # Recovery: re-execute the stored blocks to rebuild contract state (and check state roots).
        head = chain.height()
        for h in range(1, head + 1):
            b = chain.get(h)
            results = [self.contracts.apply(t, height=h, timestamp_ms=b.header.timestamp_ms, check_signature=False)
                       for t in b.txs]
            if self.contracts.state_root() != b.header.state_root:
                raise SnapshotError(f"block {h}: re-executed state root differs from the stored header")
            for i, t in enumerate(b.txs):
                self.tx_loc.setdefault(t.tx_hash(), (h, i))
            self.hashes[h] = b.hash()
            if h % self.K == 0:
                self._keep_snapshot(h)
        self.head = chain.get(head)

    # -- pbft.App ------------------------------------------------------------------------------

    def check_tx(self, raw: bytes) -> Optional[bytes]:
        # The verdict is a function of the bytes, and a transaction's hash is the SHA-256 of its
        # (canonical) bytes, signature included: a hash this replica already authenticated needs
        # no second decode/Ed25519 check (client retransmissions, replays of executed
        # transactions, forwarded requests). Every replica still verifies every signature once.
        h = M.sha256(raw)
        if h in self.decoded or h in self.authenticated:
            return h
        try:
            tx = Transaction.decode(raw)
        except TxDecodeError:
            return None
        if tx.chain_id != self.genesis.chain_id:
            return None
        self.verify_count += 1
        if not tx.verify_signature():
            return None
        if len(self.decoded) > 500_000:
            self.decoded.clear()
        if len(self.authenticated) > 500_000:
            self.authenticated.clear()  # a cache: bounded even under floods of valid transactions
        self.decoded[h] = tx
        self.authenticated.add(h)
        return h

    def tx_root(self, tx_hashes: list[bytes]) -> bytes:
        return merkle.merkle_root(tx_hashes)

    def is_executed(self, tx_hash: bytes) -> bool:
        return tx_hash in self.tx_loc

    def height(self) -> int:
        return self.head.height

    def execute(self, seq: int, batch: M.Batch, proposer: int, commits: tuple[bytes, ...]) -> pbft.ExecResult:
        if seq != self.head.height + 1:
            raise RuntimeError(f"execute({seq}) at height {self.head.height}")
        txs = []
        for raw in batch.txs:
            h = M.sha256(raw)
            tx = self.decoded.pop(h, None)
            if tx is None:
                tx = Transaction.decode(raw)  # authenticated before ordering (pre-prepare check)
            txs.append(tx)
        ts = max(batch.timestamp_ms, self.head.header.timestamp_ms)
        results = [self.contracts.apply(t, height=seq, timestamp_ms=ts, check_signature=False) for t in txs]
        header = BlockHeader(
            height=seq, prev_hash=self.head.hash(), tx_root=merkle.merkle_root([t.tx_hash() for t in txs]),
            state_root=self.contracts.state_root(), view=batch.proposal_view, proposer=proposer, timestamp_ms=ts)
        block = Block(header, tuple(txs), tuple(results))
        self.chain.append(block, CommitCertificate(batch.timestamp_ms, commits).encode())
        self.head = block
        self._remember(block)
        self.hashes[seq] = header.hash()
        for i, t in enumerate(txs):
            self.tx_loc.setdefault(t.tx_hash(), (seq, i))
        if seq % self.K == 0:
            self._keep_snapshot(seq)
        return pbft.ExecResult(header.hash(), header.state_root, _results_digest(results))

    def _remember(self, block: Block) -> None:
        self.recent[block.height] = block
        if len(self.recent) > self.RECENT_BLOCKS:
            for h in sorted(self.recent)[: -self.RECENT_BLOCKS]:
                del self.recent[h]

    def _keep_snapshot(self, seq: int) -> None:
        self.snapshots[seq] = self.contracts.checkpoint()
        for s in sorted(self.snapshots)[: -self.keep]:
            del self.snapshots[s]

    def on_stable(self, seq: int) -> None:
        for s in [s for s in self.snapshots if s < seq]:
            del self.snapshots[s]

    def make_snapshot(self, seq: int, have_height: int) -> Optional[bytes]:
        snap = self.snapshots.get(seq)
        if snap is None or seq > self.head.height:
            return None
        start = max(1, have_height + 1)
        blocks = [self.chain.get(h).encode().decode("utf-8") for h in range(start, seq + 1)]
        certs = [(self.chain.certificate(h) or b"").hex() for h in range(start, seq + 1)]
        return json.dumps({"seq": seq, "from": start, "contracts": snap.to_bytes().decode("utf-8"), "blocks": blocks,
                           "certs": certs}, separators=(",", ":")).encode("utf-8")

    def install_snapshot(self, seq: int, block_hash: bytes, state_root: bytes, snapshot: bytes) -> bool:
        try:
            obj = json.loads(snapshot.decode("utf-8"))
            if obj["seq"] != seq or obj["from"] != self.head.height + 1:
                return False
            blocks = [Block.decode(b.encode("utf-8")) for b in obj["blocks"]]
            certs = [bytes.fromhex(c) for c in obj["certs"]]
            if len(certs) != len(blocks):
                return False
            prev = self.head
            for b, c in zip(blocks, certs):
                if b.height != prev.height + 1 or b.header.prev_hash != prev.hash() or b.check_body() is not None:
                    return False
                if check_certificate(CommitCertificate.decode(c), b.header, prev.header.timestamp_ms, self.ring):
                    return False
                prev = b
            if prev.height != seq or prev.hash() != block_hash or prev.header.state_root != state_root:
                return False
            st = ContractState.from_snapshot(self.genesis, obj["contracts"].encode("utf-8"))
            if st.state_root() != state_root:
                return False
        except (ValueError, KeyError, TypeError, AttributeError):
            return False
        for b, c in zip(blocks, certs):
            self.chain.append(b, c)
            self._remember(b)
            self.hashes[b.height] = b.hash()
            for i, t in enumerate(b.txs):
                self.tx_loc.setdefault(t.tx_hash(), (b.height, i))
        self.contracts = st
        self.head = prev
        self.snapshots = {seq: st.checkpoint()}
        return True

    # -- reads ---------------------------------------------------------------------------------

    def block(self, height: int) -> Block:
        """Block at ``height``: recent blocks from memory (the objects that were stored), older
        ones read back from the chain."""
        b = self.recent.get(height)
        return b if b is not None else self.chain.get(height)

    def block_hash(self, height: int) -> Optional[bytes]:
        return self.hashes.get(height)

    def locate(self, tx_hash: bytes) -> Optional[tuple[int, int]]:
        return self.tx_loc.get(tx_hash)


class Transport(Protocol):
    def now_ms(self) -> int: ...

    def send(self, frm: int, to: Optional[int], raw: bytes) -> None: ...

    def set_timer(self, rid: int, name: str, delay_ms: int) -> None: ...

    def cancel_timer(self, rid: int, name: str) -> None: ...


@dataclass
class NodeSpec:
    rid: int
    cfg: pbft.Config
    keyring: M.KeyRing
    signer: M.Signer
    genesis: Genesis


def _corrupt(chain: Any, problem: str) -> Exception:
    store = getattr(chain, "store", None)
    return StorageCorruptError(getattr(store, "path", "<memory chain>"), None, problem)


class ReplicaNode:
    """Runs one replica: feeds it frames and timer events and performs its actions."""

    def __init__(self, spec: NodeSpec, chain: Any, transport: Transport, *, restarted: bool = False,
                 on_commit: Optional[Callable[[int, pbft.Committed], None]] = None) -> None:
        self.spec = spec
        self.id = spec.rid
        self.chain = chain
        self.transport = transport
        if spec.genesis.replicas and tuple(k.hex() for k in spec.keyring.pubkeys) != spec.genesis.replicas:
            raise KeyFileError(f"replica {spec.rid}: the replica keys do not match the replica set of the genesis")
        self.app = LedgerApp(spec.genesis, chain, ring=spec.keyring, checkpoint_interval=spec.cfg.checkpoint_interval)
        meta = chain.meta_items()
        view, votes = pbft.restored_votes(meta)
        try:
            prepared = pbft.restored_prepared(meta)
        except ValueError as exc:
            raise _corrupt(chain, str(exc)) from None
        self.replica = pbft.Replica(spec.rid, spec.cfg, spec.keyring, spec.signer, self.app, view=view, votes=votes,
                                    prepared=prepared)
        if self.replica.log.damaged:
            raise _corrupt(chain, f"prepared certificate of sequence number {self.replica.log.damaged[0]} in the "
                                  "consensus log fails its signature/digest check")
        self.on_commit = on_commit
        self.alive = True
        self._perform(self.replica.start(transport.now_ms(), restarted=restarted))

    def handle(self, raw: bytes) -> None:
        if self.alive:
            self._perform(self.replica.receive(raw, self.transport.now_ms()))

    def fire(self, name: str) -> None:
        if self.alive:
            self._perform(self.replica.on_timer(name, self.transport.now_ms()))

    def _perform(self, actions: list[Any]) -> None:
        pending: list[tuple[str, Optional[bytes]]] = []
        for a in actions:
            t = type(a)
            if t is pbft.Persist:
                pending.append((a.key, a.value))
                continue
            if pending:
                self.chain.put_meta_many(pending)  # durable before anything is sent
                pending = []
            if t is pbft.Send:
                self.transport.send(self.id, a.to, a.raw)
            elif t is pbft.SetTimer:
                self.transport.set_timer(self.id, a.name, a.delay_ms)
            elif t is pbft.CancelTimer:
                self.transport.cancel_timer(self.id, a.name)
            elif t is pbft.Committed:
                if self.on_commit is not None:
                    self.on_commit(self.id, a)
        if pending:
            self.chain.put_meta_many(pending)

    def close(self) -> None:
        self.alive = False
        self.chain.close()
