"""Per-round hook interface between the federated runner and the ledger (paper 3.1, 3.4).

The paper's blockchain "tracked the origin of each model update hash, the institution
contributing to each update and the timestamp" (3.1). The runner calls every
:class:`RoundHook` once at the start (:class:`RunInfo`), after every completed round
(:class:`RoundContext`, after the checkpoint of that round is written) and at the end (the summary
dict). The B-FDL ledger integration implements this protocol.

``client_commitments``: for each participating hospital, the hex SHA-256
(:func:`bfdl_tff.hashing.weights_digest`) of **that hospital's own model update** (the
``ClientOutput.update`` tensors, i.e. ``w_t - w_t^k`` for the trainable weights in
``model.trainable_weights`` order, before any clipping, noise or secure aggregation) for the
round. It is computed hospital-side: the runner executes each hospital's client work as its own
TFF computation (``client_work.next`` placed at ``tff.CLIENTS`` with a single client), hands the
update to the hospital, which hashes it, and then the *same* update values go into the
aggregation computation (DP / secure sum) that produces the global model. The server process
(aggregator) never needs the individual update to produce the round's result; the commitment is
what the hospital publishes to the ledger. See ``bfdl_tff.federated.processes.FederatedTrainer``.

A hook that raises aborts the run (after the round's checkpoint was written, so ``--resume``
re-runs the hook for that round only if the runner saw it fail: the runner records hook
completion in the checkpoint). Hooks must be idempotent per round number.

Durability (issue 17.1): a hook that finishes a round's work after ``on_round_end`` returns (the
ledger hook commits in the background) has ``durable_through() -> int``: the last round r such that
the hook's work for rounds 1..r is durable. The runner marks a checkpoint ``hooks_done`` only up
to :func:`durable_through` over all hooks (a hook without the method is durable when
``on_round_end`` returns) and never prunes a checkpoint that is not yet done; on resume it
re-announces every checkpoint that is not done, in order (``RunInfo.extra["pending_rounds"]``).

Lifecycle: the runner owns it. ``on_start`` once (also on resume), ``on_round_end`` per round,
``on_end`` after ``summary.json`` and ``final_model.npz`` are written, and ``close()`` on every
hook in the runner's ``finally`` (:func:`close_hooks`): after ``on_end``, after a failure, after
SIGTERM/SIGINT, and when a resumed run was already complete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

log = logging.getLogger("bfdl_tff.federated")


@dataclass
class RunInfo:
    run_dir: Path
    config: Any  # bfdl_tff.config.ExperimentConfig
    hospital_names: list[str]
    num_examples: dict[str, int]
    num_params: int
    # Extra facts (arm, privacy schedule, start round when resuming). Optional for hooks.
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RoundContext:
    round_num: int  # 1-based
    run_dir: Path
    global_weights: list[np.ndarray]  # model.get_weights() order, after the round
    participants: list[str]
    num_examples: dict[str, int]
    client_commitments: dict[str, str]
    metrics: dict[str, float]  # the round's metrics.csv row
    privacy: dict[str, Any]  # mode, epsilon, delta, accountant, noise_multiplier, l2_clip
    round_seconds: float
    checkpoint_path: Path | None  # the round's saved state (checkpoints/state/program_state_<t>/)
    # Masked secure aggregation (issue 18): the round's protocol transcript
    # (bfdl_tff.secagg.transcript.Transcript.to_record(); "aborted" holds the reason of an aborted
    # round, whose global model is the previous round's). None for other aggregations.
    secagg_transcript: dict[str, Any] | None = None


@runtime_checkable
class RoundHook(Protocol):
    def on_start(self, info: RunInfo) -> None: ...

    def on_round_end(self, ctx: RoundContext) -> None: ...

    def on_end(self, summary: dict) -> None: ...

    def close(self) -> None:
        """Release resources (threads, ledger connections). Called by the runner in its
        ``finally``, after ``on_end`` or after a failure; must be idempotent."""
        ...


@runtime_checkable
class SecAggKeyringProvider(Protocol):
    """A hook that provides the identities of masked secure aggregation (the B-FDL ledger hook:
    keystore keys, roster from the chain). The runner asks it after ``on_start``; without one,
    a masked run uses ephemeral in-memory keys."""

    def secagg_keyring(self) -> Any: ...


class RecordingHook:
    """A hook that keeps everything it is given (for tests and debugging)."""

    def __init__(self) -> None:
        self.info: RunInfo | None = None
        self.rounds: list[RoundContext] = []
        self.summary: dict | None = None
        self.closed = False

    def on_start(self, info: RunInfo) -> None:
        self.info = info

    def on_round_end(self, ctx: RoundContext) -> None:
        self.rounds.append(ctx)

    def on_end(self, summary: dict) -> None:
        self.summary = summary

    def close(self) -> None:
        self.closed = True


def durable_through(hooks: Sequence[RoundHook], announced: int) -> int:
    """The last round every hook has made durable, given that rounds up to ``announced`` were
    announced (a hook without ``durable_through()`` is durable once ``on_round_end`` returned)."""
    out = int(announced)
    for h in hooks:
        fn = getattr(h, "durable_through", None)
        if callable(fn):
            out = min(out, int(fn()))
    return out


def close_hooks(hooks: Sequence[RoundHook], *, raise_errors: bool) -> None:
    """``close()`` every hook, even when one fails (each failure is logged). With
    ``raise_errors`` the first failure is raised afterwards; without (the run is already failing),
    the run's own exception is the one that propagates."""
    first: BaseException | None = None
    for h in hooks:
        try:
            h.close()
        except Exception as e:  # noqa: BLE001 - every hook gets closed; reported below
            log.error("closing hook %s failed: %s: %s", type(h).__name__, type(e).__name__, e)
            first = first or e
    if first is not None and raise_errors:
        raise first


__all__ = ["RecordingHook", "RoundContext", "RoundHook", "RunInfo", "SecAggKeyringProvider", "close_hooks",
           "durable_through"]
