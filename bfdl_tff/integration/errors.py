"""Errors of the B-FDL ledger integration (one line each, exit 2 through the CLI)."""

from __future__ import annotations

from bfdl_tff.errors import BfdlError


class LedgerHookError(BfdlError):
    """The ledger refused or failed to record a round (names the round and the transaction)."""


class PrivacyBudgetExceeded(LedgerHookError):
    """A round spent more privacy budget than the cap fixed in the genesis."""


class ReconcileError(LedgerHookError):
    """On resume the chain and the run's checkpoints and outbox cannot be reconciled: the run refuses
    to continue (names the round and what is inconsistent)."""


__all__ = ["LedgerHookError", "PrivacyBudgetExceeded", "ReconcileError"]
