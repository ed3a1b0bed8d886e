"""The centralized arm (paper 3.3's comparison): plain Keras on the pooled images of all hospitals.

Same model config, same initial weights (seed ``model_init``), same loss, the Keras optimizer
matching the client optimizer, and the same budget of passes over the data: ``rounds`` "rounds"
of ``local_epochs`` epochs each (or ``federated.centralized_epochs`` rounds of one epoch), so its
``metrics.csv`` lines up with the federated arms. Shuffling is seeded per round. Communication:
the server would have to collect every training image once; the bytes of the actual PNG files
are charged to round 1 (:func:`bfdl_tff.federated.communication.image_collection_bytes`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from bfdl_tff.federated.engine import derive_seed
from bfdl_tff.federated.results import RoundResult


class CentralizedEngine:
    """The ``centralized`` arm as an :class:`~bfdl_tff.federated.engine.Engine` (no TFF context)."""

    context_kind = None

    def __init__(self, cfg: Any, data: Any, bundle: Any, init_keras: Any) -> None:
        import tensorflow as tf

        from bfdl_tff.data.loader import ImageSet
        from bfdl_tff.federated import communication, model_bridge
        from bfdl_tff.models import losses as mlosses

        self.cfg, self.data, self.bundle = cfg, data, bundle
        f = cfg.federated
        if f.centralized_epochs > 0:
            self.rounds, self.epochs_per_round = f.centralized_epochs, 1
        else:
            self.rounds, self.epochs_per_round = f.rounds, f.local_epochs
        sets = [data.train[n] for n in data.names]
        masks = [s.mask for s in sets]
        self.pooled = ImageSet(
            images=[i for s in sets for i in s.images],
            patient_ids=np.concatenate([s.patient_ids for s in sets]),
            x=np.concatenate([s.x for s in sets]),
            y=np.concatenate([s.y for s in sets]),
            mask=np.concatenate(masks) if all(m is not None for m in masks) else None,
            task=data.resolved_task(),  # issue 15: the pooled images keep the federation's task
        )
        self.model = bundle.keras()
        self.model.set_weights(init_keras.get_weights())
        self.init_weights = [np.asarray(w) for w in init_keras.get_weights()]
        loss, loss_weights = mlosses.build_loss(bundle.cfg, class_weights=bundle.class_weights)
        self.optimizer = model_bridge.keras_optimizer(f.client_optimizer, learning_rate=f.client_lr, momentum=f.client_momentum)
        self.model.compile(optimizer=self.optimizer, loss=loss, loss_weights=loss_weights)
        self.optimizer.build(self.model.trainable_variables)
        self.seeds = cfg.resolved_seeds()
        self.collection_bytes = communication.image_collection_bytes(
            data.root, self.pooled.images, pixels=[self.pooled.x]
        )
        self._tf = tf

    def initial_state(self) -> Any:
        self.model.set_weights(self.init_weights)
        for v in self.optimizer.variables:
            v.assign(np.zeros(v.shape, v.dtype.as_numpy_dtype))
        return None

    def state_arrays(self, state: Any) -> list[np.ndarray]:
        return [np.asarray(w) for w in self.model.get_weights()] + [np.asarray(v.numpy()) for v in self.optimizer.variables]

    def load_state(self, arrays: Sequence[np.ndarray]) -> Any:
        n = len(self.model.get_weights())
        opt_vars = self.optimizer.variables
        if len(arrays) != n + len(opt_vars):
            raise ValueError(f"checkpoint has {len(arrays)} arrays, expected {n + len(opt_vars)}")
        self.model.set_weights(list(arrays[:n]))
        for v, a in zip(opt_vars, arrays[n:]):
            v.assign(a)
        return None

    def global_weights(self, state: Any) -> list[np.ndarray]:
        return [np.asarray(w) for w in self.model.get_weights()]

    def summary_extra(self) -> dict[str, Any]:
        collected, source = self.collection_bytes
        return {"collected_image_bytes": collected, "collected_bytes_source": source}

    def run_round(self, state: Any, round_num: int) -> tuple[Any, RoundResult]:
        from bfdl_tff.data.loader import make_dataset

        ds = make_dataset(
            self.pooled,
            batch_size=self.cfg.federated.batch_size,
            shuffle_seed=derive_seed(self.seeds["data_shuffle"], round_num, 999),
            epochs=1,
            with_masks=self.bundle.with_masks,
        )
        hist = self.model.fit(ds, epochs=self.epochs_per_round, verbose=0)
        loss = float(hist.history["loss"][-1])
        return None, RoundResult(
            participants=["central"],
            commitments={},
            train_loss=loss,
            bytes_broadcast=0,
            # the server collects every training image once, before the first "round"
            bytes_uploaded=self.collection_bytes[0] if round_num == 1 else 0,
        )


__all__ = ["CentralizedEngine"]
