"""The experiment runner: three arms over the same data, model and budget (paper 2.1, 3.1-3.5).

``run_experiment(cfg, run_dir, *, hooks=(), resume=False)`` trains one arm:

* ``centralized``: Keras on the pooled training images of all hospitals (the non-private upper
  reference the paper compares against), ``rounds * local_epochs`` epochs (or
  ``federated.centralized_epochs``);
* ``federated``: TFF weighted FedAvg (``n_k / n``), no privacy layer;
* ``bfdl``: the paper's B-FDL: DP (``privacy.mode``: ``client`` DP-FedAvg or ``sample`` DP-SGD),
  secure aggregation (``privacy.secure_sum``) and the ledger hook passed in ``hooks``.

Every round: train (one TFF computation per hospital's client work, then the aggregation; see
``processes.FederatedTrainer``), evaluate on the patient-disjoint test split, account privacy and
communication, write ``checkpoints/round_NNNN.{npz,json}`` (atomic), rewrite ``metrics.csv``,
then call the hooks. ``resume=True`` continues from the newest complete checkpoint: the state
(model, server optimizer, aggregator state incl. DP noise seed, secure-sum range estimates) and the
metrics rows come from the checkpoint, every random choice of round ``t`` is derived from
(seed, t), so a resumed run repeats no round, skips none and gives the same result as an
uninterrupted one. A round whose hooks did not finish is re-announced to the hooks on resume
(hooks must be idempotent per round).

Errors before training (``BfdlError``): unknown arm, a hospital without training examples,
model input size / channels different from the data, an epsilon that the schedule cannot reach
(``accounting.PrivacyBudgetError``), delta not below ``1/n``, an empty test split.
NaN/Inf: a hospital whose update is non-finite is rejected (TFF zeroes it, weight 0) and the
reason logged and written to ``metrics.csv`` (``rejected``); a non-finite aggregate is rejected by
TFF's finalizer (``update_non_finite``), logged, and the global model is left unchanged.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bfdl_tff.config import ARMS, ExperimentConfig
from bfdl_tff.errors import BfdlError, ConfigError, DataError
from bfdl_tff.federated import accounting
from bfdl_tff.federated.hooks import RoundContext, RoundHook, RunInfo
from bfdl_tff.hashing import weights_digest
from bfdl_tff.io_utils import atomic_write_json, atomic_write_text
from bfdl_tff.runs import load_weights_npz, save_weights_npz

log = logging.getLogger("bfdl_tff.federated")

BASE_COLUMNS = [
    "round",
    "wall_s",
    "train_loss",
    "test_loss",
    "test_macro_auc",
    "test_micro_auc",
    "epsilon",
    "bytes_broadcast",
    "bytes_uploaded",
    "cum_bytes",
]
EXTRA_COLUMNS = [
    "train_s",
    "eval_s",
    "f1_macro",
    "f1_micro",
    "per_label_accuracy",
    "all_negative_accuracy",
    "participants",
    "rejected",
    "update_non_finite",
    "secure_sum_rel_error",
    "clipped_fraction",
]


class TrainingError(BfdlError):
    """Training cannot start or continue (names the cause)."""


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


@dataclass
class FederationData:
    """What the runner trains and evaluates on (``bfdl_tff.data.federation.Federation``-like)."""

    names: list[str]
    train: dict[str, Any]  # name -> ImageSet (x, y, mask, images)
    val: dict[str, Any]
    test: Any
    root: Path | None = None
    synthetic: bool = False


def load_data(cfg: ExperimentConfig, run_dir: Path, *, with_masks: bool) -> FederationData:
    from bfdl_tff.data import federation as fed_mod
    from bfdl_tff.data import prepare as prep_mod

    seeds = cfg.resolved_seeds()
    # prepare_data uses cfg.data.manifests if set, else partitions into RUN_DIR/manifests.
    prepared = prep_mod.prepare_data(cfg.data, seed=seeds["partition"], manifest_dir=run_dir / "manifests")
    fed = fed_mod.load_federation(prepared.root, prepared.manifest_dir, image_size=cfg.data.image_size, with_masks=with_masks)
    atomic_write_json(run_dir / "data.json", {"root": str(Path(prepared.root).resolve()),
                                              "manifest_dir": str(Path(prepared.manifest_dir).resolve()),
                                              "synthetic": bool(prepared.synthetic)})
    return FederationData(
        names=list(fed.names),
        train=dict(fed.train),
        val=dict(fed.val),
        test=fed.test,
        root=Path(prepared.root),
        synthetic=bool(prepared.synthetic),
    )


def _concat_sets(sets: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    sets = [s for s in sets if s is not None and len(s)]
    if not sets:
        return np.zeros((0,)), np.zeros((0,)), None
    x = np.concatenate([s.x for s in sets])
    y = np.concatenate([s.y for s in sets])
    masks = [s.mask for s in sets]
    m = np.concatenate(masks) if all(mm is not None for mm in masks) else None
    return x, y, m


# ----------------------------------------------------------------------------------------------
# Checks before training
# ----------------------------------------------------------------------------------------------


def validate_setup(cfg: ExperimentConfig, data: FederationData, model_cfg: Any, *, source: str) -> None:
    if cfg.arm not in ARMS:
        raise ConfigError(source, "arm", f"unknown arm {cfg.arm!r} (one of {', '.join(ARMS)})")
    if not data.names:
        raise DataError(f"{source}: no hospitals in the federation")
    for name in data.names:
        ts = data.train.get(name)
        if ts is None or len(ts) == 0:
            raise DataError(f"{source}: hospital {name!r} has an empty training dataset (0 images); remove it or repartition")
    if data.test is None or len(data.test) == 0:
        raise DataError(f"{source}: the test split is empty")
    x0 = data.train[data.names[0]].x
    want = (model_cfg.input_size, model_cfg.input_size, model_cfg.channels)
    for name in data.names:
        got = tuple(data.train[name].x.shape[1:])
        if got != want:
            raise ConfigError(
                source,
                "model",
                f"model {model_cfg.name or model_cfg.architecture} expects input {list(want)} but hospital "
                f"{name!r} images are {list(got)} (data.image_size={cfg.data.image_size}); set model.overrides.input_size",
            )
    if tuple(data.test.x.shape[1:]) != tuple(x0.shape[1:]):
        raise ConfigError(source, "data.image_size", "test images differ in size from training images")
    if data.train[data.names[0]].y.shape[1] != model_cfg.num_findings:
        raise ConfigError(source, "model", f"model has {model_cfg.num_findings} outputs, labels have {data.train[data.names[0]].y.shape[1]}")
    if cfg.federated.clients_per_round > len(data.names):
        raise ConfigError(source, "federated.clients_per_round", f"{cfg.federated.clients_per_round} > {len(data.names)} hospitals")


# ----------------------------------------------------------------------------------------------
# Engines: one round of training for each arm
# ----------------------------------------------------------------------------------------------


def _derive_seed(*key: int) -> int:
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1, dtype=np.uint32)[0])


@dataclass
class RoundResult:
    participants: list[str]
    commitments: dict[str, str]
    train_loss: float
    bytes_broadcast: int
    bytes_uploaded: int
    rejected: dict[str, str] = field(default_factory=dict)
    update_non_finite: bool = False
    secure_sum_rel_error: float | None = None
    clipped_fraction: float | None = None


class FederatedEngine:
    """Runs the ``federated`` / ``bfdl`` arms with TFF."""

    def __init__(self, cfg: ExperimentConfig, data: FederationData, bundle: Any, sched: accounting.PrivacySchedule) -> None:
        from bfdl_tff.federated import communication, processes

        self.cfg, self.data, self.bundle, self.sched = cfg, data, bundle, sched
        f, p = cfg.federated, cfg.privacy
        seeds = cfg.resolved_seeds()
        self.seeds = seeds
        client_opt, server_opt = processes.arm_optimizers(cfg)
        mode = sched.mode
        secure = cfg.arm == "bfdl" and p.secure_sum
        self.mode = mode
        if mode == "client":
            alg = processes.build_dp_fedavg(
                bundle.model_fn,
                client_optimizer=client_opt,
                server_optimizer=server_opt,
                noise_multiplier=sched.noise_multiplier,
                clients_per_round=sched.clients_per_round,
                l2_clip=p.l2_clip,
                noise_seed=seeds["dp_noise"],
                secure_sum=secure,
                adaptive_clipping=p.adaptive_clipping,
                target_unclipped_quantile=p.target_unclipped_quantile,
                clip_learning_rate=p.clip_learning_rate,
                clipped_count_stddev=p.clipped_count_stddev,
            )
        elif mode == "sample":
            alg = processes.build_dp_sgd_fedavg(
                bundle.model_fn,
                per_example_loss=bundle.per_example_loss,
                batch_spec=bundle.batch_spec,
                client_optimizer=client_opt,
                server_optimizer=server_opt,
                noise_multiplier=sched.noise_multiplier,
                l2_clip=p.l2_clip,
                batch_size=f.batch_size,
                secure_sum=secure,
                keras_model_fn=bundle.keras,
            )
        else:
            alg = processes.build_fedavg(bundle.model_fn, client_optimizer=client_opt, server_optimizer=server_opt, secure_sum=secure)
        self.algorithm = alg
        self.trainer = processes.FederatedTrainer(alg)
        self.traffic = communication.process_traffic(alg)
        self.context_kind = alg.context

    def attach_initial_model(self, init_keras: Any) -> None:
        """The server's initial weights (seeded Keras model), set explicitly into the TFF state."""
        from bfdl_tff.federated import processes

        self.order = processes.KerasOrder(init_keras)
        self.initial_model_weights = self.order.from_keras(init_keras.get_weights())

    # state -------------------------------------------------------------------------------
    def initial_state(self) -> Any:
        return self.trainer.initialize(self.initial_model_weights)

    def state_arrays(self, state: Any) -> list[np.ndarray]:
        from bfdl_tff.federated import processes

        return processes.flatten_state(state)

    def load_state(self, arrays: Sequence[np.ndarray]) -> Any:
        from bfdl_tff.federated import processes

        return processes.unflatten_state(self.initial_state(), arrays)

    def global_weights(self, state: Any) -> list[np.ndarray]:
        return self.order.to_keras(self.trainer.get_model_weights(state))

    # round -------------------------------------------------------------------------------
    def participants(self, round_num: int) -> list[str]:
        names = self.data.names
        cpr = self.cfg.federated.clients_per_round or len(names)
        if cpr >= len(names):
            return list(names)
        rng = np.random.default_rng([self.seeds["client_sampling"], round_num])
        idx = sorted(rng.choice(len(names), size=cpr, replace=False).tolist())
        return [names[i] for i in idx]

    def client_dataset(self, name: str, round_num: int) -> Any:
        from bfdl_tff.data.loader import make_dataset
        from bfdl_tff.federated import dp_sgd

        f = self.cfg.federated
        k = self.data.names.index(name)
        ts = self.data.train[name]
        if self.algorithm.data_kind == "dp_sgd_steps":
            rng = np.random.default_rng([self.seeds["data_shuffle"], round_num, k])
            return dp_sgd.round_dataset(ts, batch_size=f.batch_size, local_epochs=f.local_epochs, rng=rng,
                                        with_masks=self.bundle.with_masks, **self.sched.dp_sgd_kwargs(name))
        return make_dataset(
            ts,
            batch_size=f.batch_size,
            shuffle_seed=_derive_seed(self.seeds["data_shuffle"], round_num, k),
            epochs=f.local_epochs,
            with_masks=self.bundle.with_masks,
        )

    def run_round(self, state: Any, round_num: int) -> tuple[Any, RoundResult]:
        parts = self.participants(round_num)
        datasets = {n: self.client_dataset(n, round_num) for n in parts}
        out = self.trainer.run_round(state, datasets)
        bb, bu = self.traffic.round_bytes(len(parts))
        clipped = [c.metrics.get("train/clipped_fraction") for c in out.clients.values()]
        clipped = [c for c in clipped if c is not None]
        return out.state, RoundResult(
            participants=parts,
            commitments={n: c.commitment for n, c in out.clients.items()},
            train_loss=out.train_loss,
            bytes_broadcast=bb,
            bytes_uploaded=bu,
            rejected={n: c.rejected for n, c in out.clients.items() if c.rejected},
            update_non_finite=out.update_rejected,
            secure_sum_rel_error=out.secure_sum_rel_error,
            clipped_fraction=float(np.mean(clipped)) if clipped else None,
        )


# ----------------------------------------------------------------------------------------------
# The run loop
# ----------------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return repr(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    return str(v)


def write_metrics_csv(path: Path, rows: list[dict[str, Any]], findings: Sequence[str]) -> None:
    cols = BASE_COLUMNS + [f"auc_{f}" for f in findings] + EXTRA_COLUMNS
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: _fmt(r.get(c)) for c in cols})
    atomic_write_text(path, buf.getvalue())


def _latest_checkpoint(ckpt_dir: Path) -> tuple[int, Path, dict] | None:
    best = None
    for j in sorted(ckpt_dir.glob("round_*.json")):
        try:
            meta = json.loads(j.read_text(encoding="utf-8"))
            npz = j.with_suffix(".npz")
            if not npz.exists():
                continue
            r = int(meta["round"])
        except (OSError, ValueError, KeyError):
            continue
        if best is None or r > best[0]:
            best = (r, npz, meta)
    return best


def _prune_checkpoints(ckpt_dir: Path, keep: int) -> None:
    if keep <= 0:
        return
    rounds = sorted(int(p.stem.split("_")[1]) for p in ckpt_dir.glob("round_*.json"))
    for r in rounds[:-keep]:
        for suf in (".json", ".npz"):
            p = ckpt_dir / f"round_{r:04d}{suf}"
            if p.exists():
                p.unlink()


_save_npz = save_weights_npz
_load_npz = load_weights_npz


def RunDir_write_privacy(run_path: Path, sched: accounting.PrivacySchedule) -> None:  # noqa: N802 - moves into RunDir users
    atomic_write_json(run_path / "privacy.json", _json_safe(sched.to_record()))


def _setup_logging(run_dir: Path) -> logging.Handler:
    h = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("bfdl_tff")
    root.addHandler(h)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return h


def run_experiment(
    cfg: ExperimentConfig,
    run_dir: Any,
    *,
    hooks: Sequence[RoundHook] = (),
    resume: bool = False,
    data: FederationData | None = None,
    progress: bool = True,
) -> dict:
    """Train ``cfg.arm`` into ``run_dir`` (a :class:`bfdl_tff.runs.RunDir` or a path); return the summary.

    ``data`` injects an in-memory federation (tests, benchmarks); by default it is prepared and
    loaded with the data API from ``cfg.data``.
    """
    from bfdl_tff.data.labels import FINDINGS
    from bfdl_tff.models import registry

    run_path = Path(getattr(run_dir, "path", run_dir))
    run_path.mkdir(parents=True, exist_ok=True)
    source = str(run_path / "config.yaml")
    if cfg.arm not in ARMS:
        raise ConfigError(source, "arm", f"unknown arm {cfg.arm!r} (one of {', '.join(ARMS)})")
    handler = _setup_logging(run_path)
    try:
        if resume and (run_path / "summary.json").exists():
            latest = _latest_checkpoint(run_path / "checkpoints")
            rounds_wanted = cfg.federated.rounds
            if cfg.arm == "centralized" and cfg.federated.centralized_epochs > 0:
                rounds_wanted = cfg.federated.centralized_epochs
            if latest is not None and latest[0] >= rounds_wanted and (latest[2].get("hooks_done") or not hooks):
                log.info("run in %s is complete (%d rounds); nothing to resume", run_path, latest[0])
                return json.loads((run_path / "summary.json").read_text(encoding="utf-8"))
        model_cfg = registry.load_model_config(cfg.model.config, **cfg.model.overrides)
        if data is None:
            data = load_data(cfg, run_path, with_masks=registry.uses_masks(model_cfg))
        validate_setup(cfg, data, model_cfg, source=source)
        sched = accounting.schedule_for_config(cfg, {n: len(data.train[n]) for n in data.names}, source=source,
                                               num_patients={n: len(np.unique(data.train[n].patient_ids)) for n in data.names})
        RunDir_write_privacy(run_path, sched)
        return _run(cfg, run_path, data, model_cfg, sched, list(FINDINGS), hooks=hooks, resume=resume, progress=progress)
    finally:
        logging.getLogger("bfdl_tff").removeHandler(handler)
        handler.close()


def _run(
    cfg: ExperimentConfig,
    run_path: Path,
    data: FederationData,
    model_cfg: Any,
    sched: accounting.PrivacySchedule,
    findings: list[str],
    *,
    hooks: Sequence[RoundHook],
    resume: bool,
    progress: bool,
) -> dict:
    import tensorflow as tf
    from tqdm import tqdm

    from bfdl_tff import tff_runtime
    from bfdl_tff.federated import evaluation, model_bridge

    seeds = cfg.resolved_seeds()
    f = cfg.federated
    t_start = time.perf_counter()
    class_weights = None
    if model_cfg.class_weighting == "inverse_frequency":
        from bfdl_tff.models.losses import positive_weights

        # Computed from the pooled training labels (an aggregate label statistic the server learns).
        _, y_all, _ = _concat_sets([data.train[n] for n in data.names])
        class_weights = positive_weights(y_all, max_weight=model_cfg.pos_weight_max)
    bundle = model_bridge.build_bundle(model_cfg, class_weights=class_weights)
    # Keras models made before TFF traces model_fn in a graph become unusable (Keras invalidates
    # eager models once a model is built inside a tf.compat.v1.Graph), so the TFF processes are
    # built first and the Keras models (initial weights, evaluation) afterwards.
    engine: Any
    if cfg.arm != "centralized":
        engine = FederatedEngine(cfg, data, bundle, sched)
    init_keras = bundle.keras(seed=seeds["model_init"])
    init_weights = [np.asarray(w) for w in init_keras.get_weights()]
    if not all(np.all(np.isfinite(w)) for w in init_weights):
        raise TrainingError("the initial model has non-finite weights")
    eval_model = bundle.keras()
    x_val, y_val, _ = _concat_sets([data.val.get(n) for n in data.names])
    num_examples = {n: int(len(data.train[n])) for n in data.names}
    num_params = int(sum(w.size for w in init_weights))

    if cfg.arm == "centralized":
        from bfdl_tff.federated.centralized import CentralizedEngine

        engine = CentralizedEngine(cfg, data, bundle, init_keras)
        rounds = engine.rounds
        context_kind = None
    else:
        engine.attach_initial_model(init_keras)
        rounds = f.rounds
        context_kind = engine.context_kind

    ckpt_dir = run_path / "checkpoints"
    ckpt_dir.mkdir(exist_ok=True)
    rows: list[dict[str, Any]] = []
    start_round = 0
    hooks_pending: dict | None = None
    cum_bytes = 0
    state_arrays: list[np.ndarray] | None = None
    if resume:
        latest = _latest_checkpoint(ckpt_dir)
        if latest is not None:
            start_round, npz, meta = latest
            state_arrays = _load_npz(npz)
            rows = meta["rows"]
            cum_bytes = int(meta["cum_bytes"])
            if not meta.get("hooks_done", False):
                hooks_pending = meta
            log.info("resuming after round %d from %s", start_round, npz)
    else:
        for p in list(ckpt_dir.glob("round_*")):
            p.unlink()

    privacy_base = {
        "mode": sched.mode,
        "delta": sched.delta if sched.mode != "none" else None,
        "accountant": sched.accountant if sched.mode != "none" else None,
        "noise_multiplier": sched.noise_multiplier if sched.mode != "none" else 0.0,
        "l2_clip": cfg.privacy.l2_clip if sched.mode != "none" else None,
    }
    info = RunInfo(
        run_dir=run_path,
        config=cfg,
        hospital_names=list(data.names),
        num_examples=num_examples,
        num_params=num_params,
        extra={"arm": cfg.arm, "privacy": dict(privacy_base), "start_round": start_round, "rounds": rounds},
    )
    central_bytes = None
    if cfg.arm == "centralized":
        central_bytes = engine.collection_bytes

    ctx_mgr = tff_runtime.execution_context(context_kind) if context_kind else _null_ctx()
    with ctx_mgr:
        state = engine.initial_state() if state_arrays is None else engine.load_state(state_arrays)
        for h in hooks:
            h.on_start(info)
        if hooks_pending is not None:
            ctx = _context_from_meta(hooks_pending, run_path, engine.global_weights(state), ckpt_dir)
            for h in hooks:
                h.on_round_end(ctx)
            hooks_pending["hooks_done"] = True
            atomic_write_json(ckpt_dir / f"round_{start_round:04d}.json", hooks_pending)
        write_metrics_csv(run_path / "metrics.csv", rows, findings)
        last_eval: dict | None = None
        bar = tqdm(total=rounds, initial=start_round, desc=f"{cfg.name}:{cfg.arm}", unit="round", disable=None if progress else True, file=sys.stderr)
        try:
            for r in range(start_round + 1, rounds + 1):
                t0 = time.perf_counter()
                state, rr = engine.run_round(state, r)
                t_train = time.perf_counter() - t0
                gw = engine.global_weights(state)
                if not all(np.all(np.isfinite(w)) for w in gw):
                    raise TrainingError(f"round {r}: the global model has non-finite weights; stopping (checkpoint of round {r - 1} kept)")
                t1 = time.perf_counter()
                ev = None
                if r % cfg.eval.every == 0 or r == rounds:
                    eval_model.set_weights(gw)
                    ev = evaluation.evaluate_model(
                        eval_model,
                        x_test=data.test.x,
                        y_test=data.test.y,
                        x_val=x_val if len(x_val) else None,
                        y_val=y_val if len(y_val) else None,
                        findings=findings,
                        threshold_rule=cfg.eval.threshold_rule,
                        fixed_threshold=cfg.eval.fixed_threshold,
                    )
                    last_eval = ev.to_dict()
                t_eval = time.perf_counter() - t1
                eps = sched.epsilon_after(r) if sched.mode != "none" else math.inf
                if cfg.arm == "centralized" and r == 1:
                    rr.bytes_uploaded = central_bytes[0]
                cum_bytes += rr.bytes_broadcast + rr.bytes_uploaded
                row: dict[str, Any] = {
                    "round": r,
                    "wall_s": t_train + t_eval,
                    "train_s": t_train,
                    "eval_s": t_eval,
                    "train_loss": rr.train_loss,
                    "test_loss": ev.loss if ev else None,
                    "test_macro_auc": ev.macro_auc if ev else None,
                    "test_micro_auc": ev.micro_auc if ev else None,
                    "epsilon": eps if math.isfinite(eps) else None,  # empty for arms without DP
                    "bytes_broadcast": rr.bytes_broadcast,
                    "bytes_uploaded": rr.bytes_uploaded,
                    "cum_bytes": cum_bytes,
                    "f1_macro": ev.f1_macro if ev else None,
                    "f1_micro": ev.f1_micro if ev else None,
                    "per_label_accuracy": ev.per_label_accuracy if ev else None,
                    "all_negative_accuracy": ev.all_negative_accuracy if ev else None,
                    "participants": ";".join(rr.participants),
                    "rejected": ";".join(f"{n}: {why}" for n, why in rr.rejected.items()),
                    "update_non_finite": int(rr.update_non_finite),
                    "secure_sum_rel_error": rr.secure_sum_rel_error,
                    "clipped_fraction": rr.clipped_fraction,
                }
                if ev:
                    for fnd in findings:
                        row[f"auc_{fnd}"] = ev.per_finding_auc.get(fnd)
                rows.append({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()})
                privacy = {**privacy_base, "epsilon": eps if math.isfinite(eps) else None}
                # checkpoint (state + everything needed to continue and to re-announce the round)
                npz = ckpt_dir / f"round_{r:04d}.npz"
                _save_npz(npz, engine.state_arrays(state))
                meta = {
                    "round": r,
                    "rows": rows,
                    "cum_bytes": cum_bytes,
                    "participants": rr.participants,
                    "num_examples": {n: num_examples.get(n, sum(num_examples.values())) for n in rr.participants},
                    "commitments": rr.commitments,
                    "privacy": privacy,
                    "round_seconds": t_train + t_eval,
                    "global_digest": weights_digest(gw),
                    "last_eval": last_eval,
                    "hooks_done": not hooks,
                }
                atomic_write_json(ckpt_dir / f"round_{r:04d}.json", _json_safe(meta))
                write_metrics_csv(run_path / "metrics.csv", rows, findings)
                if rr.rejected:
                    for n, why in rr.rejected.items():
                        log.warning("round %d: update of %s rejected: %s", r, n, why)
                if rr.update_non_finite:
                    log.warning("round %d: TFF finalizer rejected the aggregated update (update_non_finite=1)", r)
                ctx = RoundContext(
                    round_num=r,
                    run_dir=run_path,
                    global_weights=gw,
                    participants=list(rr.participants),
                    num_examples={n: num_examples.get(n, sum(num_examples.values())) for n in rr.participants},
                    client_commitments=dict(rr.commitments),
                    metrics=dict(rows[-1]),
                    privacy=privacy,
                    round_seconds=t_train + t_eval,
                    checkpoint_path=npz,
                )
                if hooks:
                    for h in hooks:
                        h.on_round_end(ctx)
                    meta["hooks_done"] = True
                    atomic_write_json(ckpt_dir / f"round_{r:04d}.json", _json_safe(meta))
                _prune_checkpoints(ckpt_dir, f.keep_checkpoints)
                bar.update(1)
                bar.set_postfix(auc=f"{row['test_macro_auc']:.3f}" if ev else "-", loss=f"{rr.train_loss:.3f}")
        finally:
            bar.close()
        gw = engine.global_weights(state)
        latest = _latest_checkpoint(ckpt_dir)
        if last_eval is None and latest is not None:
            last_eval = latest[2].get("last_eval")
        if last_eval is None:
            eval_model.set_weights(gw)
            last_eval = evaluation.evaluate_model(
                eval_model, x_test=data.test.x, y_test=data.test.y,
                x_val=x_val if len(x_val) else None, y_val=y_val if len(y_val) else None,
                findings=findings, threshold_rule=cfg.eval.threshold_rule, fixed_threshold=cfg.eval.fixed_threshold,
            ).to_dict()
    _save_npz(run_path / "final_model.npz", gw)
    summary = _summary(cfg, run_path, rows, last_eval, sched, seeds, data, gw, time.perf_counter() - t_start, engine, num_params)
    atomic_write_json(run_path / "summary.json", _json_safe(summary))
    for h in hooks:
        h.on_end(summary)
    return summary


class _null_ctx:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: Any) -> None:
        return None


def _context_from_meta(meta: dict, run_path: Path, gw: list[np.ndarray], ckpt_dir: Path) -> RoundContext:
    r = int(meta["round"])
    return RoundContext(
        round_num=r,
        run_dir=run_path,
        global_weights=gw,
        participants=list(meta["participants"]),
        num_examples=dict(meta["num_examples"]),
        client_commitments=dict(meta["commitments"]),
        metrics=dict(meta["rows"][-1]),
        privacy=dict(meta["privacy"]),
        round_seconds=float(meta["round_seconds"]),
        checkpoint_path=ckpt_dir / f"round_{r:04d}.npz",
    )


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


def _summary(cfg, run_path, rows, ev, sched, seeds, data, gw, wall, engine, num_params) -> dict:
    eps_final = sched.epsilon_after(len(rows)) if sched.mode != "none" and rows else None
    last = rows[-1] if rows else {}
    out = {
        "arm": cfg.arm,
        "name": cfg.name,
        "seed": cfg.seed,
        "seeds": seeds,
        "rounds": len(rows),
        "hospitals": list(data.names),
        "num_examples": {n: int(len(data.train[n])) for n in data.names},
        "num_test_examples": int(len(data.test)),
        "num_params": num_params,
        "model": cfg.model.config,
        "final_macro_auc": ev["macro_auc"],
        "final_micro_auc": ev["micro_auc"],
        "per_finding_auc": ev["per_finding_auc"],
        "skipped_findings": ev["skipped_findings"],
        "auc_note": "macro AUC = mean over findings with both classes in the test split; skipped_findings have no test positives/negatives",
        "threshold_rule": ev["threshold_rule"],
        "thresholds": ev["thresholds"],
        "precision_macro": ev["precision_macro"],
        "recall_macro": ev["recall_macro"],
        "f1_macro": ev["f1_macro"],
        "precision_micro": ev["precision_micro"],
        "recall_micro": ev["recall_micro"],
        "f1_micro": ev["f1_micro"],
        "per_label_accuracy": ev["per_label_accuracy"],
        "per_finding_accuracy": ev["per_finding_accuracy"],
        "all_negative_accuracy": ev["all_negative_accuracy"],
        "test_loss": ev["loss"],
        "privacy_mode": sched.mode,
        "epsilon": eps_final,
        "delta": sched.delta if sched.mode != "none" else None,
        "accountant": sched.accountant if sched.mode != "none" else None,
        "noise_multiplier": sched.noise_multiplier if sched.mode != "none" else 0.0,
        "l2_clip": cfg.privacy.l2_clip if sched.mode != "none" else None,
        "secure_sum": bool(cfg.arm == "bfdl" and cfg.privacy.secure_sum),
        "privacy_note": sched.note(),
        "bytes_broadcast_total": int(sum(r.get("bytes_broadcast") or 0 for r in rows)),
        "bytes_uploaded_total": int(sum(r.get("bytes_uploaded") or 0 for r in rows)),
        "cum_bytes": int(last.get("cum_bytes") or 0),
        "wall_s": wall,
        "round_wall_s_mean": float(np.mean([r["wall_s"] for r in rows])) if rows else None,
        "synthetic": bool(data.synthetic),
        "final_model_digest": weights_digest(gw),
    }
    if cfg.arm == "centralized":
        out["collected_image_bytes"], out["collected_bytes_source"] = engine.collection_bytes
    errs = [r.get("secure_sum_rel_error") for r in rows if r.get("secure_sum_rel_error") is not None]
    if errs:
        out["secure_sum_rel_error_max"] = float(max(errs))
    return out


__all__ = ["ARMS", "FederatedEngine", "FederationData", "RoundResult", "TrainingError", "load_data", "run_experiment", "validate_setup", "write_metrics_csv"]
