"""Turn a :class:`bfdl_tff.config.DataConfig` into a dataset root plus a manifest directory
(paper 3.1), the single entry point the training code uses.

- ``synthetic``: the dataset is generated once under ``cfg.root`` in a sub-directory keyed by
  (images, size, seed, sites, site shift, generator version), e.g.
  ``data/synthetic/synth-n1500-s64-seed0-sites3-shift-v2``; later runs reuse it. Generation goes
  to a temporary sibling directory that is renamed into place when complete, so concurrent or
  interrupted runs never see a half-written dataset.
- ``nih``: ``cfg.root`` is an NIH ChestX-ray14 download (see :mod:`bfdl_tff.data.loader`).
- ``chestmnist``: ``cfg.npz`` is exported once into the NIH layout under ``cfg.root``; its test
  split becomes ``test.csv``.

Manifests: if ``cfg.manifests`` names a directory, it is validated and used as is; otherwise the
dataset is partitioned (``cfg.hospitals``, ``cfg.scheme``, ``cfg.alpha``, ``cfg.test_fraction``,
``cfg.val_fraction``, optional ``cfg.test_list``) into ``manifest_dir`` with ``partition.json``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bfdl_tff.config import REPO_ROOT, DataConfig
from bfdl_tff.data import chestmnist, loader, partition, synth
from bfdl_tff.data.manifest import check_against_metadata, hospital_names, read_manifest_dir
from bfdl_tff.errors import DataError
from bfdl_tff.io_utils import atomic_write_json


@dataclass
class PreparedData:
    root: Path
    manifest_dir: Path
    synthetic: bool
    info: dict[str, Any] = field(default_factory=dict)


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


def ensure_chestmnist(cfg: DataConfig) -> Path:
    if not cfg.npz:
        raise DataError("data.npz: source 'chestmnist' needs the path of chestmnist.npz")
    root = resolve_path(cfg.root)
    if not (root / chestmnist.EXPORT_MARKER).is_file():
        chestmnist.export_chestmnist(resolve_path(cfg.npz), root)
    return root


def _read_test_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: test list not found")
    names = [ln.split()[0] for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not names:
        raise DataError(f"{path}: empty test list")
    return names


def make_manifests(root: Path, out_dir: Path, *, hospitals: int, scheme: str, seed: int, alpha: float,
                   test_fraction: float, val_fraction: float, test_list: Path | None = None,
                   gzip_output: bool = False) -> dict[str, Any]:
    """Partition the dataset at ``root`` and write the manifests + ``partition.json``."""
    meta = loader.read_metadata(root)
    test_images = _read_test_list(test_list) if test_list else None
    parts = partition.partition(meta, hospitals=hospitals, scheme=scheme, seed=seed, alpha=alpha,
                                test_fraction=test_fraction, val_fraction=val_fraction, test_images=test_images,
                                source=meta.attrs.get("source", str(root)))
    partition.write_partition(out_dir, parts, gzip_output=gzip_output)
    summary = partition.summarize(parts, meta=meta)
    info = {
        "root": str(root),
        "metadata": meta.attrs.get("source", ""),
        "hospitals": hospitals,
        "scheme": scheme,
        "seed": seed,
        "alpha": alpha if scheme in ("dirichlet", "quantity") else None,
        "test_fraction": None if test_list else test_fraction,
        "test_list": str(test_list) if test_list else None,
        "val_fraction": val_fraction,
        "counts": {n: r["images"] for n, r in summary["manifests"].items()},
        "patients": {n: r["patients"] for n, r in summary["manifests"].items()},
        "non_iid": summary["non_iid"],
    }
    atomic_write_json(out_dir / "partition.json", info)
    return summary


def prepare_data(cfg: DataConfig, *, seed: int, manifest_dir: Path) -> PreparedData:
    """See the module docstring. ``seed`` drives generation and partitioning."""
    info: dict[str, Any] = {}
    if cfg.source == "synthetic":
        root, info = ensure_synthetic(cfg, seed=seed)
        cfg_test_default = None
    elif cfg.source == "chestmnist":
        root = ensure_chestmnist(cfg)
        cfg_test_default = root / "labels" / "test_list.txt"
    else:
        root = resolve_path(cfg.root)
        loader.find_metadata(root)  # fails early with a clear message
        cfg_test_default = None
    if cfg.manifests:
        mdir = resolve_path(cfg.manifests)
        if not mdir.is_dir():
            raise DataError(f"{mdir}: data.manifests directory not found")
        frames = read_manifest_dir(mdir)
        k = len(hospital_names(mdir))
        if k != cfg.hospitals:
            raise DataError(f"{mdir}: holds {k} hospital manifests but data.hospitals = {cfg.hospitals}")
        meta = loader.read_metadata(root)
        import pandas as pd

        known = pd.Index(meta["image"])
        for n, df in frames.items():
            check_against_metadata(df, known, source=f"{mdir}/{n}", metadata=meta.attrs.get("source", str(root)))
        return PreparedData(root=root, manifest_dir=mdir, synthetic=cfg.source == "synthetic", info=info)
    test_list = resolve_path(cfg.test_list) if cfg.test_list else cfg_test_default
    make_manifests(root, Path(manifest_dir), hospitals=cfg.hospitals, scheme=cfg.scheme, seed=seed, alpha=cfg.alpha,
                   test_fraction=cfg.test_fraction, val_fraction=cfg.val_fraction, test_list=test_list)
    return PreparedData(root=root, manifest_dir=Path(manifest_dir), synthetic=cfg.source == "synthetic", info=info)
