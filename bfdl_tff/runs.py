"""Run directories: ``runs/<name>/`` holds the resolved config, versions, seeds and results.

An existing run directory is never silently overwritten: creating one that exists fails unless
``resume=True`` (continue a run whose config is identical) or ``overwrite=True`` (move the old one
aside to ``<name>.old-<timestamp>``, never delete it).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bfdl_tff import __version__
from bfdl_tff.config import REPO_ROOT, ExperimentConfig, dump_yaml, from_dict, load_config, to_dict
from bfdl_tff.errors import RunDirError
from bfdl_tff.io_utils import atomic_write_json, atomic_write_text

_PACKAGES = (
    "tensorflow",
    "tensorflow-federated",
    "tensorflow-privacy",
    "dp-accounting",
    "keras",
    "numpy",
    "pandas",
    "scikit-learn",
    "cryptography",
    "hvac",
)


def package_versions() -> dict[str, str]:
    """Installed versions of the stack (from package metadata: no heavy imports)."""
    from importlib import metadata

    out = {"python": platform.python_version(), "bfdl-tff": __version__}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str:
    try:
        r = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if r.returncode != 0:
            return "unknown"
        return r.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment_record() -> dict[str, Any]:
    return {
        "versions": package_versions(),
        "git_commit": git_commit(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "argv": sys.argv,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


@dataclass
class RunDir:
    path: Path
    config: ExperimentConfig

    @property
    def name(self) -> str:
        return self.path.name

    def file(self, *parts: str) -> Path:
        return self.path.joinpath(*parts)

    def write_json(self, rel: str, obj: Any) -> Path:
        p = self.file(rel)
        atomic_write_json(p, obj)
        return p

    def read_json(self, rel: str) -> Any:
        return json.loads(self.file(rel).read_text(encoding="utf-8"))

    # ------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        config: ExperimentConfig,
        *,
        resume: bool = False,
        overwrite: bool = False,
    ) -> "RunDir":
        path = Path(path)
        cfg_file = path / "config.yaml"
        if path.exists() and any(path.iterdir()):
            if resume:
                if not cfg_file.exists():
                    raise RunDirError(f"{path}: cannot resume, no config.yaml in the run directory")
                old = load_config(cfg_file)
                if to_dict(old) != to_dict(config):
                    raise RunDirError(
                        f"{cfg_file}: cannot resume, the run was started with a different config "
                        "(use a new --out or --overwrite)"
                    )
                return cls(path, config)
            if not overwrite:
                raise RunDirError(
                    f"{path}: run directory exists; pass --resume to continue it or --overwrite "
                    "to move it aside"
                )
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            aside = path.with_name(f"{path.name}.old-{stamp}")
            path.rename(aside)
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cfg_file, dump_yaml(config))
        env = environment_record()
        env["seeds"] = config.resolved_seeds()
        atomic_write_json(path / "environment.json", env)
        return cls(path, config)

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        path = Path(path)
        cfg = path / "config.yaml"
        if not cfg.exists():
            raise RunDirError(f"{path}: not a run directory (no config.yaml)")
        return cls(path, load_config(cfg))


def default_run_dir(config: ExperimentConfig, runs_root: str | Path = "runs") -> Path:
    return Path(runs_root) / f"{config.name}-{config.arm}-s{config.seed}"


__all__ = ["RunDir", "default_run_dir", "environment_record", "package_versions", "from_dict"]
