"""Run directories: ``runs/<name>/`` holds the resolved config, versions, seeds and results.

An existing run directory is never silently overwritten: creating one that exists fails unless
``resume=True`` (continue a run whose config is identical) or ``overwrite=True`` (move the old one
aside to ``<name>.old-<timestamp>``, never delete it).
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bfdl_tff import __version__
from bfdl_tff.config import REPO_ROOT, ExperimentConfig, dump_yaml, from_dict, load_config, to_dict
from bfdl_tff.errors import RunDirError
from bfdl_tff.io_utils import atomic_write_bytes, atomic_write_json, atomic_write_text

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
    """A run directory and every file in it: the single owner of a run's layout.

    Writers (the runner, the ledger hook, the attacks, the audit) and readers (attacks, audit,
    evaluate, figures) name run files only through these attributes and methods; nothing else
    spells a run-file path or guesses one.

    ==========================  =============================================================
    ``config.yaml``             the resolved experiment config (``config_file``)
    ``environment.json``        versions, git commit, seeds (``environment_file``)
    ``data.json``               the dataset root, the manifests used, synthetic flag
    ``manifests/``              hospital manifests partitioned at run time (``manifests_dir``)
    ``privacy.json``            the privacy schedule (mode, noise, accountant, per hospital)
    ``checkpoints/``            per-round state for exact resume (``checkpoints_dir``)
    ``metrics.csv``             one row per round (``metrics_file``)
    ``tensorboard/``            TensorBoard event files of the same metrics
    ``summary.json``            final results (``summary_file``)
    ``final_model.npz``         the released global model (``save_model`` / ``load_model``)
    ``ledger/``                 replica databases, off-chain store, ledger_summary.json
    ``attacks/``                privacy-attack results
    ``audit/``                  audit results
    ``train.log``               the run's log
    ==========================  =============================================================
    """

    path: Path
    config: ExperimentConfig

    @property
    def name(self) -> str:
        return self.path.name

    def file(self, *parts: str) -> Path:
        return self.path.joinpath(*parts)

    # ---- the layout ---------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def environment_file(self) -> Path:
        return self.path / "environment.json"

    @property
    def data_file(self) -> Path:
        return self.path / "data.json"

    @property
    def manifests_dir(self) -> Path:
        return self.path / "manifests"

    @property
    def privacy_file(self) -> Path:
        return self.path / "privacy.json"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tensorboard"

    @property
    def summary_file(self) -> Path:
        return self.path / "summary.json"

    @property
    def final_model_file(self) -> Path:
        return self.path / "final_model.npz"

    @property
    def ledger_dir(self) -> Path:
        return self.path / "ledger"

    @property
    def attacks_dir(self) -> Path:
        return self.path / "attacks"

    @property
    def audit_dir(self) -> Path:
        return self.path / "audit"

    @property
    def log_file(self) -> Path:
        return self.path / "train.log"

    # ---- JSON helpers -------------------------------------------------------------------
    def write_json(self, rel: str, obj: Any) -> Path:
        p = self.file(rel)
        atomic_write_json(p, obj)
        return p

    def read_json(self, rel: str) -> Any:
        return json.loads(self.file(rel).read_text(encoding="utf-8"))

    def _read_required(self, path: Path, what: str) -> Any:
        if not path.is_file():
            raise RunDirError(f"{path}: missing ({what}; is the run finished?)")
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise RunDirError(f"{path}: not valid JSON ({e})") from None

    # ---- the released model -------------------------------------------------------------
    def save_model(self, weights: Sequence[np.ndarray]) -> Path:
        """Write the released global model (``w0000, w0001, ...`` in ``get_weights()`` order)."""
        save_weights_npz(self.final_model_file, weights)
        return self.final_model_file

    def load_model(self) -> list[np.ndarray]:
        """The released global model's arrays; a clear error if the run has none."""
        if not self.final_model_file.is_file():
            raise RunDirError(f"{self.final_model_file}: no released model in this run directory (is the run finished?)")
        return load_weights_npz(self.final_model_file)

    # ---- what the run was trained on ----------------------------------------------------
    def write_data_record(self, *, root: Path, manifest_dir: Path, synthetic: bool, **extra: Any) -> None:
        """Record the dataset root and the manifests the run used (read back by attacks/evaluate)."""
        atomic_write_json(self.data_file, {"root": str(Path(root).resolve()), "manifest_dir": str(Path(manifest_dir).resolve()),
                                           "synthetic": bool(synthetic), **extra})

    def data_record(self) -> dict[str, Any]:
        return self._read_required(self.data_file, "the data record written when training starts")

    def manifest_dir(self) -> Path:
        """The directory of the hospital manifests this run trained on."""
        d = Path(self.data_record()["manifest_dir"])
        if not d.is_dir():
            raise RunDirError(f"{self.data_file}: manifest directory {d} no longer exists")
        return d

    # ---- privacy schedule and results ---------------------------------------------------
    def write_privacy(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.privacy_file, record)

    def privacy(self) -> dict[str, Any]:
        return self._read_required(self.privacy_file, "the privacy schedule written when training starts")

    def summary(self) -> dict[str, Any]:
        return self._read_required(self.summary_file, "the run summary")

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


def save_weights_npz(path: Path, arrays: Sequence[np.ndarray]) -> None:
    """Weights as ``w0000, w0001, ...`` in an ``.npz`` (atomic write)."""
    buf = io.BytesIO()
    np.savez(buf, **{f"w{i:04d}": np.asarray(a) for i, a in enumerate(arrays)})
    atomic_write_bytes(path, buf.getvalue())


def load_weights_npz(path: Path) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return [z[k] for k in sorted(z.files)]


def default_run_dir(config: ExperimentConfig, runs_root: str | Path = "runs") -> Path:
    return Path(runs_root) / f"{config.name}-{config.arm}-s{config.seed}"


__all__ = ["RunDir", "default_run_dir", "environment_record", "load_weights_npz", "package_versions", "save_weights_npz"]
