"""The one declarative table of transaction kinds: who may send each kind and which payload
fields it carries (paper 3.4: contracts for access control, update commitments, privacy budget).

The contracts (:mod:`ledger.contracts`) check every transaction against its row before running
the kind's handler (registered against the row in :mod:`ledger.handlers`), and the audit of a run
(``bfdl_tff.integration.audit``) checks the signer of every accepted transaction against the same
rows. A new kind is added here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

__all__ = ["TX_KINDS", "TxKind", "ROLES", "RUN_FILES", "markdown_table"]

#: Roles an institution key can be registered with.
ROLES = ("hospital", "aggregator", "auditor", "admin")

#: The result files a ``run.finalize`` record binds, by name (payload ``files``: name -> SHA-256 hex).
RUN_FILES = ("metrics.csv", "summary.json", "config.yaml", "final_model.npz")


@dataclass(frozen=True)
class TxKind:
    """One transaction kind."""

    name: str  # e.g. "round.commit_update"
    roles: tuple[str, ...]  # roles allowed to send it (checked against the registry)
    required: frozenset[str]  # payload fields that must be present
    optional: frozenset[str] = frozenset()  # payload fields that may be present
    summary: str = ""  # one line for docs and error messages


def _k(name: str, roles: tuple[str, ...], required: set[str], optional: set[str] = frozenset(), summary: str = "") -> TxKind:
    return TxKind(name, roles, frozenset(required), frozenset(optional), summary)


_ADMIN = ("admin",)
_SERVER = ("aggregator", "admin")
_HOSPITAL = ("hospital",)

TX_KINDS: Mapping[str, TxKind] = MappingProxyType({k.name: k for k in (
    _k("registry.register", _ADMIN, {"role", "name", "pubkey"}, summary="register an institution key (admin quorum)"),
    _k("registry.revoke", _ADMIN, {"pubkey"}, summary="revoke an institution key for good (admin quorum)"),
    _k("round.open", _SERVER, {"round"}, summary="open round r (after every earlier round; none open)"),
    _k("round.commit_update", _HOSPITAL, {"round", "commitment", "num_examples"}, {"salt_hash"},
       summary="a hospital's salted commitment to its model update for the open round"),
    _k("round.global_model", _SERVER, {"round", "model_hash"}, {"checkpoint_address", "checkpoint_sha256"},
       summary="the round's global-model hash and its off-chain checkpoint"),
    _k("privacy.record", _SERVER, {"round", "epsilon", "delta", "accountant", "noise_multiplier"}, {"hospitals"},
       summary="cumulative privacy budget after the round, optionally each hospital's epsilon/delta/noise "
               "(refused past the cap)"),
    _k("metrics.record", _SERVER, {"round", "metrics"}, summary="the round's released metrics"),
    _k("round.close", _SERVER, {"round"}, summary="close the open round (updates reputations)"),
    _k("round.abort", _SERVER, {"round", "reason"},
       summary="abort the open round with a reason (crash recovery): its effects are undone, the round may open again"),
    _k("access.request_summary", _HOSPITAL, {"round"}, summary="a hospital reads an opened round's summary"),
    _k("run.finalize", _SERVER, {"rounds", "files"},
       summary="close the run: SHA-256 of its result files, once, after the last round (no round opens after)"),
    _k("secagg.register_kx", _HOSPITAL, {"kx_pubkey"},
       summary="a hospital's X25519 key-agreement key for secure aggregation, signed by its identity key "
               "(once per hospital and key)"),
    _k("secagg.transcript", _SERVER, {"round", "transcript"},
       summary="the open round's secure-aggregation transcript (who sent, dropped, which shares were "
               "revealed; never both of one hospital)"),
)})


def markdown_table() -> str:
    """The table as Markdown (``docs/ledger.md`` holds exactly this; a test compares them)."""
    rows = ["| kind | senders | required fields | optional fields | what it does |", "|---|---|---|---|---|"]
    for k in TX_KINDS.values():
        opt = ", ".join(sorted(k.optional)) or "-"
        rows.append(f"| `{k.name}` | {', '.join(k.roles)} | {', '.join(sorted(k.required))} | {opt} | {k.summary} |")
    return "\n".join(rows)
