"""Result types of ``bfdl audit verify``: one :class:`Check` row per check (paper 1.2 objective 6)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bfdl_tff.errors import BfdlError


class AuditError(BfdlError):
    """The run directory cannot be audited at all (not a B-FDL run, no ledger)."""


@dataclass(frozen=True)
class Check:
    """One row of the audit: what was checked, whether it held, and where it failed."""

    name: str  # e.g. "chain:replica_2", "rounds", "file:summary.json"
    ok: bool
    message: str
    where: str = ""  # the replica database and block / transaction, or the file


@dataclass
class AuditResult:
    run_dir: str
    ok: bool = False
    checks: list[Check] = field(default_factory=list)
    first_failure: str | None = None
    chain: dict[str, Any] = field(default_factory=dict)

    def finish(self) -> "AuditResult":
        self.ok = bool(self.checks) and all(c.ok for c in self.checks)
        bad = next((c for c in self.checks if not c.ok), None)
        self.first_failure = None if bad is None else describe(bad)
        return self

    def check(self, name: str) -> Check:
        """The row called ``name`` (``KeyError`` if the audit did not reach it)."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": self.run_dir, "ok": self.ok, "first_failure": self.first_failure,
                "checks": [asdict(c) for c in self.checks], "chain": self.chain}


def describe(c: Check) -> str:
    """``name: where: message`` on one line."""
    return f"{c.name}: {c.where + ': ' if c.where else ''}{c.message}"


__all__ = ["AuditError", "AuditResult", "Check", "describe"]
