"""Per-round checkpoints for exact resume (paper 3.1: rounds of FedAvg; resume is ours).

Round ``t`` writes two files under ``RUN_DIR/checkpoints/``, both atomically:

* ``round_TTTT.npz``: the engine's whole state as a flat list of arrays (TFF: model, server
  optimizer, aggregator state incl. the DP noise seed and the secure-sum range estimates;
  centralized: Keras weights and optimizer variables);
* ``round_TTTT.json``: the metadata written *after* the state file, so its presence means the
  checkpoint is complete: ``round``, ``rows`` (every ``metrics.csv`` row so far), ``cum_bytes``,
  what the round's hooks need to be re-announced (``participants``, ``num_examples``,
  ``commitments``, ``privacy``, ``round_seconds``, ``global_digest``), ``last_eval`` and
  ``hooks_done``.

A checkpoint is first written with ``hooks_done: false`` (unless the run has no hooks) and
rewritten with ``true`` once every hook has seen the round (:meth:`CheckpointStore.mark`): on
resume a round whose hooks did not finish is re-announced. Why not ``tff.program``'s
``FileProgramStateManager``: see docs/federated.md ("Checkpoints and resume").
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bfdl_tff.io_utils import atomic_write_json
from bfdl_tff.runs import load_weights_npz, save_weights_npz


def json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats as ``None`` and numpy scalars as Python numbers."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    return obj


@dataclass
class Checkpoint:
    """One complete checkpoint: round number, state file and metadata (see module doc)."""

    round_num: int
    state_file: Path
    meta: dict[str, Any]

    @property
    def hooks_done(self) -> bool:
        return bool(self.meta.get("hooks_done", False))


class CheckpointStore:
    """The checkpoints of one run directory: save, mark, latest, load, prune, clear."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def state_file(self, round_num: int) -> Path:
        return self.directory / f"round_{round_num:04d}.npz"

    def meta_file(self, round_num: int) -> Path:
        return self.directory / f"round_{round_num:04d}.json"

    def clear(self) -> None:
        """Remove every checkpoint (a fresh, non-resumed run)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for p in list(self.directory.glob("round_*")):
            p.unlink()

    def save(self, round_num: int, arrays: Sequence[np.ndarray], meta: dict[str, Any]) -> Checkpoint:
        """Write the state, then the metadata (the commit point of the checkpoint)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        state_file = self.state_file(round_num)
        save_weights_npz(state_file, arrays)
        meta = json_safe({"round": round_num, **meta})
        atomic_write_json(self.meta_file(round_num), meta)
        return Checkpoint(round_num, state_file, meta)

    def mark(self, ckpt: Checkpoint, **fields: Any) -> None:
        """Record more facts about a saved round (e.g. ``hooks_done=True``); atomic."""
        ckpt.meta.update(json_safe(fields))
        atomic_write_json(self.meta_file(ckpt.round_num), ckpt.meta)

    def latest(self) -> Checkpoint | None:
        """The newest complete checkpoint (readable metadata and its state file), or None."""
        best: Checkpoint | None = None
        for j in sorted(self.directory.glob("round_*.json")):
            try:
                meta = json.loads(j.read_text(encoding="utf-8"))
                npz = j.with_suffix(".npz")
                if not npz.exists():
                    continue
                r = int(meta["round"])
            except (OSError, ValueError, KeyError):
                continue
            if best is None or r > best.round_num:
                best = Checkpoint(r, npz, meta)
        return best

    def load_arrays(self, ckpt: Checkpoint) -> list[np.ndarray]:
        return load_weights_npz(ckpt.state_file)

    def prune(self, keep: int) -> None:
        """Keep the ``keep`` newest checkpoints (``keep <= 0``: keep all)."""
        if keep <= 0:
            return
        rounds = sorted(int(p.stem.split("_")[1]) for p in self.directory.glob("round_*.json"))
        for r in rounds[:-keep]:
            for p in (self.meta_file(r), self.state_file(r)):
                if p.exists():
                    p.unlink()


__all__ = ["Checkpoint", "CheckpointStore", "json_safe"]
