"""What the checks of ``bfdl audit verify`` share: the run directory, its ledger files, the
genesis, each replica's verification report and the chain view of a verified replica."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ledger.contracts import Genesis
from ledger.verify import VerifyReport

from bfdl_tff.config import ExperimentConfig
from bfdl_tff.errors import BfdlError
from bfdl_tff.integration.audit.result import AuditError
from bfdl_tff.integration.chain import ChainView, RoundView, TxRecord
from bfdl_tff.integration.ledger_api import LedgerFiles
from bfdl_tff.runs import RunDir


@dataclass
class AuditContext:
    run: RunDir
    files: LedgerFiles
    admin_key: str | None = None  # pinned by the verifier (hex), or None
    genesis_hash: str | None = None  # pinned by the verifier (hex ``Genesis.hash()``), or None
    genesis: Genesis | None = None
    reports: dict[Path, VerifyReport] = field(default_factory=dict)  # replica db -> verify_chain
    chain: ChainView | None = None  # the first replica whose chain verified

    @cached_property
    def rounds(self) -> dict[int, RoundView]:
        return self.chain.rounds() if self.chain is not None else {}

    @cached_property
    def finalize(self) -> TxRecord | None:
        """The accepted ``run.finalize`` record (the last one, if a forged chain had several)."""
        recs = self.chain.finalize_records() if self.chain is not None else []
        return recs[-1] if recs else None

    def heads(self) -> list[tuple[int, str | None]]:
        """Every replica's verified head, in replica order."""
        return [(rep.head_height, rep.head_hash) for rep in self.reports.values()]

    def where(self, t: TxRecord) -> str:
        db = self.chain.db.name if self.chain is not None else "?"
        return f"{db} block {t.height} tx {t.index} ({t.kind} {t.tx_hash[:16]})"


def open_audit(run_dir: str | Path, *, admin_key: str | None = None, genesis_hash: str | None = None) -> AuditContext:
    """The audit context of a run directory; :class:`AuditError` if it cannot be audited."""
    path = Path(run_dir)
    if not path.is_dir():
        raise AuditError(f"{path}: not a directory (expected a run directory)")
    try:
        run = RunDir.open(path)
    except BfdlError:
        # config.yaml missing or unreadable: the audit still runs (the file check names the
        # file); the handle is used for its layout only, never for the config.
        run = RunDir(path, ExperimentConfig())
    files = LedgerFiles.of(run)
    if not files.genesis_file.is_file():
        raise AuditError(f"{files.genesis_file}: missing (not a B-FDL run with the ledger enabled?)")
    return AuditContext(run=run, files=files, admin_key=admin_key, genesis_hash=genesis_hash)


__all__ = ["AuditContext", "open_audit"]
