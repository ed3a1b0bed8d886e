"""Seeded simulated network with a virtual clock, fault injection and Byzantine behaviours.

Used by the PBFT tests (issue 6 tests 1-13, 16) and, with faults off, by
:class:`ledger.cluster.LocalCluster` (the in-process ledger of the B-FDL round hook, paper 3.4).

Everything is driven by one event queue ordered by (virtual time, insertion counter), and every
random choice comes from ``random.Random(seed)``: a run is a pure function of its seed and
schedule. Faults: message drop, delay (uniform in ``[delay_min_ms, delay_max_ms]``, which also
reorders), duplication, partitions (``partition([[0,1],[2,3]])``), crash / restart of a replica
(its durable chain survives, in-memory state does not), and Byzantine replicas (outgoing-frame
transformers, with the replica's own signing key): ``equivocate`` (a primary sends a different
batch to the upper half of the backups), ``wrong_digest`` (PREPARE/COMMIT/CHECKPOINT with altered
digests, properly signed), ``junk`` (random frames), ``forge`` (corrupted signatures), ``spoof``
(frames claiming another replica's id), ``replay`` (old frames re-sent later), ``silent``.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from ledger import crypto
from ledger import messages as M
from ledger import pbft
from ledger.client import ReplyCollector, locate_certified
from ledger.contracts import Genesis
from ledger.node import MemoryChain, NodeSpec, ReplicaNode
from ledger.tx import Transaction


@dataclass
class Faults:
    drop: float = 0.0
    duplicate: float = 0.0
    delay_min_ms: float = 0.0
    delay_max_ms: float = 0.0
    drop_client: bool = False  # also drop client<->replica frames


class SimNet:
    """Virtual-time network + timer service for a set of :class:`ReplicaNode`."""

    def __init__(self, n: int, *, seed: int = 0, faults: Optional[Faults] = None) -> None:
        self.n = n
        self.rng = random.Random(seed)
        self.faults = faults or Faults()
        self.now = 0.0
        self._q: list[tuple[float, int, tuple]] = []
        self._ctr = 0
        self.nodes: dict[int, ReplicaNode] = {}
        self.epoch: dict[int, int] = {i: 0 for i in range(n)}
        self.timer_gen: dict[tuple[int, str], int] = {}
        self.groups: Optional[list[set[int]]] = None
        self.byzantine: dict[int, set[str]] = {}
        self.signers: dict[int, M.Signer] = {}
        self.client_sink: Callable[[bytes], None] = lambda raw: None
        self.frames_sent = 0
        self.bytes_sent = 0
        self.recorded: list[tuple[int, int, bytes]] = []
        self._alt_cache: dict[bytes, bytes] = {}
        self.app_for_byz: Any = None

    # -- scheduling ----------------------------------------------------------------------------

    def _push(self, t: float, item: tuple) -> None:
        self._ctr += 1
        heapq.heappush(self._q, (t, self._ctr, item))

    def now_ms(self) -> int:
        return int(self.now)

    def set_timer(self, rid: int, name: str, delay_ms: int) -> None:
        key = (rid, name)
        g = self.timer_gen.get(key, 0) + 1
        self.timer_gen[key] = g
        self._push(self.now + delay_ms, ("timer", rid, name, g, self.epoch[rid]))

    def cancel_timer(self, rid: int, name: str) -> None:
        key = (rid, name)
        self.timer_gen[key] = self.timer_gen.get(key, 0) + 1

    # -- links ---------------------------------------------------------------------------------

    def connected(self, a: int, b: int) -> bool:
        if self.groups is None or a < 0 or b < 0:
            return True
        return any(a in g and b in g for g in self.groups)

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        self.groups = [set(g) for g in groups]

    def heal(self) -> None:
        self.groups = None

    def _delay(self) -> float:
        f = self.faults
        if f.delay_max_ms <= 0:
            return 0.0
        return self.rng.uniform(f.delay_min_ms, f.delay_max_ms)

    def _link(self, frm: int, to: int, raw: bytes) -> None:
        """Put one frame on the wire from ``frm`` to ``to`` (-1 = client) with faults."""
        if not self.connected(frm, to):
            return
        f = self.faults
        client = frm < 0 or to < 0
        if (not client or f.drop_client) and f.drop and self.rng.random() < f.drop:
            return
        copies = 1
        if (not client or f.drop_client) and f.duplicate and self.rng.random() < f.duplicate:
            copies = 2
        for _ in range(copies):
            self.frames_sent += 1
            self.bytes_sent += len(raw)
            self._push(self.now + self._delay(), ("msg", to, raw))

    def send(self, frm: int, to: Optional[int], raw: bytes) -> None:
        targets: list[int]
        if to is None:
            targets = [i for i in range(self.n) if i != frm]
        else:
            targets = [to]
        for t in targets:
            for t2, raw2 in self._byzantine_out(frm, t, raw):
                self._link(frm, t2, raw2)

    def client_broadcast(self, raw: bytes, targets: Optional[Iterable[int]] = None) -> None:
        for t in (range(self.n) if targets is None else targets):
            self._link(-1, t, raw)

    # -- Byzantine behaviours --------------------------------------------------------------

    def _resign(self, frm: int, body: Any) -> bytes:
        return M.encode(body, frm, self.signers[frm])

    def _byzantine_out(self, frm: int, to: int, raw: bytes) -> list[tuple[int, bytes]]:
        kinds = self.byzantine.get(frm)
        if not kinds or to < 0 and "silent" not in kinds:
            return [(to, raw)]
        if "silent" in kinds:
            return []
        out: list[tuple[int, bytes]] = []
        env = M.decode(raw)
        body = env.body
        if "equivocate" in kinds and isinstance(body, M.PrePrepare) and body.batch.txs:
            others = [i for i in range(self.n) if i != frm]
            if to in others[len(others) // 2:]:
                alt = self._alt_cache.get(raw)
                if alt is None:
                    txs = tuple(reversed(body.batch.txs)) if len(body.batch.txs) > 1 else ()
                    b = M.Batch(body.batch.timestamp_ms + 1, body.batch.proposal_view, txs)
                    from ledger import merkle
                    root = merkle.merkle_root([M.sha256(t) for t in txs])
                    alt = self._resign(frm, M.PrePrepare(body.view, body.seq, M.batch_digest(root, b.timestamp_ms, b.proposal_view), root, b))
                    self._alt_cache[raw] = alt
                raw = alt
        if "wrong_digest" in kinds:
            bad = M.sha256(raw)
            if isinstance(body, M.Prepare):
                raw = self._resign(frm, M.Prepare(body.view, body.seq, bad))
            elif isinstance(body, M.Commit):
                raw = self._resign(frm, M.Commit(body.view, body.seq, bad, bad))
            elif isinstance(body, M.Checkpoint):
                raw = self._resign(frm, M.Checkpoint(body.seq, bad, bad))
        if "forge" in kinds:
            raw = raw[:-1] + bytes([raw[-1] ^ 0x5A])
        if "spoof" in kinds:
            victim = (frm + 1) % self.n
            raw = raw[:4] + victim.to_bytes(2, "big") + raw[6:]
        out.append((to, raw))
        if "junk" in kinds:
            k = self.rng.randrange(0, 200)
            junk = bytes(self.rng.getrandbits(8) for _ in range(k))
            if self.rng.random() < 0.5 and k > 6:
                junk = M.MAGIC + bytes([1, self.rng.randrange(1, 12)]) + junk[4:]
            out.append((to, junk))
        if "replay" in kinds:
            self.recorded.append((frm, to, raw))
            if len(self.recorded) > 2000:
                del self.recorded[:1000]
            for _ in range(2):
                _f, t, old = self.recorded[self.rng.randrange(len(self.recorded))]
                out.append((t, old))
        return out

    # -- running -------------------------------------------------------------------------------

    def step(self) -> bool:
        if not self._q:
            return False
        t, _c, item = heapq.heappop(self._q)
        self.now = max(self.now, t)
        kind = item[0]
        if kind == "msg":
            to, raw = item[1], item[2]
            if to < 0:
                self.client_sink(raw)
            else:
                node = self.nodes.get(to)
                if node is not None and node.alive:
                    node.handle(raw)
        elif kind == "timer":
            _k, rid, name, gen, epoch = item
            node = self.nodes.get(rid)
            if node is not None and node.alive and self.epoch[rid] == epoch and self.timer_gen.get((rid, name)) == gen:
                node.fire(name)
        elif kind == "call":
            item[1]()
        return True

    def at(self, delay_ms: float, fn: Callable[[], None]) -> None:
        self._push(self.now + delay_ms, ("call", fn))

    def run(self, *, until: Optional[Callable[[], bool]] = None, max_ms: float = 60_000.0,
            max_events: int = 10_000_000) -> bool:
        """Process events until ``until()`` holds (True), the queue empties or a bound is hit."""
        deadline = self.now + max_ms
        for _ in range(max_events):
            if until is not None and until():
                return True
            if not self._q or self._q[0][0] > deadline:
                if self._q and self._q[0][0] > deadline:
                    self.now = deadline
                return bool(until and until())
            self.step()
        return bool(until and until())


def make_keys(n: int, seed: int, tag: bytes = b"replica") -> list[crypto.SigningKey]:
    """Deterministic replica keys derived from ``seed``: for the simulated tests only (a run is a
    pure function of its seed). Clusters that keep a chain load per-replica key files instead
    (:mod:`ledger.replica_keys`)."""
    return [crypto.SigningKey.from_seed(crypto.sha256(tag + seed.to_bytes(8, "big") + i.to_bytes(4, "big"))) for i in range(n)]


class SimCluster:
    """n replicas on a :class:`SimNet`; honest unless listed in ``byzantine``."""

    def __init__(self, n: int, *, genesis: Genesis, seed: int = 0, faults: Optional[Faults] = None,
                 cfg: Optional[pbft.Config] = None, byzantine: Optional[dict[int, set[str]]] = None,
                 chains: Optional[list[Any]] = None, chain_factory: Optional[Callable[[int], Any]] = None,
                 keys: Optional[list[crypto.SigningKey]] = None) -> None:
        self.n = n
        self.genesis = genesis
        self.cfg = cfg or pbft.Config(n=n)
        if self.cfg.n != n:
            raise ValueError("cfg.n != n")
        self.f = self.cfg.f
        self.net = SimNet(n, seed=seed, faults=faults)
        self.keys = list(keys) if keys is not None else make_keys(n, seed)
        if len(self.keys) != n:
            raise ValueError(f"{len(self.keys)} replica keys for {n} replicas")
        self.keyring = M.KeyRing([k.public_key() for k in self.keys])
        self.client_keyring = M.KeyRing([k.public_key() for k in self.keys])
        self.byzantine = dict(byzantine or {})
        self.net.byzantine = self.byzantine
        self.net.signers = {i: self.keys[i] for i in range(n)}
        self.chain_factory = chain_factory or (lambda i: MemoryChain())
        self.chains = chains or [self.chain_factory(i) for i in range(n)]
        self.client = ReplyCollector(self.client_keyring, self.f)
        self.net.client_sink = self.client.on_frame
        self.commit_log: list[tuple[int, pbft.Committed]] = []
        self.record_commits = True
        self.nodes: list[Optional[ReplicaNode]] = [None] * n
        self.rings: dict[int, M.KeyRing] = {}
        for i in range(n):
            self._boot(i, restarted=False)

    def _spec(self, i: int) -> NodeSpec:
        # Each replica has its own key ring (and signature cache): every replica verifies every
        # frame it receives itself.
        ring = M.KeyRing([k.public_key() for k in self.keys])
        self.rings[i] = ring
        return NodeSpec(i, self.cfg, ring, self.keys[i], self.genesis)

    def _on_commit(self, rid: int, c: pbft.Committed) -> None:
        if self.record_commits:
            self.commit_log.append((rid, c))

    def _boot(self, i: int, *, restarted: bool) -> None:
        node = ReplicaNode(self._spec(i), self.chains[i], self.net, restarted=restarted, on_commit=self._on_commit)
        self.nodes[i] = node
        self.net.nodes[i] = node

    # -- faults ----------------------------------------------------------------------------------

    def crash(self, i: int) -> None:
        node = self.nodes[i]
        if node is not None and node.alive:
            node.alive = False
            self.net.epoch[i] += 1

    def restart(self, i: int, *, chain: Any = None) -> None:
        self.crash(i)
        if chain is not None:
            self.chains[i] = chain
        self._boot(i, restarted=True)

    def honest(self) -> list[int]:
        return [i for i in range(self.n) if i not in self.byzantine]

    # -- client ----------------------------------------------------------------------------------

    def submit(self, txs: Iterable[Transaction | bytes], targets: Optional[Iterable[int]] = None) -> list[bytes]:
        raws = [t if isinstance(t, bytes) else t.encode() for t in txs]
        if raws:
            self.net.client_broadcast(M.encode(M.Request(tuple(raws)), M.CLIENT_SENDER, None), targets)
        return [M.sha256(r) for r in raws]

    def located(self, tx_hash: bytes) -> Optional[tuple[int, int, bytes]]:
        """(height, index, block_hash) if f+1 replicas replied for the block holding the tx."""
        apps = (self.nodes[i].app for i in self.honest() if self.nodes[i] is not None)
        found = locate_certified(apps, self.client, tx_hash)
        return None if found is None else found[1:]

    def all_located(self, hashes: Iterable[bytes]) -> bool:
        return all(self.located(h) is not None for h in hashes)

    def run_until_committed(self, hashes: list[bytes], *, max_ms: float = 60_000.0) -> bool:
        todo = set(hashes)

        def done() -> bool:
            for h in list(todo):
                if self.located(h) is not None:
                    todo.discard(h)
                else:
                    return False
            return True

        return self.net.run(until=done, max_ms=max_ms)

    # -- observation -----------------------------------------------------------------------------

    def heights(self) -> list[int]:
        return [self.chains[i].height() for i in range(self.n)]

    def heads(self) -> list[tuple[int, str]]:
        out = []
        for i in range(self.n):
            c = self.chains[i]
            h = c.height()
            out.append((h, c.get(h).hash().hex()))
        return out

    def check_safety(self, replicas: Optional[Iterable[int]] = None) -> int:
        """Assert: honest replicas agree on every common height, chains are linked without gaps.

        Returns the highest height committed by every replica checked.
        """
        ids = list(self.honest() if replicas is None else replicas)
        chains = [self.chains[i] for i in ids]
        hmax = max(c.height() for c in chains)
        for c, i in zip(chains, ids):
            prev = None
            for h in range(c.height() + 1):
                b = c.get(h)
                assert b.height == h, f"replica {i}: gap at height {h}"
                if prev is not None:
                    assert b.header.prev_hash == prev.hash(), f"replica {i}: broken link at {h}"
                    assert b.check_body() is None, f"replica {i}: bad body at {h}"
                prev = b
        for h in range(hmax + 1):
            hashes = {c.get(h).hash() for c in chains if c.height() >= h}
            assert len(hashes) <= 1, f"divergence at height {h}: {[x.hex()[:12] for x in hashes]}"
        return min(c.height() for c in chains)


class Workload:
    """Deterministic B-FDL round traffic: an admin, registered hospitals, an outsider.

    ``replicas``: the replica public keys listed in the genesis (``Genesis.replicas``).
    ``round_txs(r, size)`` returns ``size`` signed transactions for round ``r``: ``round.open``,
    one ``round.commit_update`` per hospital,
    ``round.global_model``, ``privacy.record``, ``metrics.record``, ``access.request_summary``
    fillers and ``round.close`` (the 60-transaction rounds of the paper's ledger-growth figure use
    ``size=60``).
    """

    def __init__(self, seed: int = 0, hospitals: int = 8, *, epsilon_cap: float | None = None,
                 replicas: tuple[str, ...] = ()) -> None:
        def key(tag: str, i: int = 0) -> crypto.SigningKey:
            return crypto.SigningKey.from_seed(crypto.sha256(f"{tag}/{seed}/{i}".encode()))

        self.admin = key("admin")
        self.hospitals = [key("hospital", i) for i in range(hospitals)]
        self.outsider = key("outsider")
        self.genesis = Genesis(
            admins=(self.admin.key_id(),), epsilon_cap=epsilon_cap,
            institutions=tuple(("hospital", f"hospital_{i}", h.key_id()) for i, h in enumerate(self.hospitals)),
            replicas=tuple(replicas))
        self._nonce = 0

    def _n(self) -> str:
        self._nonce += 1
        return f"n{self._nonce}"

    def round_txs(self, r: int, size: int = 0) -> list[Transaction]:
        from ledger.tx import sign_tx

        a = self.admin
        txs = [sign_tx(a, "round.open", {"round": r}, nonce=self._n())]
        for i, h in enumerate(self.hospitals):
            txs.append(sign_tx(h, "round.commit_update", {
                "round": r, "commitment": crypto.sha256(f"{r}/{i}".encode()).hex(), "num_examples": 100 + i},
                nonce=self._n()))
        txs.append(sign_tx(a, "round.global_model", {"round": r, "model_hash": crypto.sha256(f"g{r}".encode()).hex()},
                           nonce=self._n()))
        txs.append(sign_tx(a, "privacy.record", {"round": r, "epsilon": 0.01 * r, "delta": 1e-5,
                                                 "accountant": "rdp", "noise_multiplier": 1.1}, nonce=self._n()))
        txs.append(sign_tx(a, "metrics.record", {"round": r, "metrics": {"auc": 0.5 + (r % 50) / 100.0}},
                           nonce=self._n()))
        k = 0
        while len(txs) < size - 1:
            # Fillers: registered hospitals reading the round's gradient summary (granted).
            h = self.hospitals[k % len(self.hospitals)]
            k += 1
            txs.append(sign_tx(h, "access.request_summary", {"round": r}, nonce=self._n()))
        txs.append(sign_tx(a, "round.close", {"round": r}, nonce=self._n()))
        return txs

    def outsider_tx(self, r: int) -> Transaction:
        from ledger.tx import sign_tx

        return sign_tx(self.outsider, "round.commit_update", {
            "round": r, "commitment": "ab" * 32, "num_examples": 1}, nonce=self._n())


def check_certificates(cluster: "SimCluster", replicas: Optional[Iterable[int]] = None) -> int:
    """Assert: every block above 0 of every honest replica is stored with a commit certificate of
    2f+1 valid COMMIT signatures of the cluster's replica keys (:mod:`ledger.certificate`).

    Returns the number of certificates checked.
    """
    from ledger.certificate import CommitCertificate, check_certificate, keyring_of

    ring = keyring_of([k.key_id() for k in cluster.keys])
    n = 0
    for i in (cluster.honest() if replicas is None else replicas):
        c = cluster.chains[i]
        for h in range(1, c.height() + 1):
            raw = c.certificate(h)
            assert raw is not None, f"replica {i}: block {h} has no commit certificate"
            bad = check_certificate(CommitCertificate.decode(raw), c.get(h).header, c.get(h - 1).header.timestamp_ms,
                                    ring)
            assert bad is None, f"replica {i}: commit certificate of block {h}: {bad}"
            n += 1
    return n


def check_only_registered(cluster: "SimCluster", allowed: set[str]) -> int:
    """Assert that every transaction that took effect (result ok) was signed by an allowed key.

    Returns the number of effective transactions checked.
    """
    n = 0
    for i in cluster.honest():
        c = cluster.chains[i]
        for h in range(1, c.height() + 1):
            b = c.get(h)
            for t, r in zip(b.txs, b.results):
                if r.ok:
                    assert t.sender in allowed, f"replica {i} height {h}: tx from unregistered {t.sender[:12]} executed"
                    n += 1
    return n


def effective_tx_hashes(chain: Any) -> list[bytes]:
    """Hashes of the transactions that took effect (ok result), in chain order."""
    out = []
    for h in range(1, chain.height() + 1):
        b = chain.get(h)
        out.extend(t.tx_hash() for t, r in zip(b.txs, b.results) if r.ok)
    return out
