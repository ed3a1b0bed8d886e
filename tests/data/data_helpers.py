"""Helpers of the data tests (imported as ``data_helpers``: pytest puts ``tests/data`` on the
path): where the shared real data is, and the one-line CLI error check."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    """``$BFDL_SHARED`` if set, else ``<repo>/../shared`` (where CI and the worktrees have it)."""
    env = os.environ.get("BFDL_SHARED")
    return Path(env) if env else REPO_ROOT.parent / "shared"


def one_error_line(err: str) -> str:
    """The CLI's stderr must be exactly one ``bfdl: error: ...`` line; returns it."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("bfdl: error: "), err
    return lines[0]
