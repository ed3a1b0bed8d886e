"""The B-FDL round hook: every federated round leaves a signed, tamper-evident trace on the PBFT
ledger, and the finished run binds its result files to the chain (paper 3.1 "Blockchain records
tracked the origin of each model update hash, the institution contributing to each update and the
timestamp"; 3.4; 3.5 "every budget change recorded"; objectives 5 and 6 of section 1.2).

At start (:meth:`LedgerHook.on_start`) it loads the institution keys from the keystore (outside
the run directory, :mod:`bfdl_tff.keys`), creates or loads the replica keys of the run's chain
(``<keystore>/ledger/<chain id>/``, listed in the genesis as ``Genesis.replicas``; every block is
stored with a commit certificate of those replicas), opens the run's ledger (``RunDir.ledger_dir``,
layout in :class:`~bfdl_tff.integration.ledger_api.LedgerFiles`) and has the ``admin`` key register
every hospital, the aggregator and an auditor; the genesis fixes the privacy-budget cap.
Registration is waited for: nothing later is valid without it.

After each round (:meth:`LedgerHook.on_round_end`) it records the round's ``2K + 5`` transactions
(:mod:`bfdl_tff.integration.round_txs`). Rounds are recorded in order 1, 2, 3, ...: a round that
would leave a gap on the chain is refused with the missing round named.

Durable rounds (issue 17.1, :mod:`bfdl_tff.integration.reconcile`): a round's transactions are
signed once and persisted in the outbox before any is submitted; :meth:`LedgerHook.durable_through`
tells the runner which rounds have their ``round.close`` committed (only those checkpoints are
marked done); on resume ``on_start`` reconciles the chain with the checkpoints and the outbox
(finish or abort the open round, re-submit persisted rounds, or refuse with one line).

At the end (:meth:`LedgerHook.on_end`, after the runner wrote ``summary.json`` and
``final_model.npz``) it waits for every round's commit, checks the chain holds rounds 1..N with
N = ``summary.json`` ``rounds``, submits ``run.finalize`` with the SHA-256 of ``metrics.csv``,
``summary.json``, ``config.yaml`` and ``final_model.npz`` (:mod:`bfdl_tff.integration.finalize`),
closes the cluster and writes ``ledger_summary.json`` (:mod:`bfdl_tff.integration.ledger_summary`).

Latency. Per round the training thread only copies the global weights and enqueues the round
(``hook_seconds``); hashing, off-chain storage, signing and the PBFT commit run on one background
thread in round order. A refused transaction or a failed commit is raised at the next hook call.
The privacy-budget cap is also checked before enqueuing, so an over-budget round stops training at
once (the contract is the authority and refuses it too). ``ledger.wait_for_commit: true`` makes
every round synchronous (for measurement).
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
import time
from typing import Sequence

from pathlib import Path

from ledger.cluster import LocalCluster, replica_public_keys
from ledger.contracts import Genesis
from ledger.errors import KeyFileError
from ledger.storage import LedgerStore

from bfdl_tff import faults
from bfdl_tff.config import ExperimentConfig
from bfdl_tff.errors import BfdlError
from bfdl_tff.federated.hooks import RoundContext, RoundHook, RunInfo
from bfdl_tff.integration import ledger_api as L
from bfdl_tff.integration.chain import FINALIZE_KIND, read_chain
from bfdl_tff.integration.errors import LedgerHookError, PrivacyBudgetExceeded, ReconcileError
from bfdl_tff.integration.finalize import finalize_payload
from bfdl_tff.integration.outbox import Outbox
from bfdl_tff.integration.reconcile import ChainRounds, Reconciler, longest_chain, submit_round
from bfdl_tff.integration.ledger_summary import RoundTiming, RunTiming, build_summary, previous_timings
from bfdl_tff.integration.round_txs import RoundJob, RoundSigner, save_openings
from bfdl_tff.integration.secagg import (
    LedgerKeyring,
    SecAggIdentities,
    register_kx_keys,
    roster_from_chain,
)
from bfdl_tff.io_utils import atomic_write_json
from bfdl_tff.keys import (
    ADMIN_NAME,
    AGGREGATOR_NAME,
    KeyStore,
    default_keystore_dir,
    ensure_outside,
    key_name,
    keystore_dir,
    kx_keys_dir,
    open_keystore,
    replica_keys_dir,
    role_of,
)
from bfdl_tff.runs import RunDir
from bfdl_tff.secagg.keys import KxKeyStore

AUDITOR_NAME = "auditor"


class LedgerHook:
    """:class:`bfdl_tff.federated.hooks.RoundHook` that records every round on the ledger."""

    def __init__(self, run: RunDir, *, keystore: KeyStore, keystore_root: Path | None = None, replicas: int = 4,
                 transport: str = "inproc", batch_size: int = 64, checkpoint_interval: int = 10,
                 epsilon_cap: float = 1.0, seed: int = 0, create_missing_keys: bool = True,
                 wait_for_commit: bool = False, request_summaries: bool = True, secagg: bool = False,
                 kx_store: KxKeyStore | None = None) -> None:
        """``keystore_root``: the local keystore directory that holds the replica keys
        (default :func:`bfdl_tff.keys.default_keystore_dir`); ``seed`` only seeds the in-process
        network's scheduler. ``secagg``: the run uses masked secure aggregation (issue 18): the
        hospitals' kx keys (``kx_store``, default ``<keystore_root>/kx``) are registered at start
        and every round must carry its protocol transcript (``RoundContext.secagg_transcript``)."""
        self.run = run
        self.files = L.LedgerFiles.of(run)
        self.outbox = Outbox(self.files.outbox_dir)
        self.keystore = keystore
        self.keystore_root = keystore_root if keystore_root is not None else default_keystore_dir()
        self.replicas = replicas
        self.transport = transport
        self.batch_size = batch_size
        self.checkpoint_interval = checkpoint_interval
        self.epsilon_cap = float(epsilon_cap)
        self.seed = seed
        self.create_missing_keys = create_missing_keys
        self.wait_for_commit = wait_for_commit
        self.request_summaries = request_summaries
        self.secagg = secagg
        self.kx_store = kx_store if kx_store is not None else KxKeyStore(kx_keys_dir(self.keystore_root))
        self.secagg_identities: SecAggIdentities | None = None  # set at start when ``secagg``
        self.cluster: LocalCluster | None = None
        self.genesis: Genesis | None = None
        self.signer: RoundSigner | None = None
        self.timing = RunTiming(transport=transport, keys_backend=keystore.backend,
                                wait_for_commit=wait_for_commit, rounds={})
        self._queue: "queue.Queue[RoundJob | None]" = queue.Queue()
        self._worker: threading.Thread | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._recorded: set[int] = set()  # rounds closed on chain or handed to the worker
        self._next_round = 1
        self._durable = 0  # every round 1.._durable has its round.close committed

    @property
    def chain_id(self) -> str:
        if self.genesis is None:
            raise LedgerHookError("the ledger hook has not started")
        return self.genesis.chain_id

    # ------------------------------------------------------------------ start
    def on_start(self, info: RunInfo) -> None:
        """Keys, genesis, cluster, registration, then the reconciliation of a resumed run with
        ``info.extra`` ``start_round`` (the newest checkpoint) and ``pending_rounds`` (the rounds
        the runner re-announces from their checkpoints)."""
        try:
            self._start(list(info.hospital_names), start_round=info.extra.get("start_round"),
                        pending_rounds=info.extra.get("pending_rounds"))
        except BaseException:
            self.close()
            raise

    def _start(self, hospitals: list[str], *, start_round: int | None = None,
               pending_rounds: Sequence[int] | None = None) -> None:
        t0 = time.perf_counter()
        names = {n: key_name(n) for n in hospitals + [AGGREGATOR_NAME, AUDITOR_NAME, ADMIN_NAME]}
        for n in hospitals:
            if role_of(n) != "hospital":
                raise LedgerHookError(f"hospital name {n!r} does not map to the hospital role")
        knames = list(dict.fromkeys(names.values()))
        if self.create_missing_keys:
            self.keystore.init_institutions(knames)
        # Load every signer now: a missing key or an unusable backend fails before training.
        signers = {k: self.keystore.signer(k) for k in knames}
        self.genesis = self._load_or_create_genesis(signers[ADMIN_NAME].public_key())
        # The genesis is the authority (on resume it may predate this config): no cap = inf.
        self.epsilon_cap = math.inf if self.genesis.epsilon_cap is None else float(self.genesis.epsilon_cap)
        self.cluster = self._open_cluster(self.genesis)
        self.signer = RoundSigner(signers=signers, names=names, chain_id=self.genesis.chain_id,
                                  offchain=self.files.offchain(), request_summaries=self.request_summaries)
        self._register(knames)
        kx = self._start_secagg(hospitals, names, signers) if self.secagg else {}
        # Resume: reconcile the chain with the checkpoints and the outbox; rounds closed on chain
        # are not recorded again.
        rec = Reconciler(self.cluster, self.files, self.outbox, self.signer, self.genesis, start_round,
                         pending_rounds).run()
        self._recorded = set(rec.closed)
        self._next_round = max(self._recorded, default=0) + 1
        self._durable = rec.durable_through
        self.timing.rounds = {r: t for r, t in previous_timings(self.files.summary_file).items() if r in self._recorded}
        atomic_write_json(self.files.registry_file, {
            "chain_id": self.genesis.chain_id,
            "keys_backend": self.keystore.backend,
            "keys_location": self.keystore.describe(),
            "institutions": {k: {"role": role_of(k), "pubkey": signers[k].public_key().hex(),
                                 **({"kx_pubkey": kx[k]} if k in kx else {})} for k in knames},
            "hospital_names": {n: names[n] for n in hospitals},
            **({"kx_location": f"local kx key store {self.kx_store.path}"} if self.secagg else {}),
        })
        self._worker = threading.Thread(target=self._run_worker, name="bfdl-ledger-hook", daemon=True)
        self._worker.start()
        self.timing.registration_seconds = time.perf_counter() - t0

    def _start_secagg(self, hospitals: list[str], names: dict[str, str], signers: dict) -> dict[str, str]:
        """Register the hospitals' kx keys (waited for) and read the protocol roster from the chain."""
        assert self.cluster is not None and self.signer is not None and self.genesis is not None
        kx = register_kx_keys(self.cluster, sign=self.signer.sign, signers=signers, kx_store=self.kx_store,
                              key_names=[names[h] for h in hospitals], create=self.create_missing_keys)
        roster = roster_from_chain(self.cluster, hospitals=hospitals,
                                   identity_keys={h: signers[names[h]].public_key().hex() for h in hospitals})
        self.secagg_identities = SecAggIdentities(
            run_id=self.genesis.chain_id, hospitals=tuple(hospitals), roster=roster,
            signers={h: signers[names[h]] for h in hospitals}, key_names={h: names[h] for h in hospitals},
            kx_store=self.kx_store,
            where=f"identity keys: {self.keystore.describe()}; kx keys: local {self.kx_store.path}; roster from the chain")
        return kx

    def secagg_keyring(self) -> LedgerKeyring:
        """The keyring the runner's masked aggregation uses (valid after :meth:`on_start`)."""
        return LedgerKeyring(self)

    def _load_or_create_genesis(self, admin_pubkey: bytes) -> Genesis:
        """The recorded genesis (resume), or a new one listing the run's replica keys."""
        if self.files.genesis_file.exists():
            try:
                return self.files.load_genesis()
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise LedgerHookError(f"{self.files.genesis_file}: unreadable genesis: {e}") from None
        cap = self.epsilon_cap if self.epsilon_cap > 0 else None
        chain_id = L.new_chain_id(self.run.name)
        replicas = replica_public_keys(replica_keys_dir(self.keystore_root, chain_id), self.replicas)
        genesis = Genesis(admins=(admin_pubkey.hex(),), epsilon_cap=cap, chain_id=chain_id, replicas=replicas)
        self.files.write_genesis(genesis)
        return genesis

    def _open_cluster(self, genesis: Genesis) -> LocalCluster:
        keys_dir = replica_keys_dir(self.keystore_root, genesis.chain_id)
        try:
            return LocalCluster(
                self.replicas, data_dir=self.files.replicas_dir, genesis=genesis, keys_dir=keys_dir, seed=self.seed,
                batch_size=self.batch_size, transport=self.transport, checkpoint_interval=self.checkpoint_interval)
        except KeyFileError as e:
            raise LedgerHookError(
                f"{e} (a resumed run needs the keystore it started with: keys.path or $BFDL_KEYSTORE)") from None

    def _register(self, knames: list[str]) -> None:
        assert self.cluster is not None and self.signer is not None
        registered = L.registered_keys(self.cluster)
        txs = [self.signer.sign(ADMIN_NAME, "registry.register",
                                {"role": role_of(k), "name": k, "pubkey": self.signer.signers[k].public_key().hex()})
               for k in knames if self.signer.signers[k].public_key().hex() not in registered]
        for tx, r in zip(txs, self.cluster.submit_many(txs)):
            if not r.ok:
                raise LedgerHookError(f"{self.files.root}: registering {tx.payload['name']} was refused: "
                                      f"{r.code} {r.message}")

    # ------------------------------------------------------------------ per round
    def on_round_end(self, ctx: RoundContext) -> None:
        t0 = time.perf_counter()
        if self.signer is None:
            raise LedgerHookError("LedgerHook.on_round_end called before on_start")
        self._raise_pending()
        if not self._admit(ctx):
            return  # already on the chain or queued (resume): idempotent per round
        self._enqueue(RoundJob.from_context(ctx))
        if self.wait_for_commit:
            self._queue.join()
            self._raise_pending()
        self.timing.rounds[ctx.round_num].hook_seconds = time.perf_counter() - t0

    def _admit(self, ctx: RoundContext) -> bool:
        """Check a round before anything of it is queued; False if it is already recorded."""
        r = int(ctx.round_num)
        if r in self._recorded:
            return False
        if r != self._next_round:
            raise LedgerHookError(
                f"round {r}: round {self._next_round} is not on the ledger "
                f"(last recorded round {self._next_round - 1}); refusing to leave a gap in the chain")
        assert self.signer is not None
        if self.secagg and getattr(ctx, "secagg_transcript", None) is None:
            raise LedgerHookError(f"round {r}: the run uses masked secure aggregation but the round carries no "
                                  "protocol transcript; nothing of this round was submitted")
        missing = [p for p in ctx.participants if p not in ctx.client_commitments]
        if missing:
            raise LedgerHookError(f"round {r}: no update commitment from {', '.join(missing)}")
        unknown = [p for p in ctx.participants if p not in self.signer.names]
        if unknown:
            raise LedgerHookError(f"round {r}: participants {unknown} were not registered at start")
        eps = ctx.privacy.get("epsilon") if ctx.privacy else None
        if eps is not None and math.isfinite(float(eps)) and float(eps) > self.epsilon_cap + 1e-12:
            raise PrivacyBudgetExceeded(
                f"round {r}: epsilon {float(eps):.4f} exceeds the ledger's privacy budget cap "
                f"{self.epsilon_cap:.4f}; nothing of this round was submitted")
        return True

    def _enqueue(self, job: RoundJob) -> None:
        self.timing.rounds[job.round_num] = RoundTiming(round_num=job.round_num, round_seconds=job.round_seconds)
        self._recorded.add(job.round_num)
        self._next_round = max(self._next_round, job.round_num + 1)
        self._queue.put(job)

    # ------------------------------------------------------------------ worker
    def _run_worker(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                if self._error is None:
                    self._process(job)
            except BaseException as e:  # surfaced at the next hook call
                self._error = e
            finally:
                self._queue.task_done()

    def _process(self, job: RoundJob) -> None:
        """Sign once and persist (outbox), write the openings, submit, report the round durable."""
        assert self.cluster is not None and self.signer is not None
        t0 = time.perf_counter()
        timing = self.timing.rounds[job.round_num]
        persisted = self.outbox.has(job.round_num)  # signed before a crash: never signed again
        if persisted:
            signed = self.outbox.load(job.round_num, chain_id=self.chain_id)
        else:
            signed = self.signer.round_txs(job)  # everything signed before anything is submitted
            self.outbox.save(signed, chain_id=self.chain_id)
        save_openings(self.files.openings_dir, signed.openings)
        faults.point("before_open", job.round_num)
        t_commit = time.perf_counter()
        submit_round(self.cluster, self.files, signed, who=self.signer.who, resubmit=persisted)
        timing.commit_seconds = time.perf_counter() - t_commit
        timing.sign_seconds = signed.sign_seconds
        timing.ledger_seconds = time.perf_counter() - t0
        faults.point("after_close", job.round_num)
        self._durable = max(self._durable, job.round_num)

    def durable_through(self) -> int:
        """The last round ``r`` such that rounds 1..r all have their ``round.close`` committed (the
        runner marks only those checkpoints done; :func:`bfdl_tff.federated.hooks.durable_through`)."""
        return self._durable

    def _raise_pending(self) -> None:
        if self._error is not None:
            e = self._error
            if isinstance(e, BfdlError):
                raise e
            raise LedgerHookError(f"ledger hook failed: {type(e).__name__}: {e}") from e

    # ------------------------------------------------------------------ end
    def drain(self) -> None:
        """Wait until every enqueued round is committed (or failed)."""
        if self._worker is not None:
            self._queue.join()

    def on_end(self, summary: dict) -> None:
        """Wait for every round, bind the result files with ``run.finalize``, close, summarise.

        ``summary`` is what the runner wrote to ``summary.json``; the file itself is what is hashed."""
        t0 = time.perf_counter()
        done = False
        try:
            self.drain()
            self._raise_pending()
            self._finalize()
            done = True
        finally:
            self.timing.end_wait_seconds = time.perf_counter() - t0
            if self.cluster is not None:
                self.timing.bytes_on_chain = self.cluster.bytes_on_chain()
            self.close()
            if done:
                self.write_summary()
            else:
                with contextlib.suppress(Exception):  # keep the original error
                    self.write_summary()

    def _finalize(self) -> None:
        assert self.cluster is not None and self.signer is not None
        try:
            rounds = int(self.run.summary()["rounds"])
        except (KeyError, TypeError, ValueError) as e:
            raise LedgerHookError(f"{self.run.summary_file}: no round count ({e})") from None
        assert self.genesis is not None
        view = longest_chain(self.files, self.genesis)  # committed blocks, even if a replica lags
        on_chain = sorted(ChainRounds.of(view).closed)
        if on_chain != list(range(1, rounds + 1)):
            gap = next((r for r in range(1, rounds + 1) if r not in on_chain), None)
            what = f"round {gap} is not on the chain" if gap else f"the chain has rounds beyond {rounds}"
            raise LedgerHookError(f"{self.run.summary_file}: {rounds} rounds, but {what}; run.finalize not submitted")
        try:
            payload = finalize_payload(self.run, rounds=rounds)
        except FileNotFoundError as e:
            raise LedgerHookError(str(e)) from None
        done = view.state.query("run/final") if view is not None else None
        if done is not None:  # on_end again after a crash: the record must be this run's
            if {"rounds": done["rounds"], "files": done["files"]} == payload:
                return
            raise LedgerHookError(f"{self.files.root}: the chain's {FINALIZE_KIND} record (height {done['height']}) "
                                  "binds other result files than those in the run directory")
        tx = self.signer.sign(AGGREGATOR_NAME, FINALIZE_KIND, payload)
        r = self.cluster.submit(tx)
        if not r.ok:
            raise LedgerHookError(f"{self.files.root}: the ledger refused {FINALIZE_KIND}: {r.code} {r.message}")

    def write_summary(self) -> None:
        """``ledger_summary.json`` from the committed chain (replica 0) and the measured timings."""
        dbs = self.files.replica_dbs()
        if self.genesis is None or not dbs:
            return
        heads = []
        for db in dbs:
            with LedgerStore(db, verify="none") as store:
                h, x = store.head()
                heads.append((h, x.hex() if x is not None else None))
        chain = read_chain(dbs[0], self.genesis)
        self.timing.bytes_off_chain = L.dir_bytes(self.files.offchain_dir)
        atomic_write_json(self.files.summary_file, build_summary(chain, heads, self.timing))

    def close(self) -> None:
        """Stop the worker and the cluster (idempotent; the runner calls it in its ``finally``)."""
        if self._closed:
            return
        self._closed = True
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join()
            self._worker = None
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self) -> "LedgerHook":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_ledger_hook(cfg: ExperimentConfig, run: RunDir) -> LedgerHook:
    """The hook for ``cfg.arm == "bfdl"`` with ``cfg.ledger.enabled``.

    Keys: ``cfg.keys`` (the local keystore :func:`bfdl_tff.keys.keystore_dir`, refused inside the
    run directory, holds the institution keys of the local backend, the replica keys and, for
    ``privacy.secure_aggregation: masked``, the hospitals' kx keys under ``kx/``); privacy cap:
    ``cfg.ledger.epsilon_cap`` or, when 0, ``cfg.privacy.target_epsilon``.
    """
    root = keystore_dir(cfg.keys)  # institution keys (local backend) and the replica keys
    ensure_outside(root, run.path)
    return LedgerHook(
        run,
        keystore=open_keystore(cfg.keys),
        keystore_root=root,
        replicas=cfg.ledger.replicas,
        transport=cfg.ledger.transport,
        batch_size=cfg.ledger.batch_size,
        checkpoint_interval=cfg.ledger.checkpoint_interval,
        epsilon_cap=cfg.ledger.epsilon_cap or cfg.privacy.target_epsilon,
        seed=cfg.seed,
        create_missing_keys=cfg.keys.create_missing,
        wait_for_commit=cfg.ledger.wait_for_commit,
        secagg=cfg.privacy.aggregation == "masked",
        kx_store=KxKeyStore(kx_keys_dir(root)),
    )


def attach_hooks(cfg: ExperimentConfig, run: RunDir, hooks: Sequence[RoundHook] = ()) -> list[RoundHook]:
    """``hooks`` plus the ledger hook when the config asks for it (``bfdl`` arm, ledger on)."""
    out = list(hooks)
    if cfg.arm == "bfdl" and cfg.ledger.enabled:
        out.append(build_ledger_hook(cfg, run))
    return out


__all__ = ["AUDITOR_NAME", "LedgerHook", "LedgerHookError", "PrivacyBudgetExceeded", "ReconcileError",
           "attach_hooks", "build_ledger_hook"]
