"""The experiment runner: three arms over the same data, model and budget (paper 2.1, 3.1-3.5).

``run_experiment(cfg, run_dir, *, hooks=(), resume=False)`` trains one arm:

* ``centralized``: Keras on the pooled training images of all hospitals (the non-private upper
  reference the paper compares against), ``rounds * local_epochs`` epochs (or
  ``federated.centralized_epochs``);
* ``federated``: TFF weighted FedAvg (``n_k / n``), no privacy layer;
* ``bfdl``: the paper's B-FDL: DP (``privacy.mode``: ``client`` DP-FedAvg or ``sample`` DP-SGD),
  secure aggregation (``privacy.secure_aggregation``: ``masked`` = the cryptographic protocol of
  :mod:`bfdl_tff.secagg`, keys from the ledger hook or ephemeral; ``tff_secure_sum``; ``none``)
  and the ledger hook passed in ``hooks``.

The loop (:meth:`Runner.fit`, modelled on Flower's ``Server.fit``) drives an engine
(:mod:`~bfdl_tff.federated.engine`; :mod:`~bfdl_tff.federated.tff_engine`,
:mod:`~bfdl_tff.federated.centralized`). Each round, one small step each: train and evaluate on the
patient-disjoint test split (:meth:`Runner.train_round`), write ``checkpoints/round_NNNN.*`` and
the metrics (:meth:`Runner.checkpoint`), call the hooks (:meth:`Runner.announce`), then record the
rounds that are durable (:meth:`Runner.round_durable`: ``hooks_done`` in each checkpoint whose round
every hook has made durable, :func:`~bfdl_tff.federated.hooks.durable_through` — the ledger hook
commits in the background, so this may lag a round behind; old checkpoints pruned, never one that
is not done). ``resume=True`` continues from the newest complete checkpoint: the state
(model, server optimizer, aggregator state incl. DP noise seed, secure-sum range estimates) and the
metrics rows come from the checkpoint and every random choice of round ``t`` is derived from
(seed, t), so a resumed run repeats no round, skips none and gives the same result as an
uninterrupted one. Every round whose hooks are not done is re-announced on resume, in order (hooks
must be idempotent per round; the ledger hook reconciles the chain first, issue 17.1). A run with
hooks is complete only when the hooks' ``on_end`` returned (``finalized`` in the last checkpoint):
``--resume`` of a run killed between its last round and ``on_end`` runs ``on_end`` with the results
already written. Crash injection (tests): :mod:`bfdl_tff.faults` steps ``after_checkpoint``,
``after_queue``, ``after_durable``, ``before_finalize``. The runner owns the hooks' lifecycle:
``close()`` on every hook in its ``finally``.

Privacy (issue 16): each hospital's training statistics go to its own
``hospitals/<name>/local_metrics.csv`` (:mod:`~bfdl_tff.federated.hospital_logs`; not to the
``bfdl`` arm's server files), thresholds come from summed per-hospital validation histograms
(:mod:`~bfdl_tff.federated.federated_eval`), each hospital's epsilon per round goes to
``privacy_rounds.csv`` and the hooks (:mod:`~bfdl_tff.federated.privacy_rounds`), and
``privacy.noise_seed: system`` draws the DP noise from the OS CSPRNG (:mod:`~bfdl_tff.federated.noise`).

Errors before training (``BfdlError``): unknown arm, a hospital without training examples,
model input size / channels different from the data, an epsilon that the schedule cannot reach
(``accounting.PrivacyBudgetError``), delta not below ``1/n``, an empty test split.
Secure aggregation aborted (masked; a malformed or out-of-range masked vector, a bad signature, a
duplicate message, fewer than t survivors): nothing of the round is applied - the global model
and the whole TFF state stay the previous round's - the reason is logged (WARNING), written to
``metrics.csv`` (``secagg_aborted``) and ``summary.json`` (``secagg_aborted_rounds``), and the
round's transcript with the reason goes to the hooks (the ledger records it); the run continues
with the next round (fresh protocol keys). The round still counts for privacy accounting: the
hospitals ran their DP-SGD and sent their masked outputs.
NaN/Inf: a hospital whose update is non-finite is rejected (TFF zeroes it, weight 0) and the
reason logged and written to ``metrics.csv`` (``rejected``); a non-finite aggregate is rejected by
TFF's finalizer (``update_non_finite``), logged, and the global model is left unchanged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import secrets
import sys
import time
from pathlib import Path
from typing import Any, ContextManager, Sequence

import numpy as np

from bfdl_tff import faults
from bfdl_tff.config import ARMS, ExperimentConfig
from bfdl_tff.errors import BfdlError, ConfigError
from bfdl_tff.federated import accounting, noise
from bfdl_tff.federated.checkpoints import Checkpoint, CheckpointStore, json_safe
from bfdl_tff.federated.engine import Engine
from bfdl_tff.federated.hooks import RoundContext, RoundHook, RunInfo, SecAggKeyringProvider, close_hooks, durable_through
from bfdl_tff.federated.hospital_logs import HospitalLogs
from bfdl_tff.federated.privacy_rounds import PrivacyRounds
from bfdl_tff.federated.inputs import FederationData, concat_sets, load_data, validate_setup
from bfdl_tff.federated.reporting import (
    BASE_COLUMNS,
    EXTRA_COLUMNS,
    MetricsLog,
    build_summary,
    finite_or_none,
    privacy_record,
    round_row,
    write_metrics_csv,
)
from bfdl_tff.federated.results import RoundRecord
from bfdl_tff.hashing import weights_digest
from bfdl_tff.io_utils import atomic_write_json
from bfdl_tff.runs import RunDir

log = logging.getLogger("bfdl_tff.federated")


class TrainingError(BfdlError):
    """Training cannot start or continue (names the cause)."""


def _all_finite(weights: Sequence[np.ndarray]) -> bool:
    return all(np.all(np.isfinite(w)) for w in weights)


class Runner:
    """One arm's run into one run directory: build, restore, fit, finish."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        run_dir: RunDir,
        data: FederationData,
        model_cfg: Any,
        sched: accounting.PrivacySchedule,
        *,
        hooks: Sequence[RoundHook] = (),
        resume: bool = False,
        progress: bool = True,
    ) -> None:
        self.cfg, self.rd, self.data, self.model_cfg, self.sched = cfg, run_dir, data, model_cfg, sched
        self.hooks, self.resume, self.progress = list(hooks), resume, progress
        self.task = data.resolved_task()
        self.findings = list(self.task.labels)  # metrics.csv's auc_<label> columns follow the task
        self.ckpts = CheckpointStore(run_dir.checkpoints_dir)
        self.metrics = MetricsLog(run_dir.metrics_file, self.findings, tensorboard_dir=run_dir.tensorboard_dir)
        self.num_examples = {n: int(len(data.train[n])) for n in data.names}
        self.privacy = privacy_record(cfg, sched)
        self.privacy_rounds = PrivacyRounds(sched, run_dir.privacy_rounds_file)  # per hospital (issue 16.2)
        self.start_round = 0  # rounds already done (resume)
        self.cum_bytes = 0
        self.last_eval: dict | None = None  # the newest evaluation (summary.json falls back to it)
        self.undone: list[Checkpoint] = []  # checkpoints whose round the hooks have not made durable

    # ---- the run ------------------------------------------------------------------------
    def run(self) -> dict:
        """Train every remaining round; write the final model and ``summary.json``; return it."""
        t_start = time.perf_counter()
        try:
            self.build()
            with self.tff_context():
                state, pending = self.restore()
                state = self.start_hooks(state, pending)
                self.attach_keyring()
                state = self.fit(state)
                weights, evaluation = self.final_model(state)
            return self.finish(weights, evaluation, time.perf_counter() - t_start)
        finally:
            self.metrics.close()

    def fit(self, state: Any) -> Any:
        """The round loop: train, checkpoint, announce, make durable, report."""
        bar = self.progress_bar()
        try:
            for r in range(self.start_round + 1, self.engine.rounds + 1):
                state, rec = self.train_round(state, r)
                ckpt = self.checkpoint(state, rec)
                faults.point("after_checkpoint", r)
                self.announce(rec, ckpt)
                faults.point("after_queue", r)
                self.round_durable(r)
                bar.update(1)
                bar.set_postfix(auc=f"{rec.evaluation.macro_auc:.3f}" if rec.evaluation else "-",
                                loss=f"{rec.result.train_loss:.3f}")
        finally:
            bar.close()
        return state

    # ---- before the first round ---------------------------------------------------------
    def build(self) -> None:
        """The engine and the evaluator. TFF processes are built before any Keras model (Keras
        invalidates eager models once TFF traces ``model_fn`` in a graph)."""
        from bfdl_tff.federated import model_bridge
        from bfdl_tff.federated.centralized import CentralizedEngine
        from bfdl_tff.federated.federated_eval import FederatedValidationEvaluator, plain_sum
        from bfdl_tff.federated.secure_histograms import histogram_summer
        from bfdl_tff.federated.tff_engine import FederatedEngine

        cfg, data = self.cfg, self.data
        bundle = model_bridge.build_bundle(self.model_cfg, class_weights=self.class_weights())
        tff_engine = FederatedEngine(cfg, data, bundle, self.sched) if cfg.arm != "centralized" else None
        init_keras = bundle.keras(seed=cfg.resolved_seeds()["model_init"])
        init_weights = [np.asarray(w) for w in init_keras.get_weights()]
        if not _all_finite(init_weights):
            raise TrainingError("the initial model has non-finite weights")
        # thresholds from the hospitals' summed validation-score histograms (issue 16.4); the bfdl
        # arm sums them securely (masked protocol or TFF's secure sum), like its training updates
        p = cfg.privacy
        summer = plain_sum if tff_engine is None else histogram_summer(
            tff_engine.aggregation, threshold=p.secagg_threshold, neighbours=p.secagg_neighbours,
            consistency_check=p.secagg_consistency_check)
        val_sets = {n: (v.x, v.y) for n in data.names if (v := data.val.get(n)) is not None and len(v)}
        self.evaluator = FederatedValidationEvaluator(
            bundle.keras(), x_test=data.test.x, y_test=data.test.y, val_sets=val_sets, findings=self.findings,
            threshold_rule=cfg.eval.threshold_rule, fixed_threshold=cfg.eval.fixed_threshold,
            summer=summer, kind=self.task.kind,
        )
        self.engine: Engine
        if tff_engine is None:
            self.engine = CentralizedEngine(cfg, data, bundle, init_keras)
        else:
            tff_engine.attach_initial_model(init_keras)
            tff_engine.attach_hospital_logs(HospitalLogs(self.rd.hospital_metrics_file))
            self.engine = tff_engine
        self.num_params = int(sum(w.size for w in init_weights))

    def class_weights(self) -> np.ndarray | None:
        """Positive-class weights from the pooled training labels (an aggregate label statistic
        the server learns), if the model config asks for inverse-frequency weighting."""
        if self.model_cfg.class_weighting != "inverse_frequency":
            return None
        from bfdl_tff.models.losses import positive_weights

        _, y_all, _ = concat_sets([self.data.train[n] for n in self.data.names])
        return positive_weights(y_all, max_weight=self.model_cfg.pos_weight_max)

    def tff_context(self) -> ContextManager[Any]:
        from bfdl_tff import tff_runtime

        kind = self.engine.context_kind
        return tff_runtime.execution_context(kind) if kind else contextlib.nullcontext()

    def restore(self) -> tuple[Any, list[Checkpoint]]:
        """The state to start from, and the checkpoints whose hooks are not done, by round."""
        done = self.ckpts.complete() if self.resume else []
        if not self.resume:
            self.ckpts.clear()
        if not done:
            self.metrics.restore([])
            return self.engine.initial_state(), []
        latest = done[-1]
        self.start_round, self.cum_bytes = latest.round_num, int(latest.meta["cum_bytes"])
        self.metrics.restore(latest.meta["rows"])
        log.info("resuming after round %d from %s", latest.round_num, latest.state_path)
        state = self.engine.load_state(self.ckpts.load_arrays(latest))
        return state, [c for c in done if not c.hooks_done]

    def start_hooks(self, state: Any, pending: list[Checkpoint]) -> Any:
        """``on_start``; then re-announce every checkpointed round whose hooks are not done; the
        state to continue from."""
        info = RunInfo(
            run_dir=self.rd.path,
            config=self.cfg,
            hospital_names=list(self.data.names),
            num_examples=dict(self.num_examples),
            num_params=self.num_params,
            extra={"arm": self.cfg.arm, "privacy": dict(self.privacy), "start_round": self.start_round,
                   "rounds": self.engine.rounds, "pending_rounds": [c.round_num for c in pending]},
        )
        for h in self.hooks:
            h.on_start(info)
        self.undone = list(pending)
        weights = {self.start_round: self.engine.global_weights(state)} if pending else {}
        for ckpt in pending:  # an older round still in flight at the crash: its own weights
            if ckpt.round_num not in weights:
                weights[ckpt.round_num] = self.engine.global_weights(self.engine.load_state(self.ckpts.load_arrays(ckpt)))
        if len(weights) > 1:  # an engine may load a state into its model (centralized): back to the newest
            state = self.engine.load_state(self.ckpts.load_arrays(self.ckpts.latest()))
        for ckpt in pending:
            ctx = self.context_from_checkpoint(ckpt, weights[ckpt.round_num])
            for h in self.hooks:
                h.on_round_end(ctx)
        if pending:
            self.round_durable(self.start_round)
        return state

    def attach_keyring(self) -> None:
        """Masked secure aggregation: the protocol identities of the ledger hook (keystore keys,
        roster from the chain), else ephemeral in-memory keys (no ledger to register them)."""
        attach = getattr(self.engine, "attach_secagg_keyring", None)
        if attach is None or getattr(self.engine, "aggregation", None) != "masked":
            return
        from bfdl_tff.federated.secure_histograms import MaskedHistogramSum
        from bfdl_tff.secagg.keyring import EphemeralKeyring

        providers = [h for h in self.hooks if isinstance(h, SecAggKeyringProvider)]
        if len(providers) > 1:
            raise TrainingError("more than one hook provides secure-aggregation keys")
        keyring = providers[0].secagg_keyring() if providers else EphemeralKeyring(
            self.data.names, run_id=f"{self.cfg.name}-{secrets.token_hex(4)}",
            noise_seed=noise.keyring_noise_seed(self.cfg))
        attach(keyring)
        if isinstance(self.evaluator.summer, MaskedHistogramSum):  # the validation histograms: same keys
            self.evaluator.summer.keyring = keyring
        log.info("masked secure aggregation; keys: %s", keyring.describe())

    # ---- one round ----------------------------------------------------------------------
    def train_round(self, state: Any, r: int) -> tuple[Any, RoundRecord]:
        """Train round ``r``, evaluate if due, account privacy and bytes: the round's record."""
        t0 = time.perf_counter()
        state, rr = self.engine.run_round(state, r)
        train_s = time.perf_counter() - t0
        if rr.secagg_aborted:
            log.warning("round %d: secure aggregation aborted, global model unchanged (recorded on the ledger): %s",
                        r, rr.secagg_aborted)
        gw = self.engine.global_weights(state)
        if not _all_finite(gw):
            raise TrainingError(f"round {r}: the global model has non-finite weights; stopping (checkpoint of round {r - 1} kept)")
        t1 = time.perf_counter()
        ev = None
        if r % self.cfg.eval.every == 0 or r == self.engine.rounds:
            ev = self.evaluator.evaluate(gw)
            self.last_eval = ev.to_dict()
        eval_s = time.perf_counter() - t1
        eps = self.sched.epsilon_after(r) if self.sched.mode != "none" else math.inf
        self.cum_bytes += rr.bytes_broadcast + rr.bytes_uploaded
        row = round_row(r, rr, ev, train_s=train_s, eval_s=eval_s, epsilon=eps, cum_bytes=self.cum_bytes,
                        findings=self.findings)
        return state, RoundRecord(round_num=r, result=rr, global_weights=gw, evaluation=ev, train_s=train_s,
                                  eval_s=eval_s, epsilon=eps if math.isfinite(eps) else None, row=finite_or_none(row))

    def checkpoint(self, state: Any, rec: RoundRecord) -> Checkpoint:
        """Save the round's checkpoint (state, then metadata), then ``metrics.csv`` and TensorBoard."""
        rr = rec.result
        meta = {
            "rows": self.metrics.rows + [rec.row],
            "cum_bytes": self.cum_bytes,
            "participants": rr.participants,
            "num_examples": self.examples_of(rr.participants),
            "commitments": rr.commitments,
            "privacy": self.round_privacy(rec),
            "round_seconds": rec.seconds,
            "global_digest": weights_digest(rec.global_weights),
            "last_eval": self.last_eval,
            "hooks_done": not self.hooks,
            "secagg_transcript": rr.secagg_transcript,
        }
        ckpt = self.ckpts.save(rec.round_num, self.engine.state_arrays(state), meta)
        if self.hooks:
            self.undone.append(ckpt)
        self.metrics.append(rec.row)
        self.privacy_rounds.record(rec.round_num)
        for n, why in rr.rejected.items():
            log.warning("round %d: update of %s rejected: %s", rec.round_num, n, why)
        if rr.update_non_finite:
            log.warning("round %d: TFF finalizer rejected the aggregated update (update_non_finite=1)", rec.round_num)
        return ckpt

    def announce(self, rec: RoundRecord, ckpt: Checkpoint) -> None:
        """Hand the round to every hook (``on_round_end``)."""
        if not self.hooks:
            return
        ctx = RoundContext(
            round_num=rec.round_num,
            run_dir=self.rd.path,
            global_weights=rec.global_weights,
            participants=list(rec.result.participants),
            num_examples=self.examples_of(rec.result.participants),
            client_commitments=dict(rec.result.commitments),
            metrics=dict(rec.row),
            privacy=self.round_privacy(rec),
            round_seconds=rec.seconds,
            checkpoint_path=ckpt.state_path,
            secagg_transcript=rec.result.secagg_transcript,
        )
        for h in self.hooks:
            h.on_round_end(ctx)

    def round_durable(self, announced: int) -> None:
        """Mark ``hooks_done`` in every checkpoint whose round all hooks have made durable (rounds up
        to ``announced`` were handed to them); prune old checkpoints, never one not yet done."""
        through = durable_through(self.hooks, announced)
        while self.undone and self.undone[0].round_num <= through:
            self.mark_done(self.undone.pop(0))
        self.ckpts.prune(self.cfg.federated.keep_checkpoints, protect=[c.round_num for c in self.undone])

    def mark_done(self, ckpt: Checkpoint) -> None:
        self.ckpts.mark(ckpt, hooks_done=True)
        faults.point("after_durable", ckpt.round_num)

    # ---- after the last round -----------------------------------------------------------
    def final_model(self, state: Any) -> tuple[list[np.ndarray], dict]:
        """The final global weights and their evaluation (the newest one, else evaluated now)."""
        gw = self.engine.global_weights(state)
        evaluation = self.last_eval
        latest = self.ckpts.latest()
        if evaluation is None and latest is not None:
            evaluation = latest.meta.get("last_eval")
        if evaluation is None:
            evaluation = self.evaluator.evaluate(gw).to_dict()
        return gw, evaluation

    def finish(self, weights: list[np.ndarray], evaluation: dict, wall_s: float) -> dict:
        """``final_model.npz``, ``summary.json``, then the hooks' ``on_end``; then every checkpoint
        is done and the last one ``finalized``. A resumed run that trained no round keeps the
        results it already wrote (the ledger may have bound them with ``run.finalize``)."""
        summary = self.written_summary()
        if summary is None:
            self.rd.save_model(weights)
            self.rd.save_predictions(image_ids=self.data.test.images, y_true=self.data.test.y,
                                     scores=self.evaluator.predict_test(weights), labels=self.findings)
            summary = build_summary(self.cfg, rows=self.metrics.rows, evaluation=evaluation, sched=self.sched,
                                    data=self.data, final_weights=weights, wall_s=wall_s, num_params=self.num_params,
                                    extra={**self.engine.summary_extra(), **self.evaluator.summary_extra()})
            atomic_write_json(self.rd.summary_file, json_safe(summary))
        faults.point("before_finalize", self.engine.rounds)
        for h in self.hooks:
            h.on_end(summary)
        if self.hooks:
            while self.undone:
                self.mark_done(self.undone.pop(0))
            latest = self.ckpts.latest()
            if latest is not None:
                self.ckpts.mark(latest, finalized=True)
            self.ckpts.prune(self.cfg.federated.keep_checkpoints)
        return summary

    def written_summary(self) -> dict | None:
        """``summary.json`` of this run if no round was trained in this process and every result
        file is there (a run resumed after its last round), else ``None``."""
        rd = self.rd
        if self.start_round < self.engine.rounds or not (rd.summary_file.is_file() and rd.final_model_file.is_file()):
            return None
        try:
            return json.loads(rd.summary_file.read_text(encoding="utf-8"))
        except ValueError:
            return None

    # ---- small helpers ------------------------------------------------------------------
    def examples_of(self, participants: Sequence[str]) -> dict[str, int]:
        """Training examples per participant (``central``: all of them)."""
        total = sum(self.num_examples.values())
        return {n: self.num_examples.get(n, total) for n in participants}

    def round_privacy(self, rec: RoundRecord) -> dict[str, Any]:
        hospitals = self.privacy_rounds.after(rec.round_num)
        return {**self.privacy, "epsilon": rec.epsilon, **({"hospitals": hospitals} if hospitals else {})}

    def context_from_checkpoint(self, ckpt: Checkpoint, gw: list[np.ndarray]) -> RoundContext:
        meta = ckpt.meta
        return RoundContext(
            round_num=ckpt.round_num,
            run_dir=self.rd.path,
            global_weights=gw,
            participants=list(meta["participants"]),
            num_examples=dict(meta["num_examples"]),
            client_commitments=dict(meta["commitments"]),
            metrics=dict(meta["rows"][-1]),
            privacy=dict(meta["privacy"]),
            round_seconds=float(meta["round_seconds"]),
            checkpoint_path=ckpt.state_path,
            secagg_transcript=meta.get("secagg_transcript"),
        )

    def progress_bar(self) -> Any:
        from tqdm import tqdm

        return tqdm(total=self.engine.rounds, initial=self.start_round, desc=f"{self.cfg.name}:{self.cfg.arm}", unit="round",
                    disable=None if self.progress else True, file=sys.stderr)


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------


def _setup_logging(log_file: Path) -> logging.Handler:
    h = logging.FileHandler(log_file, encoding="utf-8")
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("bfdl_tff")
    root.addHandler(h)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return h


def _finished_summary(cfg: ExperimentConfig, rd: RunDir, hooks: Sequence[RoundHook]) -> dict | None:
    """The summary of a run that is already complete (every round checkpointed; with hooks: their
    ``on_end`` returned, ``finalized`` in the last checkpoint)."""
    if not rd.summary_file.exists():
        return None
    latest = CheckpointStore(rd.checkpoints_dir).latest()
    rounds_wanted = cfg.federated.rounds
    if cfg.arm == "centralized" and cfg.federated.centralized_epochs > 0:
        rounds_wanted = cfg.federated.centralized_epochs
    if latest is not None and latest.round_num >= rounds_wanted and (latest.meta.get("finalized") or not hooks):
        log.info("run in %s is complete (%d rounds); nothing to resume", rd.path, latest.round_num)
        return json.loads(rd.summary_file.read_text(encoding="utf-8"))
    return None


def run_experiment(
    cfg: ExperimentConfig,
    run_dir: RunDir | str | Path,
    *,
    hooks: Sequence[RoundHook] = (),
    resume: bool = False,
    data: FederationData | None = None,
    progress: bool = True,
    config_source: str | None = None,
) -> dict:
    """Train ``cfg.arm`` into ``run_dir`` (a :class:`bfdl_tff.runs.RunDir` or a path); return the summary.

    ``data`` injects an in-memory federation (tests, benchmarks); by default it is prepared and
    loaded with the data API from ``cfg.data``. ``config_source``: the file errors about the
    config name (the user's file; default the run's ``config.yaml``). Every hook is closed before
    this returns or raises.
    """
    from bfdl_tff.models import registry

    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir), cfg)
    rd.path.mkdir(parents=True, exist_ok=True)
    source = config_source or str(rd.config_file)
    handler: logging.Handler | None = None
    ok = False
    try:
        if cfg.arm not in ARMS:
            raise ConfigError(source, "arm", f"unknown arm {cfg.arm!r} (one of {', '.join(ARMS)})")
        noise.check_noise_seed(cfg, source=source)
        handler = _setup_logging(rd.log_file)
        done = _finished_summary(cfg, rd, hooks) if resume else None
        if done is None:
            model_cfg = registry.load_model_config(cfg.model.config, **cfg.model.overrides)
            if data is None:
                data = load_data(cfg, rd, with_masks=registry.uses_masks(model_cfg))
            task = data.resolved_task()
            model_cfg = registry.for_task(model_cfg, kind=task.kind, num_outputs=task.num_outputs,
                                          fixed=cfg.model.overrides, source=source)
            validate_setup(cfg, data, model_cfg, source=source)
            sched = accounting.schedule_for_config(
                cfg, {n: len(data.train[n]) for n in data.names}, source=source,
                num_patients={n: len(np.unique(data.train[n].patient_ids)) for n in data.names})
            rd.write_privacy(json_safe(sched.to_record()))
            done = Runner(cfg, rd, data, model_cfg, sched, hooks=hooks, resume=resume, progress=progress).run()
        ok = True
        return done
    finally:
        close_hooks(hooks, raise_errors=ok)
        if handler is not None:
            logging.getLogger("bfdl_tff").removeHandler(handler)
            handler.close()


__all__ = [
    "ARMS",
    "BASE_COLUMNS",
    "EXTRA_COLUMNS",
    "FederationData",
    "Runner",
    "TrainingError",
    "load_data",
    "run_experiment",
    "validate_setup",
    "write_metrics_csv",
]
