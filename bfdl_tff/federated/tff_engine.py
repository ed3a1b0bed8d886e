"""The TFF engine: the ``federated`` and ``bfdl`` arms (paper 2.1 FedAvg; 3.1/3.5 DP and secure
aggregation).

``privacy.mode`` picks the learning process (:mod:`bfdl_tff.federated.processes`): weighted
FedAvg (``none``), DP-FedAvg with client-level clipping and Gaussian noise (``client``) or
hospital-side DP-SGD (``sample``). The ``bfdl`` arm aggregates with ``privacy.secure_aggregation``:
``masked`` (default; issue 18) runs the cryptographic protocol of :mod:`bfdl_tff.secagg` through
:class:`bfdl_tff.federated.masked.MaskedAggregation` (keys from the runner's keyring: the ledger
hook's, else ephemeral; native context), ``tff_secure_sum`` TFF's secure sum (which needs the
``test`` execution context), ``none`` the plain mean. A round runs one TFF computation per
hospital's client work and then the aggregation (``processes.FederatedTrainer``), so each hospital
can commit to its own update (:mod:`bfdl_tff.federated.hooks`).

Privacy boundary (issue 16.3): :meth:`FederatedEngine.run_round` hands each hospital's training
statistics (loss, clipped fraction, examples drawn) to that hospital's own log
(:mod:`bfdl_tff.federated.hospital_logs`); the :class:`RoundResult` the server reports carries
them only for arms without a privacy claim (``hospital_logs.releases_hospital_statistics``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from bfdl_tff.config import ExperimentConfig
from bfdl_tff.federated import accounting, noise
from bfdl_tff.federated.engine import derive_seed
from bfdl_tff.federated.hospital_logs import HospitalLogs, releases_hospital_statistics
from bfdl_tff.federated.inputs import FederationData
from bfdl_tff.federated.results import RoundResult
from bfdl_tff.tff_runtime import ContextKind


def build_algorithm(cfg: ExperimentConfig, bundle: Any, sched: accounting.PrivacySchedule) -> Any:
    """The arm's TFF learning process (``processes.FederatedAlgorithm``) for ``sched.mode``."""
    from bfdl_tff.federated import processes

    f, p = cfg.federated, cfg.privacy
    client_opt, server_opt = processes.arm_optimizers(cfg)
    secure = aggregation_of(cfg) == "tff_secure_sum"  # masked: the process's aggregator is not used
    if sched.mode == "client":
        return processes.build_dp_fedavg(
            bundle.model_fn,
            client_optimizer=client_opt,
            server_optimizer=server_opt,
            noise_multiplier=sched.noise_multiplier,
            clients_per_round=sched.clients_per_round,
            l2_clip=p.l2_clip,
            noise_seed=noise.dp_noise_seed(cfg),
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
            keras_model_fn=bundle.keras,
        )
    return processes.build_fedavg(bundle.model_fn, client_optimizer=client_opt, server_optimizer=server_opt, secure_sum=secure)


def aggregation_of(cfg: ExperimentConfig) -> str:
    """The secure aggregation of the run: ``privacy.secure_aggregation`` for the ``bfdl`` arm."""
    return cfg.privacy.aggregation if cfg.arm == "bfdl" else "none"


def masked_settings(cfg: ExperimentConfig, sched: accounting.PrivacySchedule, participants: int) -> Any:
    """The protocol settings (``privacy.secagg_*``). Client-level DP adds distributed noise of
    stddev ``z C / sqrt(t)`` per coordinate, so its range grows to ``C + 6 z C / sqrt(t)``."""
    from bfdl_tff.secagg.aggregate import MaskedSettings

    p = cfg.privacy
    s = MaskedSettings(bits=p.secagg_bits, clip=p.secagg_clip, threshold=p.secagg_threshold,
                       neighbours=p.secagg_neighbours, consistency_check=p.secagg_consistency_check)
    if sched.mode == "client":
        t = s.params(run_id="-", round_num=0, participants=tuple(range(1, participants + 1)), vector_length=1).threshold
        clip = max(p.secagg_clip, p.l2_clip * (1.0 + 6.0 * sched.noise_multiplier / np.sqrt(t)))
        s = MaskedSettings(bits=s.bits, clip=clip, threshold=s.threshold, neighbours=s.neighbours,
                           consistency_check=s.consistency_check)
    return s


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
        self.aggregation = aggregation_of(cfg)
        self.masked: Any = None  # MaskedAggregation, once the runner attached the keyring
        self.hospital_logs: HospitalLogs | None = None  # hospital-side logs (attach_hospital_logs)

    def attach_hospital_logs(self, logs: HospitalLogs) -> None:
        """Where each hospital writes its own training statistics (issue 16.3; hospital side)."""
        self.hospital_logs = logs

    def attach_secagg_keyring(self, keyring: Any) -> None:
        """Masked secure aggregation: the identities of the round protocol (a
        :class:`bfdl_tff.secagg.keyring.Keyring`). Call before the first round."""
        from bfdl_tff.federated.masked import MaskedAggregation, client_noise_for

        if self.aggregation != "masked":
            return
        k = len(self.participants(1))
        settings = masked_settings(self.cfg, self.sched, k)
        noise = None
        if self.sched.mode == "client":
            t = settings.params(run_id="-", round_num=0, participants=tuple(range(1, k + 1)), vector_length=1).threshold
            noise = client_noise_for(l2_clip=self.cfg.privacy.l2_clip, noise_multiplier=self.sched.noise_multiplier,
                                     threshold=t)
        self.masked = MaskedAggregation(settings=settings, keyring=keyring, weighted=self.algorithm.weighted,
                                        client_noise=noise)
        self.trainer.masked = self.masked

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
        if self.masked is None:
            return {}
        return {"secagg": {**{k: getattr(self.masked.settings, k) for k in
                              ("bits", "clip", "threshold", "neighbours", "consistency_check")},
                           "keys": self.masked.keyring.describe(),
                           "client_level_noise": self.masked.client_noise is not None}}

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
            rng = noise.dp_sgd_rng(self.cfg, round_num=round_num, hospital_index=k)
            return dp_sgd.round_dataset(ts, batch_size=f.batch_size, local_epochs=f.local_epochs, rng=rng,
                                        with_masks=self.bundle.with_masks, **self.sched.dp_sgd_kwargs(name))
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
        if self.aggregation == "masked" and self.masked is None:
            raise RuntimeError("masked secure aggregation needs a keyring (FederatedEngine.attach_secagg_keyring)")
        out = self.trainer.run_round(state, datasets, round_num=round_num)
        # --- hospital side (issue 16.3): each hospital's own statistics go to its own log ---
        if self.hospital_logs is not None:
            for n, c in out.clients.items():
                self.hospital_logs.record(round_num, n, c.metrics, rejected=c.rejected)
        # --- server side: hospital statistics only for arms without a privacy claim ---
        release = releases_hospital_statistics(self.cfg)
        clipped = [c.metrics.get("train/clipped_fraction") for c in out.clients.values()] if release else []
        clipped = [c for c in clipped if c is not None]
        bb, bu = self.traffic.round_bytes(len(parts))
        sa = out.secagg
        if sa is not None:  # the protocol's measured wire bytes (masked vectors, keys, shares, signatures)
            bu = int(sum(sa.raw.bytes_sent.values()))
        return out.state, RoundResult(
            participants=parts,
            commitments={n: c.commitment for n, c in out.clients.items()},
            train_loss=out.train_loss if release else float("nan"),
            bytes_broadcast=bb,
            bytes_uploaded=bu,
            rejected={n: c.rejected for n, c in out.clients.items() if c.rejected},
            update_non_finite=out.update_rejected,
            secure_sum_rel_error=out.secure_sum_rel_error,
            clipped_fraction=float(np.mean(clipped)) if clipped else None,
            secagg_transcript=sa.transcript if sa is not None else None,
            secagg_aborted=sa.aborted if sa is not None else None,
            secagg=dict(sa.metrics) if sa is not None else {},
        )


__all__ = ["FederatedEngine", "aggregation_of", "build_algorithm", "masked_settings"]
