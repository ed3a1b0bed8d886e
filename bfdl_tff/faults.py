"""Crash injection at the named steps of a round, for the durable round protocol's tests (issue 17.1;
paper 3.1/3.4: every round leaves its record on the ledger, so a crash must never lose one).

``BFDL_FAULT=round:<r>:<step>`` makes the process SIGKILL itself (no cleanup, no ``finally``, no
flush: what a power cut or the OOM killer does) when round ``r`` reaches ``step``. Unset (the
normal case) every check is one dictionary lookup. The steps, in the order a round passes them:

=====================  ============================================================================
``after_checkpoint``   runner: round ``r``'s checkpoint is written, the hooks have not seen the round
``after_queue``        runner: every hook has the round (the ledger hook queued it), not yet durable
``before_open``        ledger worker: the round's signed transactions are in the outbox, none submitted
``after_open``         ledger worker: ``round.open`` is committed, nothing else of the round
``mid_commitments``    ledger worker: ``round.open`` and the first hospital commitment are committed
``during_commit``      ledger worker: inside the PBFT commit of the round's first block, killed as
                       soon as the first replica has stored it (the other replicas have not)
``after_close``        ledger worker: every transaction of the round is committed, not yet reported
``after_durable``      runner: the checkpoint records round ``r`` durable
``before_finalize``    runner: ``summary.json`` is written, ``run.finalize`` not submitted (``r`` = the
                       run's last round)
=====================  ============================================================================

A malformed value raises :class:`ValueError` at the first check (a test must never pass because its
fault was silently ignored). Before the kill one line goes to stderr (``bfdl: fault injection:``).
"""

from __future__ import annotations

import os
import signal
import sys

ENV = "BFDL_FAULT"
STEPS: tuple[str, ...] = ("after_checkpoint", "after_queue", "before_open", "after_open", "mid_commitments",
                          "during_commit", "after_close", "after_durable", "before_finalize")

_parsed: dict[str, tuple[int, str] | None] = {}


def _parse(value: str) -> tuple[int, str] | None:
    if not value:
        return None
    parts = value.split(":")
    if len(parts) != 3 or parts[0] != "round" or not parts[1].isdigit() or parts[2] not in STEPS:
        raise ValueError(f"{ENV}={value!r}: expected round:<r>:<step> with step one of {', '.join(STEPS)}")
    return int(parts[1]), parts[2]


def armed(round_num: int) -> str | None:
    """The step armed for round ``round_num``, or ``None``."""
    value = os.environ.get(ENV, "")
    if value not in _parsed:
        _parsed[value] = _parse(value)
    spec = _parsed[value]
    return spec[1] if spec is not None and spec[0] == int(round_num) else None


def kill(step: str, round_num: int) -> None:
    """SIGKILL this process now (one line on stderr first)."""
    try:
        sys.stderr.write(f"bfdl: fault injection: SIGKILL at round {round_num} step {step}\n")
        sys.stderr.flush()
    finally:
        os.kill(os.getpid(), signal.SIGKILL)


def point(step: str, round_num: int) -> None:
    """Kill the process if ``step`` of round ``round_num`` is the armed fault."""
    if step not in STEPS:
        raise ValueError(f"unknown fault step {step!r}")
    if armed(round_num) == step:
        kill(step, round_num)


__all__ = ["ENV", "STEPS", "armed", "kill", "point"]
