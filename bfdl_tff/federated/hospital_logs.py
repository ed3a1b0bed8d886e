"""Hospital-side logs: each hospital's own training statistics (issue 16.3; paper 3.1, 3.5).

What a hospital computes from its private data during local training (the mean training loss,
the fraction of clipped per-unit gradients, the number of examples it drew this round, whether
its update was non-finite) is written **only** to that hospital's own file
``<run>/hospitals/<name>/local_metrics.csv`` (:meth:`bfdl_tff.runs.RunDir.hospital_metrics_file`).
In this simulation every hospital runs in one process, so the files sit in the run directory; in a
deployment each hospital writes its own and it never leaves the hospital. Server-side files
(``metrics.csv``, ``summary.json``, TensorBoard, checkpoints, ledger transactions) of the
``bfdl`` arm carry none of these values (:func:`releases_hospital_statistics`); the public
``n_k`` (training-set size, the FedAvg weight ``n_k / n`` of paper 2.1) is disclosed by design.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Callable, Mapping

from bfdl_tff.config import ExperimentConfig
from bfdl_tff.io_utils import atomic_write_text

#: The columns of ``local_metrics.csv`` (one row per round the hospital trained in).
HOSPITAL_COLUMNS = ["round", "train_loss", "num_examples", "clipped_fraction", "non_finite", "rejected"]
#: Server-side names of hospital statistics the ``bfdl`` arm must never release un-noised.
PRIVATE_STATISTICS = ("train_loss", "clipped_fraction")
_FROM_TFF = {"train_loss": "train/loss", "num_examples": "train/num_examples",
             "clipped_fraction": "train/clipped_fraction", "non_finite": "train/non_finite_clients"}


def releases_hospital_statistics(cfg: ExperimentConfig) -> bool:
    """Whether the server may report the hospitals' training statistics (train loss, clipped
    fraction). Only arms without a privacy claim (``federated``: plain FedAvg; ``centralized``:
    the server holds the images anyway) do; the ``bfdl`` arm keeps them hospital-side whatever
    its ``privacy.mode``."""
    return cfg.arm != "bfdl"


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return str(int(v))
    return repr(v) if isinstance(v, float) else str(v)


class HospitalLogs:
    """The hospitals' own ``local_metrics.csv`` files (hospital side of the simulation).

    ``path_of(name)`` gives a hospital's file. :meth:`record` appends the round's row (rows of
    that round or later, left by an interrupted run, are replaced: a resumed run repeats them)
    and rewrites the file atomically.
    """

    def __init__(self, path_of: Callable[[str], Path]) -> None:
        self.path_of = path_of
        self._rows: dict[str, list[dict[str, str]]] = {}

    def rows(self, hospital: str) -> list[dict[str, str]]:
        """The hospital's rows so far (read from its file on first use)."""
        if hospital not in self._rows:
            p = self.path_of(hospital)
            self._rows[hospital] = list(csv.DictReader(io.StringIO(p.read_text(encoding="utf-8")))) if p.is_file() else []
        return self._rows[hospital]

    def record(self, round_num: int, hospital: str, measurements: Mapping[str, float], *, rejected: str = "") -> None:
        """Hospital ``hospital``'s statistics of round ``round_num`` (its TFF client-work
        measurements: ``train/loss``, ``train/num_examples``, ``train/clipped_fraction``, ...)."""
        row = {"round": str(int(round_num)), "rejected": rejected}
        row.update({col: _cell(measurements.get(key)) for col, key in _FROM_TFF.items()})
        rows = [r for r in self.rows(hospital) if int(r["round"]) < round_num] + [row]
        self._rows[hospital] = rows
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=HOSPITAL_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        p = self.path_of(hospital)
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(p, buf.getvalue())


__all__ = ["HOSPITAL_COLUMNS", "PRIVATE_STATISTICS", "HospitalLogs", "releases_hospital_statistics"]
