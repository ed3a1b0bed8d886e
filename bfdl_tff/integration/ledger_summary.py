"""``ledger/ledger_summary.json``: the per-round cost of the ledger (paper 3.4 "50-70 transactions
per round"; claims C4/C6) in two parts, and which part the audit vouches for (issue 17.3).

* **Chain-derived keys** (:data:`CHAIN_KEYS`): the chain id, cap, replica heads, rounds, the
  transactions of each round (count, kinds, bytes), model hashes, checkpoint addresses, block
  heights and the ``run.finalize`` record. The hook derives them from the committed chain itself
  (:func:`chain_keys`), and ``bfdl audit verify`` re-derives them from the verified chain and
  names the first key that differs.
* **Measured keys** (:data:`MEASURED_KEYS`): wall-clock times and on-disk sizes measured on the
  training machine (``hook_seconds``, ``round_seconds``, ``bytes_on_chain``, ...). They are not on
  the chain and cannot be checked by anyone: the file says so in its ``verification`` entry.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bfdl_tff.integration.chain import ChainView

#: Keys derived from the chain and checked by ``bfdl audit verify``.
CHAIN_KEYS: tuple[str, ...] = (
    "chain_id", "epsilon_cap", "replicas", "heads", "rounds", "tx_per_round", "tx_kinds_per_round",
    "tx_bytes_per_round", "model_hashes", "checkpoint_addresses", "block_heights", "finalize",
)
#: Keys measured on the training machine: unverified.
MEASURED_KEYS: tuple[str, ...] = (
    "transport", "keys_backend", "wait_for_commit", "timed_rounds", "hook_seconds", "ledger_seconds",
    "sign_seconds", "commit_seconds", "round_seconds", "hook_share", "ledger_share", "registration_seconds",
    "end_wait_seconds", "blocking_seconds_total", "blocking_share", "bytes_on_chain", "bytes_on_chain_per_round",
    "bytes_off_chain",
)
_PER_ROUND = ("tx_per_round", "tx_kinds_per_round", "tx_bytes_per_round", "model_hashes", "checkpoint_addresses",
              "block_heights")
_TIMING_FIELDS = ("hook_seconds", "ledger_seconds", "sign_seconds", "commit_seconds", "round_seconds")


@dataclass
class RoundTiming:
    """Wall-clock cost of one round's ledger work (measured, not on the chain)."""

    round_num: int
    hook_seconds: float = 0.0  # the training thread: copy the weights and enqueue the round
    ledger_seconds: float = 0.0  # the background thread: hash, store off-chain, sign, commit
    sign_seconds: float = 0.0
    commit_seconds: float = 0.0
    round_seconds: float = 0.0  # the round's training + evaluation time (from the runner)


@dataclass
class RunTiming:
    """The measured part of a run's ledger cost."""

    transport: str
    keys_backend: str
    wait_for_commit: bool
    rounds: dict[int, RoundTiming]
    registration_seconds: float = 0.0
    end_wait_seconds: float = 0.0
    bytes_on_chain: int = 0
    bytes_off_chain: int = 0


def chain_keys(chain: ChainView, heads: list[tuple[int, str | None]]) -> dict[str, Any]:
    """The chain-derived keys (:data:`CHAIN_KEYS`) from a chain view and the replicas' heads."""
    rounds = chain.rounds()
    fin = chain.finalize_records()
    out = {
        "chain_id": chain.genesis.chain_id,
        "epsilon_cap": chain.genesis.epsilon_cap,
        "replicas": len(heads),
        "heads": [[int(h), x] for h, x in heads],
        "rounds": list(rounds),
        "tx_per_round": [v.txs for v in rounds.values()],
        "tx_kinds_per_round": [dict(v.kinds) for v in rounds.values()],
        "tx_bytes_per_round": [v.tx_bytes for v in rounds.values()],
        "model_hashes": [v.model_hash or "" for v in rounds.values()],
        "checkpoint_addresses": [v.checkpoint_address or "" for v in rounds.values()],
        "block_heights": [sorted(v.heights) for v in rounds.values()],
        "finalize": dict(fin[-1].payload) if fin else None,
    }
    # JSON round trip: the same types as a value read back from the file.
    return json.loads(json.dumps(out))


def _share(part: float, total: float) -> float | None:
    return part / total if total > 0 else None


def measured_keys(t: RunTiming) -> dict[str, Any]:
    """The measured keys (:data:`MEASURED_KEYS`); per-round lists follow ``timed_rounds``."""
    recs = [t.rounds[r] for r in sorted(t.rounds)]
    lists = {f: [getattr(x, f) for x in recs] for f in _TIMING_FIELDS}
    total_round = sum(lists["round_seconds"])
    blocking = t.registration_seconds + sum(lists["hook_seconds"]) + t.end_wait_seconds
    return {
        "transport": t.transport,
        "keys_backend": t.keys_backend,
        "wait_for_commit": t.wait_for_commit,
        "timed_rounds": [x.round_num for x in recs],
        **lists,
        "hook_share": _share(sum(lists["hook_seconds"]), total_round),
        "ledger_share": _share(sum(lists["ledger_seconds"]), total_round),
        "registration_seconds": t.registration_seconds,
        # Everything the training thread waited for the ledger: registration + per-round
        # hand-off + the final wait for the last rounds' commits and the finalize record.
        "end_wait_seconds": t.end_wait_seconds,
        "blocking_seconds_total": blocking,
        "blocking_share": _share(blocking, total_round),
        "bytes_on_chain": t.bytes_on_chain,
        "bytes_on_chain_per_round": (t.bytes_on_chain / len(recs)) if recs else None,
        "bytes_off_chain": t.bytes_off_chain,
    }


def verification_entry() -> dict[str, Any]:
    """The file's own statement of what is checked and what is not."""
    return {
        "derived_from_chain": list(CHAIN_KEYS),
        "checked_by": "bfdl audit verify (check ledger_summary)",
        "unverified": list(MEASURED_KEYS),
        "note": "the unverified keys are measurements of the training machine (times, sizes); they are not "
                "on the chain and nothing can check them",
    }


def build_summary(chain: ChainView, heads: list[tuple[int, str | None]], timing: RunTiming) -> dict[str, Any]:
    return {**chain_keys(chain, heads), **measured_keys(timing), "verification": verification_entry()}


def previous_timings(path: Path) -> dict[int, RoundTiming]:
    """Round timings of an earlier process of the same run (resume); empty if none or unreadable."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        rounds = [int(r) for r in old.get("timed_rounds", [])]
        cols = {f: list(old[f]) for f in _TIMING_FIELDS}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    out = {}
    for i, r in enumerate(rounds):
        vals = {f: float(cols[f][i]) for f in _TIMING_FIELDS if i < len(cols[f])}
        if all(math.isfinite(v) for v in vals.values()):
            out[r] = RoundTiming(round_num=r, **vals)
    return out


def first_difference(recorded: dict[str, Any], derived: dict[str, Any]) -> str | None:
    """The first chain-derived key whose recorded value differs from the chain, described."""
    for key in CHAIN_KEYS:
        if key not in recorded:
            return f"{key} is missing (derived from the chain: {_short(derived[key])})"
        got, want = recorded[key], derived[key]
        if got == want:
            continue
        if key in _PER_ROUND and isinstance(got, list) and len(got) == len(want):
            i = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
            return f"{key} of round {derived['rounds'][i]} is {_short(got[i])} but the chain says {_short(want[i])}"
        return f"{key} is {_short(got)} but the chain says {_short(want)}"
    return None


def _short(v: Any, n: int = 96) -> str:
    s = json.dumps(v, sort_keys=True)
    return s if len(s) <= n else s[: n - 3] + "..."


__all__ = ["CHAIN_KEYS", "MEASURED_KEYS", "RoundTiming", "RunTiming", "build_summary", "chain_keys",
           "first_difference", "measured_keys", "previous_timings", "verification_entry"]
