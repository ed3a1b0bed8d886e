"""One masked secure-aggregation round over float updates (issue 18.2; paper 3.1 and 3.5).

:func:`masked_sum` is what the federated trainer (and the synthetic ledger runs) call for a round
under ``privacy.secure_aggregation: masked``:

1. **hospital side**, per hospital: its flat float update (already clipped and DP-noised where the
   DP mechanism says so) is quantised to ``Z_{2^b}`` (:class:`~bfdl_tff.secagg.quantize.Quantizer`:
   per-coordinate range ``[-R, R]``, level ``Q = floor((2^(b-1) - 1) / K)``, so the sum of the K
   hospitals' integers cannot wrap) and masked by the hospital's protocol state machine
   (:class:`~bfdl_tff.secagg.client.SecAggClient`);
2. **server side**: the aggregator's state machine (:class:`~bfdl_tff.secagg.server.SecAggServer`)
   receives only signed protocol messages - masked integer vectors among them - and sums the
   survivors' masked vectors with ``sum_fn`` (the trainer passes a TFF computation placed at
   ``tff.SERVER``), removes the survivors' self-masks (and a dropped hospital's pairwise masks)
   through the protocol's unmasking, and returns the sum of the survivors' quantised inputs;
3. the sum is dequantised (float64).

The five protocol steps run through the in-process driver :func:`bfdl_tff.secagg.simulate.run_round`
(every message encoded to bytes and decoded on the other side; bytes and time per party are
measured). A protocol error from any party aborts the round: :class:`MaskedRound` then has
``total = None`` and the abort reason, with the server's transcript (reason included) for the
ledger. Nothing partial is ever returned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from bfdl_tff.secagg.errors import SecAggError
from bfdl_tff.secagg.keyring import Keyring, protocol_ids
from bfdl_tff.secagg.params import RoundParams, default_threshold
from bfdl_tff.secagg.quantize import Quantizer
from bfdl_tff.secagg.simulate import Hospital, Intercept, run_round

log = logging.getLogger("bfdl_tff.secagg")

SumFn = Callable[[Sequence[np.ndarray]], np.ndarray]


@dataclass(frozen=True, kw_only=True)
class MaskedSettings:
    """The protocol settings of a run (``privacy.secagg_*``); ``threshold = 0`` = majority of the
    share holders, ``neighbours = 0`` = every pair (SecAgg), else SecAgg+ with k neighbours."""

    bits: int = 32
    clip: float = 1.0
    threshold: int = 0
    neighbours: int = 0
    consistency_check: bool = True

    def params(self, *, run_id: str, round_num: int, participants: tuple[int, ...], vector_length: int) -> RoundParams:
        degree = self.neighbours if self.neighbours else len(participants) - 1
        return RoundParams(
            run_id=run_id, round=round_num, participants=participants,
            threshold=self.threshold or default_threshold(degree + 1), bits=self.bits, vector_length=vector_length,
            neighbours=self.neighbours or None, consistency_check=self.consistency_check,
        )

    def quantizer(self, hospitals: int) -> Quantizer:
        return Quantizer(bits=self.bits, clip=float(self.clip), max_summands=hospitals)


@dataclass
class MaskedRound:
    """The outcome of one masked round (``total is None`` iff the round aborted)."""

    total: np.ndarray | None  # float64 sum of the survivors' (clipped) inputs
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    transcript: dict[str, Any]
    aborted: str | None
    quantizer: dict[str, Any]
    clipped: dict[str, int] = field(default_factory=dict)  # coordinates outside [-R, R], per hospital
    bytes_sent: dict[str, int] = field(default_factory=dict)
    client_seconds: dict[str, float] = field(default_factory=dict)
    server_seconds: float = 0.0
    server_inbox: list[Any] = field(default_factory=list)  # every message the server received (tests)


def masked_sum(
    updates: Mapping[str, np.ndarray],
    *,
    keyring: Keyring,
    round_num: int,
    settings: MaskedSettings,
    sum_fn: SumFn | None = None,
    drop_after_shares: Iterable[str] = (),
    drop_after_masked: Iterable[str] = (),
    intercept: Intercept | None = None,
) -> MaskedRound:
    """Securely sum ``updates`` (hospital -> flat float vector, all the same length).

    ``drop_after_shares`` / ``drop_after_masked``: hospitals that stop after sending their shares
    (their pairwise masks are removed via their Shamir-shared key) or after their masked input
    (it stays in the sum); ``intercept`` tampers with messages in flight (tests)."""
    names = sorted(updates)
    pid = protocol_ids(names)
    lengths = {int(np.asarray(u).shape[0]) for u in updates.values()}
    if len(lengths) != 1:
        raise ValueError(f"updates of different lengths {sorted(lengths)}")
    params = settings.params(run_id=keyring.run_id, round_num=round_num, participants=tuple(pid[h] for h in names),
                             vector_length=lengths.pop())
    quant = settings.quantizer(len(names))
    hospitals = [Hospital(id=pid[h], name=h, signer=keyring.signer(h), kx=keyring.kx_key(h)) for h in names]
    roster = keyring.roster(names)
    for h in hospitals:  # the keyring's keys must be the roster's (e.g. the ledger's registry)
        if roster[h.id] != h.participant():
            raise SecAggError(f"round {round_num}: {h.name}'s keys differ from the roster's registered keys")
    # --- hospital side: quantise the (clipped, DP-noised) update; masking happens in run_round ---
    clipped = {h: quant.clipped_count(updates[h]) for h in names}
    inputs = {pid[h]: quant.quantize(np.asarray(updates[h], dtype=np.float64)) for h in names}
    by_id = {v: k for k, v in pid.items()}
    try:
        rep = run_round(params, hospitals, inputs, sum_fn=sum_fn, intercept=intercept,
                        drop_after_shares=[pid[h] for h in drop_after_shares],
                        drop_after_masked=[pid[h] for h in drop_after_masked])
    except SecAggError as exc:
        ids = ", ".join(f"{i}={h}" for h, i in pid.items())
        reason = f"{type(exc).__name__}: {exc} (protocol ids: {ids})"
        log.warning("round %d: secure aggregation aborted, nothing applied: %s", round_num, reason)
        return MaskedRound(total=None, survivors=(), dropped=(), transcript=exc.transcript or {}, aborted=reason,
                           quantizer=quant.describe(), clipped=clipped)
    res = rep.result
    return MaskedRound(
        total=quant.dequantize_sum(res.vector), survivors=tuple(by_id[i] for i in res.survivors),
        dropped=tuple(by_id[i] for i in res.dropped), transcript=res.transcript, aborted=None,
        quantizer=quant.describe(), clipped=clipped,
        bytes_sent={by_id[i]: b for i, b in rep.bytes_sent.items()},
        client_seconds={by_id[i]: t for i, t in rep.client_seconds.items()}, server_seconds=rep.server_seconds,
        server_inbox=rep.server_inbox,
    )


__all__ = ["MaskedRound", "MaskedSettings", "SumFn", "masked_sum"]
