"""Each hospital's privacy budget after every round (issue 16.2; paper 3.5).

With sample-level DP-SGD every hospital has its own noise multiplier, calibrated from its own
number of patients and steps (:class:`bfdl_tff.federated.accounting.PrivacySchedule`), so each
has its own epsilon. :class:`PrivacyRounds` gives, after round ``r``, every hospital's cumulative
``{epsilon, delta, noise_multiplier}`` (the ``hospitals`` field of the round's ``privacy.record``
ledger transaction) and writes them to the run's ``privacy_rounds.csv`` (one row per round and
hospital). Epsilon is public (the guarantee is what the consortium publishes); it is computed from
the public ``n_k``, patient counts and schedule, not from the data of the round. Client-level
DP-FedAvg has one epsilon per run (add/remove a whole hospital), in ``metrics.csv``'s
``epsilon`` column; no per-hospital rows.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from bfdl_tff.federated.accounting import PrivacySchedule
from bfdl_tff.io_utils import atomic_write_text

COLUMNS = ["round", "hospital", "epsilon", "delta", "noise_multiplier"]


class PrivacyRounds:
    """Per-hospital budgets by round of a sample-mode schedule (memoised; empty otherwise)."""

    def __init__(self, sched: PrivacySchedule, path: Path) -> None:
        self.sched, self.path = sched, path
        self._by_round: dict[int, dict[str, dict[str, float]]] = {}

    @property
    def per_hospital(self) -> bool:
        return self.sched.mode == "sample"

    def after(self, round_num: int) -> dict[str, dict[str, float]]:
        """``{hospital: {epsilon, delta, noise_multiplier}}`` after ``round_num`` rounds ({} if not sample mode)."""
        if not self.per_hospital:
            return {}
        if round_num not in self._by_round:
            eps = self.sched.epsilons_after(round_num)
            self._by_round[round_num] = {
                name: {"epsilon": float(e), "delta": float(self.sched.delta),
                       "noise_multiplier": float(self.sched.hospital(k).noise_multiplier)}
                for k, (name, e) in enumerate(eps.items())}
        return self._by_round[round_num]

    def record(self, rounds_done: int) -> None:
        """(Re)write ``privacy_rounds.csv`` for rounds ``1 .. rounds_done`` (atomic; sample mode only)."""
        if not self.per_hospital:
            return
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in range(1, rounds_done + 1):
            for name, v in self.after(r).items():
                w.writerow({"round": r, "hospital": name, **{k: repr(x) for k, x in v.items()}})
        atomic_write_text(self.path, buf.getvalue())


def read_privacy_rounds(path: Path) -> dict[int, dict[str, dict[str, Any]]]:
    """``privacy_rounds.csv`` as ``{round: {hospital: {epsilon, delta, noise_multiplier}}}``."""
    out: dict[int, dict[str, dict[str, Any]]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            out.setdefault(int(row["round"]), {})[row["hospital"]] = {
                k: float(row[k]) for k in ("epsilon", "delta", "noise_multiplier")}
    return out


__all__ = ["COLUMNS", "PrivacyRounds", "read_privacy_rounds"]
