"""Split a dataset into simulated hospitals (paper 3.1: NIH ChestX-ray14 "split into simulated
institutional silos", three hospitals, non-IID) plus a held-out, patient-disjoint test split.

The paper does not say how its silos were formed; these schemes are the sound, documented
choices (see ``docs/data.md``). Every unit of assignment is a **patient** (all images of a
patient go to one hospital, or to the test split), so hospitals and test are patient-disjoint.
Labels follow the dataset's task (:mod:`bfdl_tff.data.tasks`; NIH: the 14 findings).

- ``iid``: patients shuffled and cut into K parts of (nearly) equal image count.
- ``dirichlet``: label skew. Each patient gets a primary class (the rarest label among their
  images by global prevalence, or "none": NIH's No Finding, a binary task's negative class); for
  every class, hospital shares are drawn from Dirichlet(alpha * 1_K) and that class's patients
  are dealt out accordingly. Small alpha -> more skew. Draws in which a hospital gets under
  1/(4K) of the images are redrawn (deterministically); for binary / multiclass tasks also draws
  in which a hospital gets under 1/(4K) of a class's images. For a binary task this is a
  Dirichlet over the label (positive / negative).
- ``quantity``: quantity skew. Hospital sizes ~ 1/(4K) + (1 - 1/4) * Dirichlet(alpha * 1_K);
  patients shuffled and cut at those image fractions (label distribution ~ IID).
- ``site``: hospital = acquisition site. For the synthetic source the ``site`` column
  (``synthetic_sites.csv``) is used (K == sites: one site per hospital; K > sites: sites split
  into contiguous patient blocks; K < sites: site index mod K). Real NIH has no site field, so
  patients are grouped into K contiguous blocks of patient IDs (IDs follow acquisition order),
  a deterministic grouping; it is *not* a real multi-site shift.
- ``view``: acquisition view from the real metadata (NIH ``View Position``: PA or AP; AP films
  are typically portable, bedside / ICU acquisitions). ``hospital_a`` is an "ICU" hospital: the
  patients with the highest fraction of AP images (ties in seeded random order) until it holds
  1/K of the images; the other K-1 hospitals get the remaining patients at random in equal image
  shares (PA-heavy). Needs K >= 2 and a ``view`` column (``Data_Entry_2017.csv``).

Validation rows (``split = val``) are either given (``val_images``: e.g. MedMNIST's official val
split, each image in the hospital it was dealt to) or a seeded patient-level ``val_fraction`` of
each hospital. The test split is either a given image list (e.g. the official NIH
``test_list.txt``) or a seeded patient-level ``test_fraction`` that depends only on the seed (the
same test set for every K and scheme); with ``stratify_test`` the fraction is taken within each
primary class, so every label keeps about ``test_fraction`` of its positives in test. Everything
is deterministic in the seed. Statistics: :mod:`bfdl_tff.data.stats` (re-exported here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from bfdl_tff.data.manifest import TEST_NAME, check_disjoint, hospital_name, manifest_bytes, validate_manifest
from bfdl_tff.data.metadata import metadata_task
from bfdl_tff.data.stats import (  # noqa: F401 - re-exported (the partition's statistics)
    format_summary,
    jensen_shannon,
    label_distribution,
    non_iid_stats,
    summarize,
)
from bfdl_tff.data.tasks import NIH_TASK, TASK_FILE, Task, write_task_file
from bfdl_tff.errors import DataError
from bfdl_tff.io_utils import atomic_write_bytes

SCHEMES = ("iid", "dirichlet", "quantity", "site", "view")
_SCHEME_CODE = {s: i for i, s in enumerate(SCHEMES)}


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def patient_table(meta: pd.DataFrame, *, labels: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per patient: ``patient_id, n_images, <label counts>, primary, site?, ap?`` (sorted
    by id). ``primary`` indexes the rarest label the patient has (``len(labels)`` = none);
    ``ap`` is the patient's fraction of AP-view images (when ``meta`` has a ``view`` column)."""
    labels = list(labels or metadata_task(meta).labels)
    g = meta.groupby("patient_id", sort=True)
    tab = g[labels].sum()
    tab.insert(0, "n_images", g.size())
    prev = meta[labels].mean().to_numpy()
    order = np.argsort(prev, kind="stable")  # rarest first
    has = tab[labels].to_numpy() > 0
    primary = np.full(len(tab), len(labels), dtype=np.int64)  # len(labels) = none
    for j in order[::-1]:  # overwrite with rarer labels last
        primary[has[:, j]] = j
    tab["primary"] = primary
    if "site" in meta:
        tab["site"] = g["site"].first()
    if "view" in meta:
        tab["ap"] = (meta["view"] == "AP").groupby(meta["patient_id"], sort=True).mean()
    return tab.reset_index()


def _cut_by_images(n_images: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Assign consecutive patients to parts so part k gets ~fractions[k] of the images."""
    cum = np.cumsum(n_images) - n_images / 2.0
    edges = np.cumsum(fractions)[:-1] * n_images.sum()
    return np.searchsorted(edges, cum, side="right")


def _given_images(meta: pd.DataFrame, images: Iterable[str], *, what: str, source: str) -> pd.Series:
    """Boolean mask of the given images; they must be known and patient-disjoint from the rest."""
    wanted = pd.Index(list(images))
    unknown = wanted[~wanted.isin(meta["image"])]
    if len(unknown):
        raise DataError(f"{source}: {len(unknown)} {what} image(s) not in the metadata, first: {', '.join(unknown[:5])}")
    sel = meta["image"].isin(wanted)
    shared = np.intersect1d(meta.loc[sel, "patient_id"].unique(), meta.loc[~sel, "patient_id"].unique())
    if len(shared):
        raise DataError(f"{source}: {what} list is not patient-disjoint: {len(shared)} patient(s) also have "
                        f"non-{what} images, first: {shared[:5].tolist()}")
    return sel


def split_test(meta: pd.DataFrame, *, seed: int, test_fraction: float, test_images: Iterable[str] | None = None,
               source: str = "<test list>", stratify: bool = False,
               labels: Iterable[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return ``(pool, test)``: test = the given images, or a seeded patient-level fraction
    (within each primary class if ``stratify``)."""
    if test_images is not None:
        is_test = _given_images(meta, test_images, what="test", source=source)
        return meta[~is_test], meta[is_test]
    pats = patient_table(meta, labels=labels)
    if len(pats) < 2:
        raise DataError(f"{source}: need at least 2 patients to hold out a test split")
    n_all = pats["n_images"].to_numpy()
    if stratify:
        rng = _rng(seed, 0x7E57, 1)
        take = np.zeros(len(pats), dtype=bool)
        classes = pats["primary"].to_numpy()
        for c in np.unique(classes):
            idx = np.flatnonzero(classes == c)
            idx = idx[rng.permutation(len(idx))]
            take[idx] = _cut_by_images(n_all[idx], np.array([test_fraction, 1.0 - test_fraction])) == 0
        if take.all() or not take.any():
            take[:] = False
            take[rng.permutation(len(pats))[:1]] = True
    else:
        perm = _rng(seed, 0x7E57).permutation(len(pats))
        n = n_all[perm]
        k = int(np.searchsorted(np.cumsum(n), test_fraction * n.sum(), side="left")) + 1
        k = min(max(k, 1), len(pats) - 1)
        take = np.zeros(len(pats), dtype=bool)
        take[perm[:k]] = True
    is_test = meta["patient_id"].isin(pats["patient_id"].to_numpy()[take])
    return meta[~is_test], meta[is_test]


def _class_floor_ok(out: np.ndarray, n_img: np.ndarray, sel: np.ndarray, hospitals: int, min_share: float) -> bool:
    got = np.bincount(out[sel], weights=n_img[sel], minlength=hospitals)
    return bool(got.min() >= max(1.0, min_share * n_img[sel].sum()))


def _assign_dirichlet(pats: pd.DataFrame, hospitals: int, alpha: float, rng: np.random.Generator,
                      min_share: float, source: str, *, every_class: bool = False) -> np.ndarray:
    """Dirichlet label skew; draws are repeated until every hospital holds >= ``min_share`` of the
    images and (``every_class``: binary / multiclass tasks) >= ``min_share`` (and >= 1 image) of
    every class that has >= 2K patients, so every hospital trains and validates on every class."""
    n_img = pats["n_images"].to_numpy()
    classes = pats["primary"].to_numpy()
    uniq, n_cls = np.unique(classes, return_counts=True)
    must = uniq[n_cls >= 2 * hospitals] if every_class else uniq[:0]
    out = np.empty(len(pats), dtype=np.int64)
    for _ in range(1000):
        for c in uniq:
            idx = np.flatnonzero(classes == c)
            idx = idx[rng.permutation(len(idx))]
            q = rng.dirichlet(np.full(hospitals, alpha))
            out[idx] = _cut_by_images(n_img[idx], q)
        sizes = np.bincount(out, weights=n_img, minlength=hospitals)
        counts = np.bincount(out, minlength=hospitals)
        if (sizes.min() >= min_share * n_img.sum() and counts.min() >= 2
                and all(_class_floor_ok(out, n_img, classes == c, hospitals, min_share) for c in must)):
            return out
    raise DataError(f"{source}: dirichlet(alpha={alpha}) could not give every one of {hospitals} hospitals "
                    f">= {min_share:.3f} of the images{' and every class' if every_class else ''} in 1000 draws; "
                    f"use a larger alpha or fewer hospitals")


def _assign_site(pats: pd.DataFrame, hospitals: int) -> np.ndarray:
    n_img = pats["n_images"].to_numpy()
    if "site" not in pats:  # real NIH: contiguous patient-ID blocks
        return _cut_by_images(n_img, np.full(hospitals, 1.0 / hospitals))
    out = np.empty(len(pats), dtype=np.int64)
    site = pats["site"].to_numpy()
    sites = np.unique(site)
    n_sites = len(sites)
    site_rank = np.searchsorted(sites, site)
    if hospitals <= n_sites:
        return site_rank % hospitals
    per_site = [len(range(s, hospitals, n_sites)) for s in range(n_sites)]
    first = np.concatenate([[0], np.cumsum(per_site)[:-1]])
    for s in range(n_sites):
        idx = np.flatnonzero(site_rank == s)  # already sorted by patient id
        out[idx] = first[s] + _cut_by_images(n_img[idx], np.full(per_site[s], 1.0 / per_site[s]))
    return out


def _assign_view(pats: pd.DataFrame, hospitals: int, rng: np.random.Generator, source: str) -> np.ndarray:
    if "ap" not in pats:
        raise DataError(f"{source}: scheme 'view' needs each image's View Position (NIH Data_Entry_2017.csv); "
                        f"this metadata has none")
    if hospitals < 2:
        raise DataError(f"{source}: scheme 'view' needs at least 2 hospitals (an ICU hospital and the others)")
    n_img = pats["n_images"].to_numpy()
    perm = rng.permutation(len(pats))
    order = perm[np.argsort(-pats["ap"].to_numpy()[perm], kind="stable")]  # most AP first, ties random
    icu = _cut_by_images(n_img[order], np.array([1.0 / hospitals, 1.0 - 1.0 / hospitals])) == 0
    out = np.empty(len(pats), dtype=np.int64)
    out[order[icu]] = 0
    rest = order[~icu]
    rest = rest[rng.permutation(len(rest))]
    out[rest] = 1 + _cut_by_images(n_img[rest], np.full(hospitals - 1, 1.0 / (hospitals - 1)))
    return out


def assign_hospitals(pool: pd.DataFrame, *, hospitals: int, scheme: str, seed: int, alpha: float = 0.5,
                     source: str = "<dataset>", task: Task | None = None) -> dict[int, int]:
    """patient_id -> hospital index (0-based) for the patients of ``pool`` (task: the pool's)."""
    task = task or metadata_task(pool)
    labels = task.labels
    if scheme not in SCHEMES:
        raise DataError(f"{source}: unknown partition scheme {scheme!r} (known: {', '.join(SCHEMES)})")
    if hospitals < 1:
        raise DataError(f"{source}: hospitals must be >= 1, got {hospitals}")
    if alpha <= 0:
        raise DataError(f"{source}: alpha must be > 0, got {alpha}")
    pats = patient_table(pool, labels=labels)
    if len(pats) < 2 * hospitals:
        raise DataError(f"{source}: {len(pats)} patient(s) cannot fill {hospitals} hospitals (need >= 2 each)")
    n_img = pats["n_images"].to_numpy()
    rng = _rng(seed, hospitals, _SCHEME_CODE[scheme], 0xB0D1)
    min_share = 1.0 / (4 * hospitals)
    if scheme == "iid":
        out = np.empty(len(pats), dtype=np.int64)
        perm = rng.permutation(len(pats))
        out[perm] = _cut_by_images(n_img[perm], np.full(hospitals, 1.0 / hospitals))
    elif scheme == "quantity":
        out = np.empty(len(pats), dtype=np.int64)
        frac = min_share + (1 - hospitals * min_share) * rng.dirichlet(np.full(hospitals, alpha))
        perm = rng.permutation(len(pats))
        out[perm] = _cut_by_images(n_img[perm], frac)
    elif scheme == "dirichlet":
        out = _assign_dirichlet(pats, hospitals, alpha, rng, min_share, source, every_class=task.kind != "multilabel")
    elif scheme == "view":
        out = _assign_view(pats, hospitals, rng, source)
    else:
        out = _assign_site(pats, hospitals)
    counts = np.bincount(out, minlength=hospitals)
    if counts.min() < 1:
        raise DataError(f"{source}: scheme {scheme!r} left hospital {hospital_name(int(np.argmin(counts)))} empty")
    return dict(zip(pats["patient_id"].tolist(), out.tolist()))


def mark_validation(df: pd.DataFrame, *, val_fraction: float, rng: np.random.Generator) -> pd.Series:
    """``split`` column for one hospital: patient-level ``val_fraction`` of its images -> ``val``."""
    split = pd.Series("train", index=df.index)
    if val_fraction <= 0:
        return split
    n = df.groupby("patient_id", sort=True).size()
    if len(n) < 2:
        return split
    perm = rng.permutation(len(n))
    cum = np.cumsum(n.to_numpy()[perm])
    k = int(np.searchsorted(cum, val_fraction * cum[-1], side="left")) + 1
    k = min(max(k, 1), len(n) - 1)
    val_pat = n.index.to_numpy()[perm[:k]]
    split[df["patient_id"].isin(val_pat)] = "val"
    return split


def _manifest_frame(rows: pd.DataFrame, split: pd.Series | str, task: Task) -> pd.DataFrame:
    out = pd.DataFrame({"image": rows["image"].to_numpy(), "patient_id": rows["patient_id"].to_numpy()})
    out["split"] = split.to_numpy() if isinstance(split, pd.Series) else split
    for f in task.labels:
        out[f] = rows[f].to_numpy().astype(np.int8)
    out = out.sort_values("image", kind="stable").reset_index(drop=True)
    out.attrs["task"] = task
    return out


def partition(meta: pd.DataFrame, *, hospitals: int, scheme: str, seed: int, alpha: float = 0.5,
              test_fraction: float = 0.2, val_fraction: float = 0.1, test_images: Iterable[str] | None = None,
              val_images: Iterable[str] | None = None, stratify_test: bool = False,
              source: str = "<dataset>", task: Task | None = None) -> dict[str, pd.DataFrame]:
    """Manifests ``{hospital_a: df, ..., test: df}`` (see module docstring); each frame carries
    ``attrs['task']`` (``task``, else the metadata's)."""
    task = task or metadata_task(meta)
    if meta["image"].duplicated().any():
        raise DataError(f"{source}: duplicate images in the metadata, first: {meta['image'][meta['image'].duplicated()].iloc[0]}")
    pool, test = split_test(meta, seed=seed, test_fraction=test_fraction, test_images=test_images, source=source,
                            stratify=stratify_test, labels=task.labels)
    is_val = None
    if val_images is not None:
        is_val = _given_images(pool, val_images, what="val", source=source).to_numpy()
    owner = assign_hospitals(pool, hospitals=hospitals, scheme=scheme, seed=seed, alpha=alpha, source=source, task=task)
    h = pool["patient_id"].map(owner).to_numpy()
    parts: dict[str, pd.DataFrame] = {}
    for k in range(hospitals):
        rows = pool[h == k]
        if is_val is not None:
            split = pd.Series(np.where(is_val[h == k], "val", "train"), index=rows.index)
        else:
            split = mark_validation(rows, val_fraction=val_fraction, rng=_rng(seed, hospitals, _SCHEME_CODE[scheme], k, 0x7A1))
        parts[hospital_name(k)] = _manifest_frame(rows, split, task)
    parts[TEST_NAME] = _manifest_frame(test, "test", task)
    check_disjoint(parts, source=source)
    return parts


def write_partition(out_dir: str | Path, parts: Mapping[str, pd.DataFrame], *, gzip_output: bool = False,
                    task: Task | None = None) -> list[Path]:
    """Write every manifest atomically (and ``task.json`` unless the task is NIH's). All files are
    serialised and validated first, so a failure writes nothing; stale ``hospital_*`` files of
    another K are removed."""
    out_dir = Path(out_dir)
    task = task or (next(iter(parts.values())).attrs.get("task") if parts else None) or NIH_TASK
    ext = ".csv.gz" if gzip_output else ".csv"
    blobs = {}
    for name, df in parts.items():
        path = out_dir / f"{name}{ext}"
        df = validate_manifest(df, source=str(path), expected_splits=("test",) if name == TEST_NAME else ("train", "val"),
                               task=task)
        blobs[path] = manifest_bytes(df, gzip_output=gzip_output, task=task)
    check_disjoint(parts, source=str(out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if task != NIH_TASK:  # the task first: manifests are never readable under a stale task
        written.append(write_task_file(out_dir, task))
    elif (out_dir / TASK_FILE).exists():
        (out_dir / TASK_FILE).unlink()
    for path, data in blobs.items():
        atomic_write_bytes(path, data)
        written.append(path)
    keep = {p.name for p in written}
    for p in sorted(out_dir.glob("hospital_*.csv*")):
        if p.name not in keep:
            p.unlink()
    other = ".csv" if gzip_output else ".csv.gz"
    stale = out_dir / f"{TEST_NAME}{other}"
    if stale.exists():
        stale.unlink()
    return written
