"""Per-round checkpoints for exact resume (paper 3.1: rounds of FedAvg; resume is ours).

Round ``t`` writes, under ``RUN_DIR/checkpoints/``:

* ``state/program_state_<t>/``: the engine's whole state as a flat list of arrays (TFF: model,
  server optimizer, aggregator state incl. the DP noise seed and the secure-sum range estimates;
  centralized: Keras weights and optimizer variables), saved by TFF's
  ``tff.program.FileProgramStateManager`` (a SavedModel written to a temporary directory and
  renamed into place);
* ``round_TTTT.json``: the metadata, written atomically *after* the state, so its presence means
  the checkpoint is complete: ``round``, ``rows`` (every ``metrics.csv`` row so far),
  ``cum_bytes``, what the round's hooks need to be re-announced (``participants``,
  ``num_examples``, ``commitments``, ``privacy``, ``round_seconds``, ``global_digest``),
  ``last_eval``, ``hooks_done`` and ``state_tensors`` (how many arrays the state has).

A checkpoint is first written with ``hooks_done: false`` (unless the run has no hooks) and
rewritten with ``true`` once every hook has seen the round (:meth:`CheckpointStore.mark`): on
resume a round whose hooks did not finish is re-announced. Checkpoints written before the
program-state manager was adopted (``round_TTTT.npz`` beside the JSON) are still resumed from.

Around TFF's manager: it refuses to save a version that exists (a state saved just before a crash,
whose metadata was never written, is removed first), it never cleans the temporary directory of
an interrupted save (done here), and its API is async (run with ``asyncio.run``; do not call from
inside a running event loop). Measurement and cost: docs/federated.md ("Checkpoints and resume").
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bfdl_tff.io_utils import atomic_write_json
from bfdl_tff.runs import load_weights_npz

STATE_PREFIX = "program_state_"


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
    """One complete checkpoint: round number, where its state is, and its metadata."""

    round_num: int
    state_path: Path  # state/program_state_<t>/ (or a legacy round_TTTT.npz)
    meta: dict[str, Any]

    @property
    def hooks_done(self) -> bool:
        return bool(self.meta.get("hooks_done", False))


class CheckpointStore:
    """The checkpoints of one run directory: save, mark, latest, load, prune, clear."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.state_dir = self.directory / "state"
        self._manager: Any = None

    # ---- paths ---------------------------------------------------------------------------
    def state_path(self, round_num: int) -> Path:
        return self.state_dir / f"{STATE_PREFIX}{round_num}"

    def legacy_state_file(self, round_num: int) -> Path:
        return self.directory / f"round_{round_num:04d}.npz"

    def meta_file(self, round_num: int) -> Path:
        return self.directory / f"round_{round_num:04d}.json"

    def _program_state_manager(self) -> Any:
        if self._manager is None:
            import tensorflow_federated as tff

            # keep_total=0: no removal by TFF; prune() keeps states and metadata together.
            self._manager = tff.program.FileProgramStateManager(self.state_dir, prefix=STATE_PREFIX, keep_total=0,
                                                                keep_first=False)
        return self._manager

    # ---- writing -------------------------------------------------------------------------
    def clear(self) -> None:
        """Remove every checkpoint (a fresh, non-resumed run)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for p in list(self.directory.glob("round_*")):
            p.unlink()
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def save(self, round_num: int, arrays: Sequence[np.ndarray], meta: dict[str, Any]) -> Checkpoint:
        """Save the state (program-state manager), then the metadata (the commit point)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._remove_state(round_num)  # left by a crash between state and metadata
        arrays = [np.asarray(a) for a in arrays]
        asyncio.run(self._program_state_manager().save(arrays, round_num))
        meta = json_safe({"round": round_num, **meta, "state_tensors": len(arrays)})
        atomic_write_json(self.meta_file(round_num), meta)
        return Checkpoint(round_num, self.state_path(round_num), meta)

    def mark(self, ckpt: Checkpoint, **fields: Any) -> None:
        """Record more facts about a saved round (e.g. ``hooks_done=True``); atomic."""
        ckpt.meta.update(json_safe(fields))
        atomic_write_json(self.meta_file(ckpt.round_num), ckpt.meta)

    def prune(self, keep: int) -> None:
        """Keep the ``keep`` newest checkpoints (``keep <= 0``: keep all); drop orphaned states."""
        if keep <= 0:
            return
        rounds = sorted(int(p.stem.split("_")[1]) for p in self.directory.glob("round_*.json"))
        kept = rounds[-keep:]
        for r in rounds[:-keep]:
            self.meta_file(r).unlink(missing_ok=True)
            self._remove_state(r)
        for r in self._state_versions():
            if kept and r < kept[-1] and r not in kept:
                self._remove_state(r)

    def _remove_state(self, round_num: int) -> None:
        shutil.rmtree(self.state_path(round_num), ignore_errors=True)
        for tmp in self.state_dir.glob(f"{STATE_PREFIX}{round_num}_temp*"):  # an interrupted save
            shutil.rmtree(tmp, ignore_errors=True)
        self.legacy_state_file(round_num).unlink(missing_ok=True)

    def _state_versions(self) -> list[int]:
        out = []
        for p in self.state_dir.glob(f"{STATE_PREFIX}*"):
            suffix = p.name[len(STATE_PREFIX):]
            if suffix.isdigit():
                out.append(int(suffix))
        return sorted(out)

    # ---- reading -------------------------------------------------------------------------
    def latest(self) -> Checkpoint | None:
        """The newest complete checkpoint (readable metadata and its state), or None."""
        best: Checkpoint | None = None
        for j in sorted(self.directory.glob("round_*.json")):
            try:
                meta = json.loads(j.read_text(encoding="utf-8"))
                r = int(meta["round"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            state = self.state_path(r) if "state_tensors" in meta else self.legacy_state_file(r)
            if not state.exists():
                continue
            if best is None or r > best.round_num:
                best = Checkpoint(r, state, meta)
        return best

    def load_arrays(self, ckpt: Checkpoint) -> list[np.ndarray]:
        """The state arrays of ``ckpt``, bit for bit as saved."""
        if ckpt.state_path.suffix == ".npz":
            return load_weights_npz(ckpt.state_path)
        structure = [0] * int(ckpt.meta["state_tensors"])
        loaded = asyncio.run(self._program_state_manager().load(ckpt.round_num, structure))
        return [np.asarray(a) for a in loaded]


__all__ = ["Checkpoint", "CheckpointStore", "STATE_PREFIX", "json_safe"]
