"""``results/stages.json``: each stage's status, runtime, config (and its hash) and outputs, and the
rule that skips a stage finished earlier with the same config."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from bfdl_tff.config import REPO_ROOT


def config_hash(cfg: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_stages(out: Path) -> dict[str, Any]:
    """The ``stages.json`` in ``out`` (an empty record when missing or unreadable)."""
    p = out / "stages.json"
    if p.is_file():
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except ValueError:
            pass
    return {"stages": {}}


def should_skip(record: dict | None, *, cfg_hash: str, force: bool, always: bool, base: Path) -> bool:
    """True if a stage finished with the same config and all its recorded outputs still exist."""
    if force or always or not record or record.get("status") != "done" or record.get("config_hash") != cfg_hash:
        return False
    outs = record.get("outputs") or []
    return bool(outs) and all((base / o).exists() for o in outs)


def records_base(runs: Path) -> Path:
    """The directory ``stages.json`` paths are relative to: the repository when the runs root is
    inside it, else the runs root's parent (a path comparison, not a string prefix)."""
    runs, repo = Path(runs).resolve(), REPO_ROOT.resolve()
    return repo if runs.is_relative_to(repo) else runs.parent


def rel(p: Path | str, base: Path) -> str:
    """``p`` relative to ``base`` when inside it, else as given."""
    path = Path(p).resolve()
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(p)


__all__ = ["config_hash", "load_stages", "records_base", "rel", "should_skip"]
