"""The TFF engine: the ``federated`` and ``bfdl`` arms (paper 2.1 FedAvg; 3.1/3.5 DP and secure
aggregation).

``privacy.mode`` picks the learning process (:mod:`bfdl_tff.federated.processes`): weighted
FedAvg (``none``), DP-FedAvg with client-level clipping and Gaussian noise (``client``) or
hospital-side DP-SGD (``sample``); the ``bfdl`` arm with ``privacy.secure_sum`` aggregates through
TFF's secure sum (which needs the ``test`` execution context). A round runs one TFF computation per
hospital's client work and then the aggregation (``processes.FederatedTrainer``), so each hospital
can commit to its own update (:mod:`bfdl_tff.federated.hooks`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from bfdl_tff.config import ExperimentConfig
from bfdl_tff.federated import accounting
from bfdl_tff.federated.engine import derive_seed
from bfdl_tff.federated.inputs import FederationData
from bfdl_tff.federated.results import RoundResult
from bfdl_tff.tff_runtime import ContextKind


def build_algorithm(cfg: ExperimentConfig, bundle: Any, sched: accounting.PrivacySchedule) -> Any:
    """The arm's TFF learning process (``processes.FederatedAlgorithm``) for ``sched.mode``."""
    from bfdl_tff.federated import processes

    f, p = cfg.federated, cfg.privacy
    client_opt = processes.make_optimizer(f.client_optimizer, learning_rate=f.client_lr, momentum=f.client_momentum)
    server_opt = processes.make_optimizer(f.server_optimizer, learning_rate=f.server_lr, momentum=f.server_momentum)
    secure = cfg.arm == "bfdl" and p.secure_sum
    if sched.mode == "client":
        return processes.build_dp_fedavg(
            bundle.model_fn,
            client_optimizer=client_opt,
            server_optimizer=server_opt,
            noise_multiplier=sched.noise_multiplier,
            clients_per_round=sched.clients_per_round,
            l2_clip=p.l2_clip,
            noise_seed=cfg.resolved_seeds()["dp_noise"],
            secure_sum=secure,
            adaptive_clipping=p.adaptive_clipping,
            target_unclipped_quantile=p.target_unclipped_quantile,
            clip_learning_rate=p.clip_learning_rate,
            clipped_count_stddev=p.clipped_count_stddev,
        )
    if sched.mode == "sample":
        return processes.build_dp_sgd_fedavg(
            bundle.model_fn,
            per_example_loss=bundle.per_example_loss,
            batch_spec=bundle.batch_spec,
            client_optimizer=client_opt,
            server_optimizer=server_opt,
            noise_multiplier=sched.noise_multiplier,
            l2_clip=p.l2_clip,
            batch_size=f.batch_size,
            secure_sum=secure,
        )
    return processes.build_fedavg(bundle.model_fn, client_optimizer=client_opt, server_optimizer=server_opt, secure_sum=secure)


class FederatedEngine:
    """Runs the ``federated`` / ``bfdl`` arms with TFF (an :class:`~bfdl_tff.federated.engine.Engine`).

    Build it *before* any Keras model of the run (Keras invalidates eager models once TFF traces
    ``model_fn`` in a graph), then give it the seeded initial model with
    :meth:`attach_initial_model`.
    """

    def __init__(self, cfg: ExperimentConfig, data: FederationData, bundle: Any, sched: accounting.PrivacySchedule) -> None:
        from bfdl_tff.federated import communication, processes

        self.cfg, self.data, self.bundle, self.sched = cfg, data, bundle, sched
        self.seeds = cfg.resolved_seeds()
        self.mode = sched.mode
        self.rounds = cfg.federated.rounds
        self.algorithm = build_algorithm(cfg, bundle, sched)
        self.trainer = processes.FederatedTrainer(self.algorithm)
        self.traffic = communication.process_traffic(self.algorithm)
        self.context_kind: ContextKind | None = self.algorithm.context

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

    def summary_extra(self) -> dict[str, Any]:
        return {}

    # round -------------------------------------------------------------------------------
    def participants(self, round_num: int) -> list[str]:
        """The hospitals of round ``round_num``: all, or ``clients_per_round`` drawn by (seed, round)."""
        names = self.data.names
        cpr = self.cfg.federated.clients_per_round or len(names)
        if cpr >= len(names):
            return list(names)
        rng = np.random.default_rng([self.seeds["client_sampling"], round_num])
        idx = sorted(rng.choice(len(names), size=cpr, replace=False).tolist())
        return [names[i] for i in idx]

    def client_dataset(self, name: str, round_num: int) -> Any:
        """Hospital ``name``'s local data for round ``round_num`` (shuffled / sampled by (seed, round, k))."""
        from bfdl_tff.data.loader import make_dataset
        from bfdl_tff.federated import dp_sgd

        f = self.cfg.federated
        k = self.data.names.index(name)
        ts = self.data.train[name]
        if self.algorithm.data_kind == "dp_sgd_steps":
            rng = np.random.default_rng([self.seeds["data_shuffle"], round_num, k])
            return dp_sgd.round_dataset(ts, batch_size=f.batch_size, local_epochs=f.local_epochs, rng=rng,
                                        with_masks=self.bundle.with_masks)
        return make_dataset(
            ts,
            batch_size=f.batch_size,
            shuffle_seed=derive_seed(self.seeds["data_shuffle"], round_num, k),
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


__all__ = ["FederatedEngine", "build_algorithm"]
