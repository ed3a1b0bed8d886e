"""Issue 13.1: the ledger stands alone (paper 3.4's chain is independent of the learning stack):
no import of ``bfdl_tff``, TensorFlow or ``paper_figures`` anywhere in ``ledger/``, its own error
types and its own entry point ``python -m ledger``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("bfdl_tff", "tensorflow", "tensorflow_federated", "tensorflow_privacy", "keras", "paper_figures")


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_no_module_of_ledger_imports_bfdl_tff_or_tensorflow_in_source() -> None:
    files = sorted((REPO / "ledger").glob("*.py"))
    assert len(files) > 10
    bad = {f.name: sorted(_imports(f) & set(FORBIDDEN)) for f in files if _imports(f) & set(FORBIDDEN)}
    assert not bad, f"ledger modules import {bad}"


def test_importing_every_ledger_module_loads_no_forbidden_package() -> None:
    mods = sorted(f"ledger.{f.stem}" for f in (REPO / "ledger").glob("*.py") if f.stem != "__main__")
    code = ("import importlib, sys\n"
            f"for m in {mods!r}: importlib.import_module(m)\n"
            f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
            "print(bad)\nsys.exit(1 if bad else 0)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_ledger_error_is_a_ledger_error() -> None:
    from ledger import errors
    from ledger.block import BlockDecodeError
    from ledger.client import LedgerError
    from ledger.crypto import CanonicalEncodingError
    from ledger.messages import MessageDecodeError
    from ledger.offchain import OffchainIntegrityError
    from ledger.storage import StorageCorruptError, StorageError
    from ledger.tx import TxDecodeError

    for cls in (BlockDecodeError, CanonicalEncodingError, MessageDecodeError, OffchainIntegrityError,
                StorageCorruptError, StorageError, TxDecodeError, errors.KeyFileError, errors.SnapshotError):
        assert issubclass(cls, errors.LedgerError), cls
    assert LedgerError is errors.LedgerError
    e = StorageCorruptError("/x/replica_0.sqlite", 3, "bad hash")
    assert str(e).startswith("/x/replica_0.sqlite: ") and "block 3" in str(e) and "\n" not in str(e)


@pytest.mark.parametrize("argv", [["verify", "--db", "/nonexistent.sqlite", "--genesis", "/nonexistent.json"],
                                  ["node", "--id", "0", "--config", "/nonexistent/cluster.json"]])
def test_python_m_ledger_reports_bad_input_as_one_line(argv: list[str]) -> None:
    res = subprocess.run([sys.executable, "-m", "ledger", *argv], capture_output=True, text=True, timeout=120,
                         cwd=str(REPO))
    assert res.returncode == 2, res.stdout + res.stderr
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("ledger: error: /nonexistent"), res.stderr
