"""TFF learning processes for the two federated arms (paper 2.1 FedAvg, 3.1 DP-SGD + secure
aggregation, 3.5 differential privacy).

* ``federated`` arm: ``tff.learning.algorithms.build_weighted_fed_avg`` with client weights
  ``n_k`` (``ClientWeighting.NUM_EXAMPLES``), i.e. the paper's ``w_{t+1} = sum_k n_k/n w_t^k``,
  no privacy layer.
* ``bfdl`` arm, ``privacy.mode == client``: DP-FedAvg (McMahan et al. 2018) =
  ``build_unweighted_fed_avg`` with ``tff.aggregators.DifferentiallyPrivateFactory``. Every TFF DP
  factory is *unweighted* (``build_weighted_fed_avg`` rejects them), so the hospitals are averaged
  uniformly: weighting by ``n_k`` would multiply one hospital's sensitivity by ``n_k``.
  Fixed clipping uses :class:`~bfdl_tff.federated.dp_queries.SeededGaussianSumQuery` (seeded
  noise), optionally summing the clipped records through ``tff.aggregators.SecureSumFactory``
  (range ``[-C, C]`` per coordinate, 32-bit quantisation); adaptive clipping uses TFF's
  ``DifferentiallyPrivateFactory.gaussian_adaptive`` (tensorflow-privacy's unseeded noise; no
  secure sum: its records carry the clipped-count bit and a moving clip bound).
* ``bfdl`` arm, ``privacy.mode == sample``: DP-SGD inside each hospital
  (:mod:`bfdl_tff.federated.dp_sgd`), composed with ``compose_learning_process`` with weighted
  (``n_k``) FedAvg aggregation, through ``tff.learning.secure_aggregator(weighted=True)`` (adaptive
  secure-sum range, robustness clipping/zeroing off so the mean is the plain ``n_k/n`` mean) when
  ``privacy.secure_sum``.
* ``bfdl`` arm, ``privacy.mode == none``: weighted FedAvg through the secure aggregator only.

Secure sum (``privacy.secure_aggregation: tff_secure_sum``): any secure intrinsic needs
``bfdl_tff.tff_runtime.execution_context("test")``, in which TFF *simulates*
``federated_secure_sum_bitwidth`` by a plain sum of the quantised values: the semantics (the
server only obtains the sum) without the cryptography of Bonawitz et al.
:attr:`FederatedAlgorithm.context` says which context a process needs. With ``masked`` (issue 18)
the trainer is given a :class:`bfdl_tff.federated.masked.MaskedAggregation`: the hospitals'
updates are quantised and masked hospital-side and the server's TFF computation sums masked
integer vectors (native context); the process's own aggregator is then not used.

:class:`FederatedTrainer` runs one round as the composed process does
(``client_work -> aggregator -> finalizer``), but runs **each hospital's client work as its own
TFF computation** so that the hospital holds its own update and can commit to it (SHA-256,
:func:`bfdl_tff.hashing.weights_digest`) before the update enters the aggregation computation;
the aggregation then runs once over all hospitals' updates. Tests check that this equals
``process.next`` of the composed process.

BatchNormalization: FedAvg in TFF aggregates trainable weights only; moving means/variances of
BN layers stay at the server's initial values. :func:`global_keras_weights` therefore returns the
server's non-trainable weights as they are, and the evaluation uses them (see docs/federated.md:
our models use GroupNorm / no BN; a BN model's inference-mode accuracy is degraded).
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from bfdl_tff.federated import dp_queries, dp_sgd
from bfdl_tff.federated.client_work import _keras_parts, build_fast_model_delta_client_work
from bfdl_tff.hashing import weights_digest

log = logging.getLogger(__name__)

ModelFn = Callable[[], tff.learning.models.VariableModel]


def make_optimizer(name: str, *, learning_rate: float, momentum: float = 0.0) -> tff.learning.optimizers.Optimizer:
    """A ``tff.learning.optimizers`` optimizer (TFF 0.87 rejects Keras optimizer factories)."""
    if name == "sgd":
        return tff.learning.optimizers.build_sgdm(learning_rate=learning_rate, momentum=momentum or None)
    if name == "adam":
        return tff.learning.optimizers.build_adam(learning_rate=learning_rate)
    raise ValueError(f"unknown optimizer {name!r}")


def arm_optimizers(cfg: Any) -> tuple[tff.learning.optimizers.Optimizer, tff.learning.optimizers.Optimizer]:
    """(client, server) optimizers of ``cfg.arm``: ``federated.*``, with the private arm's own
    settings (``privacy.client_optimizer`` / ``client_lr`` / ``client_momentum`` / ``server_lr`` /
    ``server_momentum``, where set) when ``cfg.arm == "bfdl"`` trains with differential privacy
    (issue 14.2: the noise calls for its own learning rates and momenta)."""
    f, p = cfg.federated, cfg.privacy
    private = cfg.arm == "bfdl" and p.mode != "none"
    name = (p.client_optimizer or f.client_optimizer) if private else f.client_optimizer
    lr = (p.client_lr or f.client_lr) if private else f.client_lr
    momentum = p.client_momentum if private and p.client_momentum >= 0 else f.client_momentum
    server_lr = (p.server_lr or f.server_lr) if private else f.server_lr
    server_momentum = p.server_momentum if private and p.server_momentum >= 0 else f.server_momentum
    return (make_optimizer(name, learning_rate=lr, momentum=momentum),
            make_optimizer(f.server_optimizer, learning_rate=server_lr, momentum=server_momentum))


@dataclass
class FederatedAlgorithm:
    """A composed TFF learning process plus its components (run round by round by the trainer)."""

    kind: str  # fedavg | dp_fedavg | dp_sgd
    process: tff.learning.templates.LearningProcess
    client_work: tff.learning.templates.ClientWorkProcess
    aggregator: tff.templates.AggregationProcess
    finalizer: tff.learning.templates.FinalizerProcess
    weighted: bool
    context: str  # native | test
    secure_sum: bool = False
    noise_multiplier: float = 0.0
    l2_clip: float = 0.0
    adaptive_clipping: bool = False
    data_kind: str = "batches"  # batches | dp_sgd_steps
    extra: dict[str, Any] = field(default_factory=dict)


def _initial_weights_fn(model_fn: ModelFn):
    @tff.tensorflow.computation
    def initial_model_weights_fn():
        return tff.learning.models.ModelWeights.from_model(model_fn())

    return initial_model_weights_fn


def _components(
    model_fn: ModelFn,
    *,
    client_work: tff.learning.templates.ClientWorkProcess,
    aggregation_factory: Any,
    weighted: bool,
    server_optimizer: tff.learning.optimizers.Optimizer,
) -> tuple[Any, Any, Any, Any]:
    init_fn = _initial_weights_fn(model_fn)
    weights_type = init_fn.type_signature.result
    distributor = tff.learning.templates.build_broadcast_process(weights_type)
    if not weighted:
        # As build_unweighted_fed_avg does: the process API is weighted, the weights are ignored.
        aggregation_factory = tff.aggregators.as_weighted_aggregator(aggregation_factory)
    # SecureSumFactory builds tf.debugging asserts whose unused-op warnings TF logs as ERROR
    # ("Object was never used"): harmless, silenced while the aggregator is traced.
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.CRITICAL)
    try:
        aggregator = aggregation_factory.create(weights_type.trainable, tff.TensorType(np.float32))
    finally:
        tf_logger.setLevel(level)
    finalizer = tff.learning.templates.build_apply_optimizer_finalizer(server_optimizer, weights_type)
    process = tff.learning.templates.compose_learning_process(init_fn, distributor, client_work, aggregator, finalizer)
    return process, aggregator, finalizer, weights_type


def secure_weighted_mean_factory() -> Any:
    """Weighted (``n_k``) mean whose sums go through ``SecureSumFactory`` (adaptive range)."""
    return tff.learning.secure_aggregator(zeroing=False, clipping=False, weighted=True)


def _compose(model_fn: ModelFn, *, kind: str, client_work: Any, factory: Any, weighted: bool,
             server_optimizer: tff.learning.optimizers.Optimizer, secure_sum: bool,
             **fields: Any) -> FederatedAlgorithm:
    """The learning process of ``client_work`` + ``factory`` + the apply-optimizer finalizer,
    wrapped with what the engine needs to know about it (TFF's secure sum runs in the test context)."""
    process, aggregator, finalizer, _ = _components(
        model_fn, client_work=client_work, aggregation_factory=factory, weighted=weighted, server_optimizer=server_optimizer
    )
    return FederatedAlgorithm(kind=kind, process=process, client_work=client_work, aggregator=aggregator,
                              finalizer=finalizer, weighted=weighted, context="test" if secure_sum else "native",
                              secure_sum=secure_sum, **fields)


def build_fedavg(
    model_fn: ModelFn,
    *,
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer,
    secure_sum: bool = False,
    fast_client_work: bool = True,
) -> FederatedAlgorithm:
    """Weighted FedAvg (``n_k/n``): ``build_weighted_fed_avg`` semantics, optionally secure sum.

    ``fast_client_work`` (Keras models): :func:`build_fast_model_delta_client_work` instead of
    TFF's ``build_model_delta_client_work`` (same updates and weights; tests compare the round
    with ``build_weighted_fed_avg``'s ``process.next``)."""
    factory = secure_weighted_mean_factory() if secure_sum else tff.aggregators.MeanFactory()
    if fast_client_work and _keras_parts(model_fn) is not None:
        client_work = build_fast_model_delta_client_work(model_fn, client_optimizer)
    else:
        client_work = tff.learning.templates.build_model_delta_client_work(
            model_fn, client_optimizer, client_weighting=tff.learning.ClientWeighting.NUM_EXAMPLES
        )
    # The components tff.learning.algorithms.build_weighted_fed_avg composes (broadcast, model-delta
    # client work with NUM_EXAMPLES weighting, the aggregator, the apply-optimizer finalizer).
    return _compose(model_fn, kind="fedavg", client_work=client_work, factory=factory, weighted=True,
                    server_optimizer=server_optimizer, secure_sum=secure_sum)


def build_dp_fedavg(
    model_fn: ModelFn,
    *,
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer,
    noise_multiplier: float,
    clients_per_round: int,
    l2_clip: float,
    noise_seed: int,
    secure_sum: bool = True,
    adaptive_clipping: bool = False,
    target_unclipped_quantile: float = 0.5,
    clip_learning_rate: float = 0.2,
    clipped_count_stddev: float = 0.0,
) -> FederatedAlgorithm:
    """Client-level DP-FedAvg (unweighted, as every TFF DP factory requires)."""
    if adaptive_clipping:
        if secure_sum:
            raise ValueError("adaptive clipping cannot be combined with secure sum here (set privacy.secure_sum: false)")
        # TFF splits the noise between the value and the clipped-count queries; the value noise
        # needs noise_multiplier < 2 * clipped_count_stddev.
        stddev = clipped_count_stddev or max(0.05 * clients_per_round, noise_multiplier)
        factory = tff.aggregators.DifferentiallyPrivateFactory.gaussian_adaptive(
            noise_multiplier=noise_multiplier,
            clients_per_round=clients_per_round,
            initial_l2_norm_clip=l2_clip,
            target_unclipped_quantile=target_unclipped_quantile,
            learning_rate=clip_learning_rate,
            clipped_count_stddev=stddev,
        )
    else:
        query = dp_queries.normalized_seeded_gaussian_query(
            l2_norm_clip=l2_clip,
            noise_multiplier=noise_multiplier,
            clients_per_round=clients_per_round,
            noise_seed=noise_seed,
        )
        record_factory = (
            tff.aggregators.SecureSumFactory(upper_bound_threshold=float(l2_clip), lower_bound_threshold=-float(l2_clip))
            if secure_sum
            else None
        )
        factory = tff.aggregators.DifferentiallyPrivateFactory(query, record_aggregation_factory=record_factory)
    client_work = tff.learning.templates.build_model_delta_client_work(
        model_fn, client_optimizer, client_weighting=tff.learning.ClientWeighting.UNIFORM
    )
    # The components of tff.learning.algorithms.build_unweighted_fed_avg(model_aggregator=factory).
    return _compose(model_fn, kind="dp_fedavg", client_work=client_work, factory=factory, weighted=False,
                    server_optimizer=server_optimizer, secure_sum=secure_sum, noise_multiplier=noise_multiplier,
                    l2_clip=l2_clip, adaptive_clipping=adaptive_clipping)


def build_dp_sgd_fedavg(
    model_fn: ModelFn,
    *,
    per_example_loss: dp_sgd.LossFn,
    batch_spec: Any,
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer,
    noise_multiplier: float,
    l2_clip: float,
    batch_size: int,
    secure_sum: bool = True,
    keras_model_fn: Callable[[], tf.keras.Model] | None = None,
    fast_clipping: bool = True,
) -> FederatedAlgorithm:
    """Sample-level DP-SGD in each hospital + weighted (``n_k``) FedAvg, optionally secure sum.

    Each hospital's noise multiplier and DP-SGD denominator travel in its step data
    (:func:`dp_sgd.round_dataset` with ``PrivacySchedule.dp_sgd_kwargs``); ``noise_multiplier``
    (the largest per-hospital value) and ``batch_size`` (the expected images per step) are only
    recorded on the returned algorithm."""
    client_work = dp_sgd.build_dp_sgd_client_work(
        model_fn,
        element_spec=dp_sgd.dp_sgd_element_spec(batch_spec),
        per_example_loss=per_example_loss,
        optimizer=client_optimizer,
        l2_clip=l2_clip,
        keras_model_fn=keras_model_fn,
        fast_clipping=fast_clipping,
    )
    factory = secure_weighted_mean_factory() if secure_sum else tff.aggregators.MeanFactory()
    return _compose(model_fn, kind="dp_sgd", client_work=client_work, factory=factory, weighted=True,
                    server_optimizer=server_optimizer, secure_sum=secure_sum, noise_multiplier=noise_multiplier,
                    l2_clip=l2_clip, data_kind="dp_sgd_steps", extra={"expected_batch_size": batch_size})


# ----------------------------------------------------------------------------------------------
# Weights in Keras order, state (de)serialisation
# ----------------------------------------------------------------------------------------------


class KerasOrder:
    """Maps TFF ``ModelWeights`` (trainable, non_trainable) to ``keras_model.get_weights()`` order."""

    def __init__(self, keras_model: tf.keras.Model) -> None:
        t_ids = {id(v): i for i, v in enumerate(keras_model.trainable_weights)}
        n_ids = {id(v): i for i, v in enumerate(keras_model.non_trainable_weights)}
        self.order: list[tuple[str, int]] = []
        for v in keras_model.weights:
            if id(v) in t_ids:
                self.order.append(("t", t_ids[id(v)]))
            else:
                self.order.append(("n", n_ids[id(v)]))
        self.num_trainable = len(t_ids)
        self.num_non_trainable = len(n_ids)

    def to_keras(self, model_weights: Any) -> list[np.ndarray]:
        t = [np.asarray(a) for a in model_weights.trainable]
        n = [np.asarray(a) for a in model_weights.non_trainable]
        return [t[i] if k == "t" else n[i] for k, i in self.order]

    def from_keras(self, weights: Sequence[np.ndarray]) -> tff.learning.models.ModelWeights:
        t: list[Any] = [None] * self.num_trainable
        n: list[Any] = [None] * self.num_non_trainable
        for (k, i), w in zip(self.order, weights):
            (t if k == "t" else n)[i] = np.asarray(w)
        return tff.learning.models.ModelWeights(trainable=t, non_trainable=n)


def flatten_state(state: Any) -> list[np.ndarray]:
    return [np.asarray(x) for x in tf.nest.flatten(state)]


def unflatten_state(template: Any, arrays: Sequence[np.ndarray]) -> Any:
    flat = tf.nest.flatten(template)
    if len(flat) != len(arrays):
        raise ValueError(f"checkpoint has {len(arrays)} state tensors, the process expects {len(flat)}")
    for i, (a, b) in enumerate(zip(flat, arrays)):
        if np.shape(a) != np.shape(b):
            raise ValueError(f"checkpoint state tensor {i}: shape {np.shape(b)} != expected {np.shape(a)}")
    return tf.nest.pack_sequence_as(template, [np.asarray(b, dtype=np.asarray(a).dtype) for a, b in zip(flat, arrays)])


# ----------------------------------------------------------------------------------------------
# Round execution
# ----------------------------------------------------------------------------------------------


@dataclass
class ClientRound:
    name: str
    update: list[np.ndarray]
    weight: float
    commitment: str
    metrics: dict[str, float]
    rejected: str = ""  # reason, empty if accepted


@dataclass
class RoundOutput:
    state: Any
    clients: dict[str, ClientRound]
    aggregate: list[np.ndarray]
    aggregator_measurements: Any
    finalizer_measurements: Any
    train_loss: float
    update_rejected: bool
    secure_sum_rel_error: float | None
    secagg: Any = None  # bfdl_tff.federated.masked.MaskedOutcome under masked secure aggregation


def _np_list(x: Any) -> list[np.ndarray]:
    return [np.asarray(a) for a in tf.nest.flatten(x)]


def _to_float_dict(d: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(d, Mapping):
        for k, v in d.items():
            out.update(_to_float_dict(v, f"{prefix}{k}/"))
    elif isinstance(d, (list, tuple)) and not hasattr(d, "_fields"):
        for i, v in enumerate(d):
            out.update(_to_float_dict(v, f"{prefix}{i}/"))
    else:
        a = np.asarray(d)
        if a.size == 1 and np.issubdtype(a.dtype, np.number):
            out[prefix.rstrip("/")] = float(a.reshape(()))
    return out


def _train_loss(clients: Mapping[str, ClientRound]) -> float:
    """Example-weighted mean training loss of the accepted updates (NaN if none)."""
    losses = [(c.metrics.get("train/loss"), c.metrics.get("train/num_examples", 1.0)) for c in clients.values() if not c.rejected]
    losses = [(l, n) for l, n in losses if l is not None and np.isfinite(l)]
    n_tot = sum(n for _, n in losses)
    return float(sum(l * n for l, n in losses) / n_tot) if n_tot else float("nan")


class FederatedTrainer:
    """Runs rounds of a :class:`FederatedAlgorithm`, one TFF computation per hospital's client work.

    ``run_round(state, client_data)`` (``client_data``: ``{hospital: tf.data.Dataset}`` of the
    participants) returns the new state, the per-hospital updates and their commitments (computed
    by the hospital on its own update before aggregation) and the TFF measurements.
    """

    def __init__(self, algorithm: FederatedAlgorithm, *, masked: Any = None) -> None:
        """``masked``: a :class:`bfdl_tff.federated.masked.MaskedAggregation` replaces the
        process's aggregator (``privacy.secure_aggregation: masked``)."""
        self.algorithm = algorithm
        self.masked = masked

    def initialize(self, initial_weights: tff.learning.models.ModelWeights | None = None) -> Any:
        state = self.algorithm.process.initialize()
        if initial_weights is not None:
            state = self.algorithm.process.set_model_weights(state, initial_weights)
        return state

    def get_model_weights(self, state: Any) -> Any:
        return self.algorithm.process.get_model_weights(state)

    def run_round(self, state: Any, client_data: Mapping[str, tf.data.Dataset], *, round_num: int = 0) -> RoundOutput:
        clients, cw_state = self._client_work(state, client_data)
        if self.masked is not None:
            return self._masked_round(state, clients, cw_state, round_num)
        return self._aggregate(state, clients, cw_state)

    def _client_work(self, state: Any, client_data: Mapping[str, tf.data.Dataset]) -> tuple[dict[str, ClientRound], Any]:
        """Hospital side: each hospital's local training as its own TFF computation."""
        alg = self.algorithm
        weights = state.global_model_weights
        clients: dict[str, ClientRound] = {}
        cw_state = state.client_work
        for name, ds in client_data.items():
            # --- hospital side: its own local training as its own TFF computation ---
            out = alg.client_work.next(state.client_work, [weights], [ds])
            cw_state = out.state
            result = out.result[0]
            update = _np_list(result.update)
            weight = float(np.asarray(result.update_weight))
            m = _to_float_dict(out.measurements)
            commitment = weights_digest(update)
            rejected = ""
            if weight == 0.0 or not all(np.all(np.isfinite(u)) for u in update):
                # TFF's client work zeroes a non-finite update and gives it weight 0.
                rejected = "non-finite model update (zeroed by the TFF client work, weight 0)"
            if rejected:
                log.warning("round update from %s rejected: %s", name, rejected)
            clients[name] = ClientRound(name=name, update=update, weight=weight, commitment=commitment, metrics=m, rejected=rejected)
        return clients, cw_state

    def _masked_round(self, state: Any, clients: dict[str, ClientRound], cw_state: Any, round_num: int) -> RoundOutput:
        """Masked secure aggregation (issue 18): hospital-side quantise + mask, the server's TFF
        sum of masked vectors, unmasking; an aborted round applies nothing (state unchanged)."""
        alg = self.algorithm
        outcome = self.masked.aggregate(round_num, {n: c.update for n, c in clients.items()},
                                        {n: c.weight for n, c in clients.items()})
        loss = _train_loss(clients)
        if outcome.mean_update is None:
            return RoundOutput(state=state, clients=clients, aggregate=[], aggregator_measurements=None,
                               finalizer_measurements=None, train_loss=loss, update_rejected=False,
                               secure_sum_rel_error=None, secagg=outcome)
        weights = state.global_model_weights
        mean = tf.nest.pack_sequence_as(weights.trainable, outcome.mean_update)
        fin_out = alg.finalizer.next(state.finalizer, weights, mean)
        update_rejected = bool(_to_float_dict(fin_out.measurements).get("update_non_finite", 0))
        new_state = tff.learning.templates.LearningAlgorithmState(
            global_model_weights=fin_out.result, distributor=state.distributor, client_work=cw_state,
            aggregator=state.aggregator, finalizer=fin_out.state,
        )
        return RoundOutput(state=new_state, clients=clients, aggregate=list(outcome.mean_update),
                           aggregator_measurements=None, finalizer_measurements=fin_out.measurements, train_loss=loss,
                           update_rejected=update_rejected, secure_sum_rel_error=outcome.metrics.get("secagg_rel_error"),
                           secagg=outcome)

    def _aggregate(self, state: Any, clients: dict[str, ClientRound], cw_state: Any) -> RoundOutput:
        """Aggregation over all participants (DP / secure sum inside the TFF aggregator)."""
        alg = self.algorithm
        weights = state.global_model_weights
        updates = [tf.nest.pack_sequence_as(weights.trainable, c.update) for c in clients.values()]
        # The aggregator API is weighted; unweighted (DP) factories are wrapped and ignore weights.
        weights_k = [float(c.weight) for c in clients.values()]
        if alg.secure_sum and alg.weighted and sum(weights_k) > 0:
            # The weighted mean is invariant to scaling the weights. Through SecureSum the
            # weighted values n_k * update must fit the secure-sum range (TFF starts it at +-50 and
            # clips per coordinate until its quantile estimate has grown), so the public weights
            # (the ledger records n_k) are normalised to n_k / n first: the values stay within the
            # range from round 1 and the 32-bit quantisation step is ~2e-8.
            total = sum(weights_k)
            weights_k = [w / total for w in weights_k]
        agg_out = alg.aggregator.next(state.aggregator, updates, [np.float32(w) for w in weights_k])
        aggregate = _np_list(agg_out.result)

        secure_err = None
        if alg.secure_sum and alg.weighted:
            total = sum(c.weight for c in clients.values())
            if total > 0:
                exact = [
                    sum(c.weight * c.update[i].astype(np.float64) for c in clients.values()) / total
                    for i in range(len(aggregate))
                ]
                num = np.sqrt(sum(float(np.sum((a - e) ** 2)) for a, e in zip(aggregate, exact)))
                den = np.sqrt(sum(float(np.sum(e**2)) for e in exact)) or 1.0
                secure_err = float(num / den)

        # --- server: apply the aggregate with the server optimizer (rejects non-finite) ---
        fin_out = alg.finalizer.next(state.finalizer, weights, agg_out.result)
        fin_m = _to_float_dict(fin_out.measurements)
        update_rejected = bool(fin_m.get("update_non_finite", 0))
        if update_rejected:
            log.warning("aggregated update rejected by TFF's finalizer: update_non_finite=1; global model unchanged")
        new_state = tff.learning.templates.LearningAlgorithmState(
            global_model_weights=fin_out.result,
            distributor=state.distributor,
            client_work=cw_state,
            aggregator=agg_out.state,
            finalizer=fin_out.state,
        )
        train_loss = _train_loss(clients)
        return RoundOutput(
            state=new_state,
            clients=clients,
            aggregate=aggregate,
            aggregator_measurements=agg_out.measurements,
            finalizer_measurements=fin_out.measurements,
            train_loss=train_loss,
            update_rejected=update_rejected,
            secure_sum_rel_error=secure_err,
        )


__all__ = [
    "ClientRound",
    "FederatedAlgorithm",
    "FederatedTrainer",
    "KerasOrder",
    "RoundOutput",
    "arm_optimizers",
    "build_dp_fedavg",
    "build_dp_sgd_fedavg",
    "build_fast_model_delta_client_work",
    "build_fedavg",
    "flatten_state",
    "make_optimizer",
    "secure_weighted_mean_factory",
    "unflatten_state",
]
