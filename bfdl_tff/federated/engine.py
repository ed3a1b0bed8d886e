"""The engine protocol: one arm's training, one round at a time (paper 2.1, 3.1, 3.3).

The runner (:mod:`bfdl_tff.federated.runner`) drives an :class:`Engine` and never looks inside
it; each arm has its own engine:

* :class:`bfdl_tff.federated.tff_engine.FederatedEngine`: the ``federated`` and ``bfdl`` arms
  (TFF FedAvg, DP-FedAvg or DP-SGD, optional secure sum);
* :class:`bfdl_tff.federated.centralized.CentralizedEngine`: the ``centralized`` arm (Keras on
  the pooled images).

The state an engine returns is opaque to the runner; ``state_arrays``/``load_state`` turn it into
a flat list of arrays and back, which is all a checkpoint needs for exact resume. Every random
choice of round ``t`` must be derived from (seed, ``t``) (:func:`derive_seed`) so that a resumed
run repeats the uninterrupted one bit for bit.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from bfdl_tff.federated.results import RoundResult
from bfdl_tff.tff_runtime import ContextKind


@runtime_checkable
class Engine(Protocol):
    """One arm's trainer. ``rounds`` and ``context_kind`` are plain attributes."""

    rounds: int  # how many rounds this arm trains
    context_kind: ContextKind | None  # the TFF execution context it needs (None: no TFF)

    def initial_state(self) -> Any:
        """The state before round 1 (the seeded initial model, fresh optimizer state)."""
        ...

    def load_state(self, arrays: Sequence[np.ndarray]) -> Any:
        """The state saved by :meth:`state_arrays` (a checkpoint)."""
        ...

    def state_arrays(self, state: Any) -> list[np.ndarray]:
        """Everything needed to continue from ``state``, as a flat list of arrays."""
        ...

    def global_weights(self, state: Any) -> list[np.ndarray]:
        """The global model in Keras ``get_weights()`` order."""
        ...

    def run_round(self, state: Any, round_num: int) -> tuple[Any, RoundResult]:
        """Train round ``round_num`` (1-based); return the new state and what the round did."""
        ...

    def summary_extra(self) -> dict[str, Any]:
        """Arm-specific fields for ``summary.json`` (e.g. the centralized arm's collected bytes)."""
        ...


def derive_seed(*key: int) -> int:
    """A 32-bit seed derived from integers (e.g. (data_shuffle seed, round, hospital index))."""
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1, dtype=np.uint32)[0])


__all__ = ["Engine", "derive_seed"]
