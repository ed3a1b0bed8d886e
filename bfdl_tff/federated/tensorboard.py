"""TensorBoard event logs of a run's per-round metrics (``tensorboard --logdir runs/``).

Every numeric ``metrics.csv`` cell of round ``t`` becomes a scalar named after its column at step
``t`` in ``RUN_DIR/tensorboard/`` (strings such as ``participants`` and empty cells are left out).
The event files are derived data: on resume they are rewritten from the checkpoint's rows, so
they always hold exactly the rounds of ``metrics.csv`` (a round trained but not checkpointed
before a crash never appears twice). The writer is flushed after every round.

Why ``tf.summary`` and not ``tff.program.TensorBoardReleaseManager``: the release manager writes
the same ``tf.summary.scalar`` events but has only an async ``release`` and no flush, so the
events of a killed run are lost until the writer is garbage-collected; here each round is
flushed before the round's hooks run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

EVENT_GLOB = "events.out.tfevents.*"


def scalars(row: dict[str, Any]) -> Iterator[tuple[str, float]]:
    """(column, value) for every finite numeric cell of a metrics row except ``round``."""
    for k, v in row.items():
        if k == "round" or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            continue
        yield k, float(v)


class TensorBoardLog:
    """A ``tf.summary`` file writer for one run's metrics rows."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._writer: Any = None

    def reset(self, rows: list[dict[str, Any]]) -> None:
        """Drop earlier event files and write ``rows`` (resume: the checkpoint's rows)."""
        self.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        for p in self.directory.glob(EVENT_GLOB):
            p.unlink()
        for row in rows:
            self.write(row, flush=False)
        self._flush()

    def write(self, row: dict[str, Any], *, flush: bool = True) -> None:
        """Write one round's row at step ``row["round"]``."""
        import tensorflow as tf

        if self._writer is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._writer = tf.summary.create_file_writer(str(self.directory))
        step = int(row["round"])
        with self._writer.as_default():
            for name, value in scalars(row):
                tf.summary.scalar(name, value, step=step)
        if flush:
            self._flush()

    def _flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_scalars(directory: Path) -> dict[str, dict[int, float]]:
    """Every scalar in the event files of ``directory``: ``{tag: {step: value}}`` (tests, tools)."""
    import tensorflow as tf

    out: dict[str, dict[int, float]] = {}
    for path in sorted(Path(directory).glob(EVENT_GLOB)):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                value = float(tf.make_ndarray(v.tensor)) if v.HasField("tensor") else float(v.simple_value)
                out.setdefault(v.tag, {})[int(event.step)] = value
    return out


__all__ = ["EVENT_GLOB", "TensorBoardLog", "read_scalars", "scalars"]
