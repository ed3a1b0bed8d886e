"""Turn a :class:`bfdl_tff.config.DataConfig` into a dataset root plus a manifest directory
(paper 3.1), the single entry point the training code uses.

- ``synthetic``: the dataset is generated once under ``cfg.root`` in a sub-directory keyed by
  (images, size, seed, sites, site shift, generator version), e.g.
  ``data/synthetic/synth-n1500-s64-seed0-sites3-shift-v2``; later runs reuse it. Generation goes
  to a temporary sibling directory that is renamed into place when complete, so concurrent or
  interrupted runs never see a half-written dataset.
- ``nih``: ``cfg.root`` is an NIH ChestX-ray14 download or sample (see :mod:`bfdl_tff.data.loader`).
- ``medmnist`` (issue 15.1) / ``chestmnist`` (the same with the NIH task): ``cfg.npz`` is exported
  once (temporary sibling + rename, as above) into the task layout under
  ``cfg.root/<name>-<npz sha256[:12]>-<task hash>``; its official val split becomes each
  hospital's ``val`` rows (dealt with the images) and its official test split ``test.csv``.

Manifests: if ``cfg.manifests`` names a directory, it is validated and used as is; otherwise the
dataset is partitioned (``cfg.hospitals``, ``cfg.scheme``, ``cfg.alpha``, ``cfg.test_fraction``,
``cfg.stratify_test``, ``cfg.val_fraction``, optional ``cfg.test_list``) into ``manifest_dir``
with ``partition.json`` (parameters, task, counts, positives, non-IID-ness, AP fractions).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bfdl_tff.config import REPO_ROOT, DataConfig
from bfdl_tff.data import loader, medmnist, partition, synth
from bfdl_tff.data.manifest import check_against_metadata, hospital_names, manifest_task, read_manifest_dir
from bfdl_tff.data.tasks import NIH_TASK, Task
from bfdl_tff.errors import DataError
from bfdl_tff.io_utils import atomic_write_json


@dataclass
class PreparedData:
    root: Path
    manifest_dir: Path
    synthetic: bool
    info: dict[str, Any] = field(default_factory=dict)
    task: Task = NIH_TASK


def resolve_path(p: str | os.PathLike[str]) -> Path:
    """Relative paths in configs are relative to the repository root."""
    p = Path(p).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def synthetic_root(cfg: DataConfig, *, seed: int) -> Path:
    sites = cfg.synth_sites or cfg.hospitals
    shift = "shift" if cfg.synth_site_shift else "noshift"
    key = f"synth-n{cfg.synth_images}-s{cfg.image_size}-seed{seed}-sites{sites}-{shift}-v{synth.GENERATOR_VERSION}"
    if cfg.synth_signal != 1.0 or cfg.synth_min_prevalence > 0:
        key += f"-sig{cfg.synth_signal:g}-minp{cfg.synth_min_prevalence:g}"
    return resolve_path(cfg.root) / key


def ensure_synthetic(cfg: DataConfig, *, seed: int) -> tuple[Path, dict[str, Any]]:
    """Generate the synthetic dataset for (cfg, seed) unless a complete one is cached."""
    import json

    root = synthetic_root(cfg, seed=seed)
    if synth.is_complete(root):
        return root, json.loads((root / synth.INFO).read_text())
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        info = synth.synthesize(tmp, n_images=cfg.synth_images, size=cfg.image_size, seed=seed,
                                n_sites=cfg.synth_sites or cfg.hospitals, site_shift=cfg.synth_site_shift,
                                signal=cfg.synth_signal, min_prevalence=cfg.synth_min_prevalence)
        if root.exists() and not synth.is_complete(root):
            shutil.rmtree(root)  # an old incomplete directory (should not happen: we rename)
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700
        try:
            os.rename(tmp, root)
        except OSError:
            if not synth.is_complete(root):  # lost a race to a broken writer
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root, info


def medmnist_task(cfg: DataConfig, data: dict[str, Any], npz: Path) -> Task:
    """The task of ``cfg``'s ``.npz``: the NIH task for ``chestmnist``, else inferred/overridden."""
    if cfg.source == "chestmnist":
        return NIH_TASK
    return medmnist.npz_task(data, path=npz, kind=cfg.task or None, names=tuple(cfg.label_names) or None)


def ensure_medmnist(cfg: DataConfig) -> Path:
    """Export ``cfg.npz`` into the task layout unless a complete export of the same file and task exists."""
    import json

    if not cfg.npz:
        raise DataError(f"data.npz: source {cfg.source!r} needs the path of a MedMNIST .npz")
    npz = resolve_path(cfg.npz)
    data = medmnist.read_npz(npz)
    task = medmnist_task(cfg, data, npz)
    th = hashlib.sha256(json.dumps(task.to_record(), sort_keys=True).encode()).hexdigest()[:8]
    root = resolve_path(cfg.root) / f"{medmnist.dataset_name(npz)}-{medmnist.file_sha256(npz)[:12]}-{th}"
    if (root / medmnist.EXPORT_MARKER).is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        medmnist.export_medmnist(npz, tmp, task=task)
        if root.exists() and not (root / medmnist.EXPORT_MARKER).is_file():
            shutil.rmtree(root)  # an old incomplete export
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / medmnist.EXPORT_MARKER).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _read_test_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: test list not found")
    names = [ln.split()[0] for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not names:
        raise DataError(f"{path}: empty test list")
    return names


def _official_splits(meta: Any) -> tuple[list[str] | None, list[str] | None]:
    """(test images, val images) from the metadata's official ``split`` column (task layout), if any."""
    if "split" not in meta:
        return None, None
    return meta.loc[meta["split"] == "test", "image"].tolist(), meta.loc[meta["split"] == "val", "image"].tolist()


def make_manifests(root: Path, out_dir: Path, *, hospitals: int, scheme: str, seed: int, alpha: float,
                   test_fraction: float, val_fraction: float, test_list: Path | None = None,
                   gzip_output: bool = False, stratify_test: bool = False) -> dict[str, Any]:
    """Partition the dataset at ``root`` and write the manifests + ``partition.json``.

    A dataset in the task layout with an official ``split`` column (a MedMNIST export) keeps its
    official test split (unless ``test_list`` is given) and val split (each val image is a
    ``val`` row of the hospital it is dealt to; ``val_fraction`` is then unused)."""
    meta = loader.read_metadata(root)
    task = loader.metadata_task(meta)
    official_test, official_val = _official_splits(meta)
    test_images = _read_test_list(test_list) if test_list else official_test
    parts = partition.partition(meta, hospitals=hospitals, scheme=scheme, seed=seed, alpha=alpha,
                                test_fraction=test_fraction, val_fraction=val_fraction, test_images=test_images,
                                val_images=official_val, stratify_test=stratify_test,
                                source=meta.attrs.get("source", str(root)), task=task)
    partition.write_partition(out_dir, parts, gzip_output=gzip_output, task=task)
    summary = partition.summarize(parts, meta=meta, task=task)
    rows = summary["manifests"]
    info = {
        "root": str(root),
        "metadata": meta.attrs.get("source", ""),
        "task": task.to_record(),
        "hospitals": hospitals,
        "scheme": scheme,
        "seed": seed,
        "alpha": alpha if scheme in ("dirichlet", "quantity") else None,
        "test_fraction": None if test_images is not None else test_fraction,
        "stratify_test": bool(stratify_test) if test_images is None else None,
        "test_list": str(test_list) if test_list else ("official test split" if official_test is not None else None),
        "val_fraction": None if official_val is not None else val_fraction,
        "val_split": "official val split" if official_val is not None else "patient-level val_fraction",
        "counts": {n: r["images"] for n, r in rows.items()},
        "patients": {n: r["patients"] for n, r in rows.items()},
        "positives": {n: r["positives"] for n, r in rows.items()},
        "non_iid": summary["non_iid"],
    }
    if any("ap_fraction" in r for r in rows.values()):
        info["ap_fraction"] = {n: r["ap_fraction"] for n, r in rows.items() if "ap_fraction" in r}
    if (root / medmnist.EXPORT_MARKER).is_file():
        info["pseudo_patients"] = True
        info["patients_note"] = "MedMNIST has no patient IDs: each image is its own pseudo-patient"
    atomic_write_json(out_dir / "partition.json", info)
    return summary


def _check_given_manifests(cfg: DataConfig, root: Path) -> Path:
    import pandas as pd

    mdir = resolve_path(cfg.manifests)
    if not mdir.is_dir():
        raise DataError(f"{mdir}: data.manifests directory not found")
    frames = read_manifest_dir(mdir)
    k = len(hospital_names(mdir))
    if k != cfg.hospitals:
        raise DataError(f"{mdir}: holds {k} hospital manifests but data.hospitals = {cfg.hospitals}")
    meta = loader.read_metadata(root)
    msrc = meta.attrs.get("source", str(root))
    loader.metadata_task(meta).check_compatible(manifest_task(mdir), source=msrc, other_source=str(mdir))
    known = pd.Index(meta["image"])
    for n, df in frames.items():
        check_against_metadata(df, known, source=f"{mdir}/{n}", metadata=msrc)
    return mdir


def prepare_data(cfg: DataConfig, *, seed: int, manifest_dir: Path) -> PreparedData:
    """See the module docstring. ``seed`` drives generation and partitioning."""
    info: dict[str, Any] = {}
    if cfg.source == "synthetic":
        root, info = ensure_synthetic(cfg, seed=seed)
    elif cfg.source in ("medmnist", "chestmnist"):
        root = ensure_medmnist(cfg)
    else:
        root = resolve_path(cfg.root)
        loader.find_metadata(root)  # fails early with a clear message
    synthetic = cfg.source == "synthetic"
    if cfg.manifests:
        mdir = _check_given_manifests(cfg, root)
        return PreparedData(root=root, manifest_dir=mdir, synthetic=synthetic, info=info, task=manifest_task(mdir))
    test_list = resolve_path(cfg.test_list) if cfg.test_list else None
    make_manifests(root, Path(manifest_dir), hospitals=cfg.hospitals, scheme=cfg.scheme, seed=seed, alpha=cfg.alpha,
                   test_fraction=cfg.test_fraction, val_fraction=cfg.val_fraction, test_list=test_list,
                   stratify_test=cfg.stratify_test)
    return PreparedData(root=root, manifest_dir=Path(manifest_dir), synthetic=synthetic, info=info,
                        task=manifest_task(manifest_dir))
