"""Run directories: ``runs/<name>/`` holds the resolved config, versions, seeds and results.

An existing run directory is never silently overwritten: creating one that exists fails unless
``resume=True`` (continue a run whose config is identical) or ``overwrite=True`` (move the old one
aside to ``<name>.old-<timestamp>``, never delete it). A command whose start is refused after
:meth:`RunDir.create` calls :meth:`RunDir.rollback`: what ``create`` made is removed again (a
moved-aside directory is moved back), so the same command is accepted again (issue 17 item 7).
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

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
    ``predictions/<split>.npz`` test-set scores per image (``save_predictions`` /
                                ``load_predictions``), for bootstrap intervals from result files
    ``evaluations/``            ``bfdl evaluate`` results on other datasets (``evaluation_file``)
    ``ledger/``                 replica databases, off-chain store, ledger_summary.json
    ``attacks/``                privacy-attack results
    ``audit/``                  audit results
    ``train.log``               the run's log
    ==========================  =============================================================
    """

    path: Path
    config: ExperimentConfig
    # What create() did, for rollback(): "" nothing (resume of an existing run, open()), "dir" it
    # made the directory, "contents" it filled an existing empty directory; where it moved an
    # existing run (overwrite).
    created: str = field(default="", compare=False, repr=False)
    moved_aside: Path | None = field(default=None, compare=False, repr=False)

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
    def predictions_dir(self) -> Path:
        return self.path / "predictions"

    def predictions_file(self, split: str = "test") -> Path:
        """``predictions/<split>.npz`` (``split``: letters, digits, ``_`` and ``-``)."""
        if not _SPLIT_RE.match(split):
            raise ValueError(f"split must match {_SPLIT_RE.pattern}, got {split!r}")
        return self.predictions_dir / f"{split}.npz"

    @property
    def evaluations_dir(self) -> Path:
        return self.path / "evaluations"

    def evaluation_file(self, name: str) -> Path:
        """``evaluations/<name>.json``: where ``bfdl evaluate`` writes by default."""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "external"
        return self.evaluations_dir / f"{safe}.json"

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

    @property
    def privacy_rounds_file(self) -> Path:
        """Each hospital's epsilon / delta / noise multiplier after every round (issue 16.2)."""
        return self.path / "privacy_rounds.csv"

    @property
    def hospitals_dir(self) -> Path:
        """Hospital-side files of the simulation (issue 16.3): ``hospitals/<name>/`` is what each
        hospital keeps for itself; in a deployment it never leaves the hospital."""
        return self.path / "hospitals"

    def hospital_metrics_file(self, hospital: str) -> Path:
        """Hospital ``hospital``'s own per-round training statistics (``local_metrics.csv``)."""
        return self.hospitals_dir / hospital / "local_metrics.csv"

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
    def write_data_record(self, *, root: Path, manifest_dir: Path, synthetic: bool,
                          task: Mapping[str, Any] | None = None, **extra: Any) -> None:
        """Record the dataset root, the manifests the run used and the dataset's ``task``
        (``bfdl_tff.data.tasks.Task.to_record()``: ``{"kind": ..., "labels": [...]}``; read back
        by :meth:`task`, attacks and evaluate)."""
        rec: dict[str, Any] = {"root": str(Path(root).resolve()), "manifest_dir": str(Path(manifest_dir).resolve()),
                               "synthetic": bool(synthetic), **extra}
        if task is not None:
            rec["task"] = _check_task_record(task, source="write_data_record(task=...)", error=ValueError)
        atomic_write_json(self.data_file, rec)

    def data_record(self) -> dict[str, Any]:
        return self._read_required(self.data_file, "the data record written when training starts")

    def task(self) -> dict[str, Any]:
        """The task the run was trained on, as ``{"kind": ..., "labels": [...]}`` (issue 15.1;
        ``bfdl_tff.data.tasks.Task.from_record`` turns it into a ``Task``).

        From ``data.json``'s ``task``. A run without one (``data.json`` missing, or written before
        runs recorded tasks) was trained on the 14-finding NIH task (:data:`NIH_TASK_RECORD`), which
        every source but ``medmnist`` has; a ``medmnist`` run without a recorded task is an error."""
        rec = None
        if self.data_file.is_file():
            rec = self.data_record().get("task")
        if rec is not None:
            return _check_task_record(rec, source=f"{self.data_file}: task", error=RunDirError)
        if self.config.data.source == "medmnist":
            raise RunDirError(f"{self.data_file}: no task recorded, and a medmnist run's task cannot be assumed "
                              "(it is the 14-finding NIH task only for nih/synthetic/chestmnist sources)")
        return {"kind": NIH_TASK_RECORD["kind"], "labels": list(NIH_TASK_RECORD["labels"])}

    def manifest_dir(self) -> Path:
        """The directory of the hospital manifests this run trained on."""
        d = Path(self.data_record()["manifest_dir"])
        if not d.is_dir():
            raise RunDirError(f"{self.data_file}: manifest directory {d} no longer exists")
        return d

    # ---- test-set predictions ------------------------------------------------------------
    def save_predictions(self, *, image_ids: Sequence[str], y_true: np.ndarray, scores: np.ndarray,
                         split: str = "test", labels: Sequence[str] | None = None) -> Path:
        """Write ``predictions/<split>.npz``: ``image_ids`` [N] str, ``y_true`` float32 [N, L] 0/1,
        ``scores`` float32 [N, L] (the released model's outputs), ``labels`` [L] str (default: the
        run's :meth:`task` labels), so figures and the report can compute bootstrap intervals
        (``bfdl_tff.stats``) from result files alone. Atomic; inconsistent inputs raise ``ValueError``."""
        ids = [str(i) for i in image_ids]
        y = np.asarray(y_true, dtype=np.float32)
        s = np.asarray(scores, dtype=np.float32)
        names = [str(x) for x in (labels if labels is not None else self.task()["labels"])]
        problem = _predictions_problem(ids, y, s, names)
        if problem:
            raise ValueError(f"save_predictions({split!r}): {problem}")
        path = self.predictions_file(split)
        buf = io.BytesIO()
        np.savez(buf, image_ids=np.array(ids, dtype=str), y_true=y, scores=s, labels=np.array(names, dtype=str))
        atomic_write_bytes(path, buf.getvalue())
        return path

    def load_predictions(self, split: str = "test") -> "Predictions":
        """The predictions written by :meth:`save_predictions`; a clear error if missing or malformed."""
        path = self.predictions_file(split)
        if not path.is_file():
            raise RunDirError(f"{path}: missing (no {split} predictions in this run; is the run finished?)")
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = sorted({"image_ids", "y_true", "scores", "labels"} - set(z.files))
                if missing:
                    raise RunDirError(f"{path}: not a predictions file (missing arrays {missing})")
                ids, y, s, names = (z["image_ids"], z["y_true"], z["scores"], z["labels"])
        except (OSError, ValueError) as e:
            raise RunDirError(f"{path}: unreadable predictions file ({e})") from None
        ids_l, names_l = [str(i) for i in ids.tolist()], [str(x) for x in names.tolist()]
        problem = _predictions_problem(ids_l, y, s, names_l)
        if problem:
            raise RunDirError(f"{path}: {problem}")
        return Predictions(split=split, image_ids=tuple(ids_l), y_true=y.astype(np.float32),
                           scores=s.astype(np.float32), labels=tuple(names_l))

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
        if path.exists() and not path.is_dir():
            raise RunDirError(f"{path}: exists and is not a directory (the run directory, e.g. --out, must be a "
                              "directory or a new path)")
        try:
            existing = path.exists() and any(path.iterdir())
        except OSError as e:
            raise RunDirError(f"{path}: cannot read the run directory ({e.strerror})") from None
        aside: Path | None = None
        if existing:
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
        created = "contents" if path.is_dir() else "dir"
        run = cls(path, config, created=created, moved_aside=aside)
        try:
            path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(cfg_file, dump_yaml(config))
            env = environment_record()
            env["seeds"] = config.recorded_seeds()
            atomic_write_json(path / "environment.json", env)
        except OSError as e:
            run.rollback()
            raise RunDirError(f"{e.filename or path}: cannot create the run directory ({e.strerror})") from None
        return run

    def rollback(self) -> bool:
        """Undo :meth:`create` after a refused start: remove the directory it made (or empty the
        empty directory it filled) and move a moved-aside run back, unless a round was already
        checkpointed (the run is then resumable and kept). Never touches a directory that
        ``create`` did not make (``resume`` of an existing run). True if something was undone."""
        if not self.created or any(self.checkpoints_dir.glob("round_*.json")):
            return False
        if self.created == "dir":
            shutil.rmtree(self.path, ignore_errors=True)
        elif self.path.is_dir():
            for child in self.path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        if self.moved_aside is not None and not self.path.exists():
            self.moved_aside.rename(self.path)
        self.created = ""
        return True

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        path = Path(path)
        cfg = path / "config.yaml"
        if not cfg.exists():
            raise RunDirError(f"{path}: not a run directory (no config.yaml)")
        return cls(path, load_config(cfg))


#: The 14 NIH ChestX-ray14 findings as a task record (the same as
#: ``bfdl_tff.data.tasks.NIH_TASK.to_record()``, which the base layer cannot import; a test checks
#: they are equal). The task of runs that recorded none (see :meth:`RunDir.task`).
NIH_TASK_RECORD: dict[str, Any] = {
    "kind": "multilabel",
    "labels": ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
               "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"),
}
_SPLIT_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def _check_task_record(rec: Any, *, source: str, error: type[Exception]) -> dict[str, Any]:
    """A task record ``{"kind": str, "labels": [str, ...]}`` (as a new dict), else ``error``."""
    ok = (isinstance(rec, Mapping) and set(rec) == {"kind", "labels"} and isinstance(rec["kind"], str)
          and isinstance(rec["labels"], (list, tuple)) and len(rec["labels"]) > 0
          and all(isinstance(x, str) and x for x in rec["labels"]))
    if not ok:
        raise error(f"{source}: a task record is {{'kind': str, 'labels': [str, ...]}}, got {rec!r:.120}")
    return {"kind": rec["kind"], "labels": list(rec["labels"])}


@dataclass(frozen=True)
class Predictions:
    """A run's per-image scores on one split (``RunDir.load_predictions``)."""

    split: str
    image_ids: tuple[str, ...]
    y_true: np.ndarray  # float32 [N, L] 0/1
    scores: np.ndarray  # float32 [N, L]
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.image_ids)


def _predictions_problem(ids: list[str], y: np.ndarray, s: np.ndarray, names: list[str]) -> str | None:
    """What is inconsistent about a set of predictions, or ``None``."""
    if y.ndim != 2:
        return f"y_true must be [N, L], got shape {y.shape}"
    if s.shape != y.shape:
        return f"scores have shape {s.shape}, y_true {y.shape}"
    if len(ids) != y.shape[0]:
        return f"{len(ids)} image ids for {y.shape[0]} rows"
    if len(set(ids)) != len(ids):
        return "image ids are not unique"
    if len(names) != y.shape[1]:
        return f"{len(names)} label names for {y.shape[1]} label columns"
    if y.size and not np.isin(y, (0.0, 1.0)).all():
        return "y_true must be 0/1"
    if not np.isfinite(s).all():
        return "scores contain NaN or infinite values"
    return None


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


__all__ = ["NIH_TASK_RECORD", "Predictions", "RunDir", "default_run_dir", "environment_record", "load_weights_npz", "package_versions", "save_weights_npz"]
