"""Split a dataset into simulated hospitals (paper 3.1: NIH ChestX-ray14 "split into simulated
institutional silos", three hospitals, non-IID) plus a held-out, patient-disjoint test split.

The paper does not say how its silos were formed; these schemes are the sound, documented
choices (see ``docs/data.md``). Every unit of assignment is a **patient** (all images of a
patient go to one hospital, or to the test split), so hospitals and test are patient-disjoint.

- ``iid``: patients shuffled and cut into K parts of (nearly) equal image count.
- ``dirichlet``: label skew. Each patient gets a primary class (the rarest finding among their
  images by global prevalence, or "No Finding"); for every class, hospital shares are drawn from
  Dirichlet(alpha * 1_K) and that class's patients are dealt out accordingly. Small alpha -> more
  skew. Draws in which a hospital gets under 1/(4K) of the images are redrawn (deterministically).
- ``quantity``: quantity skew. Hospital sizes ~ 1/(4K) + (1 - 1/4) * Dirichlet(alpha * 1_K);
  patients shuffled and cut at those image fractions (label distribution ~ IID).
- ``site``: hospital = acquisition site. For the synthetic source the ``site`` column
  (``synthetic_sites.csv``) is used (K == sites: one site per hospital; K > sites: sites split
  into contiguous patient blocks; K < sites: site index mod K). Real NIH has no site field, so
  patients are grouped into K contiguous blocks of patient IDs (IDs follow acquisition order),
  a deterministic grouping; it is *not* a real multi-site shift.

Validation rows (``split = val``) are a patient-level ``val_fraction`` of each hospital. The test
split is either a given image list (e.g. the official NIH ``test_list.txt``) or a seeded
patient-level ``test_fraction`` that depends only on the seed (the same test set for every K and
scheme). Everything is deterministic in the seed.

Non-IID-ness is measured by the Jensen-Shannon divergence (base 2, in [0, 1]) between each
hospital's label distribution (14 findings + No Finding, normalised counts) and the pooled one;
:func:`non_iid_stats` reports the mean and max over hospitals and the coefficient of variation of
the hospital sizes (quantity skew).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from bfdl_tff.data.labels import FINDINGS, NO_FINDING
from bfdl_tff.data.manifest import (
    TEST_NAME,
    check_disjoint,
    display_name,
    hospital_name,
    manifest_bytes,
    validate_manifest,
)
from bfdl_tff.errors import DataError
from bfdl_tff.io_utils import atomic_write_bytes

SCHEMES = ("iid", "dirichlet", "quantity", "site")
_SCHEME_CODE = {s: i for i, s in enumerate(SCHEMES)}


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def patient_table(meta: pd.DataFrame) -> pd.DataFrame:
    """One row per patient: ``patient_id, n_images, <14 counts>, primary, site?`` (sorted by id)."""
    g = meta.groupby("patient_id", sort=True)
    tab = g[list(FINDINGS)].sum()
    tab.insert(0, "n_images", g.size())
    prev = meta[list(FINDINGS)].mean().to_numpy()
    order = np.argsort(prev, kind="stable")  # rarest first
    has = tab[list(FINDINGS)].to_numpy() > 0
    primary = np.full(len(tab), len(FINDINGS), dtype=np.int64)  # 14 = No Finding
    for j in order[::-1]:  # overwrite with rarer findings last
        primary[has[:, j]] = j
    tab["primary"] = primary
    if "site" in meta:
        tab["site"] = g["site"].first()
    return tab.reset_index()


def _cut_by_images(n_images: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Assign consecutive patients to parts so part k gets ~fractions[k] of the images."""
    cum = np.cumsum(n_images) - n_images / 2.0
    edges = np.cumsum(fractions)[:-1] * n_images.sum()
    return np.searchsorted(edges, cum, side="right")


def split_test(meta: pd.DataFrame, *, seed: int, test_fraction: float,
               test_images: Iterable[str] | None = None, source: str = "<test list>") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return ``(pool, test)``: test = the given images, or a seeded patient-level fraction."""
    if test_images is not None:
        wanted = pd.Index(list(test_images))
        unknown = wanted[~wanted.isin(meta["image"])]
        if len(unknown):
            raise DataError(f"{source}: {len(unknown)} test image(s) not in the metadata, first: {', '.join(unknown[:5])}")
        is_test = meta["image"].isin(wanted)
        shared = np.intersect1d(meta.loc[is_test, "patient_id"].unique(), meta.loc[~is_test, "patient_id"].unique())
        if len(shared):
            raise DataError(f"{source}: test list is not patient-disjoint: {len(shared)} patient(s) also have non-test images, first: {shared[:5].tolist()}")
        return meta[~is_test], meta[is_test]
    pats = patient_table(meta)
    perm = _rng(seed, 0x7E57).permutation(len(pats))
    n = pats["n_images"].to_numpy()[perm]
    k = int(np.searchsorted(np.cumsum(n), test_fraction * n.sum(), side="left")) + 1
    k = min(max(k, 1), len(pats) - 1)
    if len(pats) < 2:
        raise DataError(f"{source}: need at least 2 patients to hold out a test split")
    test_pat = pats["patient_id"].to_numpy()[perm[:k]]
    is_test = meta["patient_id"].isin(test_pat)
    return meta[~is_test], meta[is_test]


def assign_hospitals(pool: pd.DataFrame, *, hospitals: int, scheme: str, seed: int, alpha: float = 0.5,
                     source: str = "<dataset>") -> dict[int, int]:
    """patient_id -> hospital index (0-based) for the patients of ``pool``."""
    if scheme not in SCHEMES:
        raise DataError(f"{source}: unknown partition scheme {scheme!r} (known: {', '.join(SCHEMES)})")
    if hospitals < 1:
        raise DataError(f"{source}: hospitals must be >= 1, got {hospitals}")
    if alpha <= 0:
        raise DataError(f"{source}: alpha must be > 0, got {alpha}")
    pats = patient_table(pool)
    if len(pats) < 2 * hospitals:
        raise DataError(f"{source}: {len(pats)} patient(s) cannot fill {hospitals} hospitals (need >= 2 each)")
    n_img = pats["n_images"].to_numpy()
    pid = pats["patient_id"].to_numpy()
    rng = _rng(seed, hospitals, _SCHEME_CODE[scheme], 0xB0D1)
    min_share = 1.0 / (4 * hospitals)
    out = np.empty(len(pats), dtype=np.int64)
    if scheme == "iid":
        perm = rng.permutation(len(pats))
        out[perm] = _cut_by_images(n_img[perm], np.full(hospitals, 1.0 / hospitals))
    elif scheme == "quantity":
        frac = min_share + (1 - hospitals * min_share) * rng.dirichlet(np.full(hospitals, alpha))
        perm = rng.permutation(len(pats))
        out[perm] = _cut_by_images(n_img[perm], frac)
    elif scheme == "dirichlet":
        classes = pats["primary"].to_numpy()
        for attempt in range(1000):
            for c in np.unique(classes):
                idx = np.flatnonzero(classes == c)
                idx = idx[rng.permutation(len(idx))]
                q = rng.dirichlet(np.full(hospitals, alpha))
                out[idx] = _cut_by_images(n_img[idx], q)
            sizes = np.bincount(out, weights=n_img, minlength=hospitals)
            counts = np.bincount(out, minlength=hospitals)
            if sizes.min() >= min_share * n_img.sum() and counts.min() >= 2:
                break
        else:
            raise DataError(f"{source}: dirichlet(alpha={alpha}) could not give every one of {hospitals} hospitals "
                            f">= {min_share:.3f} of the images in 1000 draws; use a larger alpha or fewer hospitals")
    else:  # site
        if "site" in pats:
            site = pats["site"].to_numpy()
            sites = np.unique(site)
            n_sites = len(sites)
            site_rank = np.searchsorted(sites, site)
            if hospitals <= n_sites:
                out[:] = site_rank % hospitals
            else:
                per_site = [len(range(s, hospitals, n_sites)) for s in range(n_sites)]
                first = np.concatenate([[0], np.cumsum(per_site)[:-1]])
                for s in range(n_sites):
                    idx = np.flatnonzero(site_rank == s)  # already sorted by patient id
                    out[idx] = first[s] + _cut_by_images(n_img[idx], np.full(per_site[s], 1.0 / per_site[s]))
        else:
            out[:] = _cut_by_images(n_img, np.full(hospitals, 1.0 / hospitals))
    counts = np.bincount(out, minlength=hospitals)
    if counts.min() < 1:
        raise DataError(f"{source}: scheme {scheme!r} left hospital {hospital_name(int(np.argmin(counts)))} empty")
    return dict(zip(pid.tolist(), out.tolist()))


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


def _manifest_frame(rows: pd.DataFrame, split: pd.Series | str) -> pd.DataFrame:
    out = pd.DataFrame({"image": rows["image"].to_numpy(), "patient_id": rows["patient_id"].to_numpy()})
    out["split"] = split.to_numpy() if isinstance(split, pd.Series) else split
    for f in FINDINGS:
        out[f] = rows[f].to_numpy().astype(np.int8)
    return out.sort_values("image", kind="stable").reset_index(drop=True)


def partition(meta: pd.DataFrame, *, hospitals: int, scheme: str, seed: int, alpha: float = 0.5,
              test_fraction: float = 0.2, val_fraction: float = 0.1, test_images: Iterable[str] | None = None,
              source: str = "<dataset>") -> dict[str, pd.DataFrame]:
    """Manifests ``{hospital_a: df, ..., test: df}`` (see module docstring)."""
    if meta["image"].duplicated().any():
        raise DataError(f"{source}: duplicate images in the metadata, first: {meta['image'][meta['image'].duplicated()].iloc[0]}")
    pool, test = split_test(meta, seed=seed, test_fraction=test_fraction, test_images=test_images, source=source)
    owner = assign_hospitals(pool, hospitals=hospitals, scheme=scheme, seed=seed, alpha=alpha, source=source)
    h = pool["patient_id"].map(owner).to_numpy()
    parts: dict[str, pd.DataFrame] = {}
    for k in range(hospitals):
        rows = pool[h == k]
        split = mark_validation(rows, val_fraction=val_fraction, rng=_rng(seed, hospitals, _SCHEME_CODE[scheme], k, 0x7A1))
        parts[hospital_name(k)] = _manifest_frame(rows, split)
    parts[TEST_NAME] = _manifest_frame(test, "test")
    check_disjoint(parts, source=source)
    return parts


def write_partition(out_dir: str | Path, parts: Mapping[str, pd.DataFrame], *, gzip_output: bool = False) -> list[Path]:
    """Write every manifest atomically. All files are serialised and validated first, so a
    failure writes nothing; stale ``hospital_*`` files of another K are removed."""
    out_dir = Path(out_dir)
    ext = ".csv.gz" if gzip_output else ".csv"
    blobs = {}
    for name, df in parts.items():
        path = out_dir / f"{name}{ext}"
        df = validate_manifest(df, source=str(path), expected_splits=("test",) if name == TEST_NAME else ("train", "val"))
        blobs[path] = manifest_bytes(df, gzip_output=gzip_output)
    check_disjoint(parts, source=str(out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
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


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def label_distribution(df: pd.DataFrame) -> np.ndarray:
    """Normalised counts over 14 findings + No Finding (length 15)."""
    y = df[list(FINDINGS)].to_numpy()
    c = np.concatenate([y.sum(axis=0), [(y.sum(axis=1) == 0).sum()]]).astype(np.float64)
    return c / c.sum() if c.sum() > 0 else c


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (0 = identical, 1 = disjoint support)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / b[nz])))

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def non_iid_stats(parts: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    """Label skew (JSD of each hospital vs pooled hospitals) and quantity skew (CV of sizes)."""
    hosp = {n: df for n, df in parts.items() if n != TEST_NAME}
    pooled = label_distribution(pd.concat(list(hosp.values())))
    jsd = {n: jensen_shannon(label_distribution(df), pooled) for n, df in hosp.items()}
    sizes = np.array([len(df) for df in hosp.values()], dtype=np.float64)
    return {
        "jsd": jsd,
        "mean_jsd": float(np.mean(list(jsd.values()))) if jsd else 0.0,
        "max_jsd": float(np.max(list(jsd.values()))) if jsd else 0.0,
        "size_cv": float(sizes.std() / sizes.mean()) if len(sizes) and sizes.mean() > 0 else 0.0,
    }


def summarize(parts: Mapping[str, pd.DataFrame], *, meta: pd.DataFrame | None = None) -> dict[str, Any]:
    """Per-manifest counts, patients, label prevalence (and sites when ``meta`` has them)."""
    rows = {}
    site_of = meta.set_index("image")["site"] if meta is not None and "site" in meta else None
    for name, df in parts.items():
        y = df[list(FINDINGS)].to_numpy()
        row: dict[str, Any] = {
            "images": int(len(df)),
            "patients": int(df["patient_id"].nunique()),
            "train": int((df["split"] == "train").sum()),
            "val": int((df["split"] == "val").sum()),
            "test": int((df["split"] == "test").sum()),
            "prevalence": {f: float(v) for f, v in zip(FINDINGS, y.mean(axis=0) if len(y) else np.zeros(len(FINDINGS)))},
            "no_finding": float((y.sum(axis=1) == 0).mean()) if len(y) else 0.0,
        }
        if site_of is not None:
            s = site_of.reindex(df["image"]).dropna().astype(int)
            row["sites"] = {str(k): int(v) for k, v in s.value_counts().sort_index().items()}
        rows[name] = row
    return {"manifests": rows, "non_iid": non_iid_stats(parts)}


_ABBR = {"Atelectasis": "Atel", "Cardiomegaly": "Card", "Effusion": "Effu", "Infiltration": "Infi", "Mass": "Mass",
         "Nodule": "Nodu", "Pneumonia": "Pna", "Pneumothorax": "Ptx", "Consolidation": "Cons", "Edema": "Edem",
         "Emphysema": "Emph", "Fibrosis": "Fibr", "Pleural_Thickening": "PlTh", "Hernia": "Hern"}


def format_summary(summary: Mapping[str, Any]) -> str:
    """Human-readable table of :func:`summarize` output."""
    lines = []
    head = f"{'manifest':<12} {'images':>7} {'patients':>8} {'train':>6} {'val':>5} {'test':>6}  {'NoF':>5} " + " ".join(
        f"{_ABBR[f]:>5}" for f in FINDINGS)
    lines.append(head)
    for name, r in summary["manifests"].items():
        lines.append(
            f"{display_name(name):<12} {r['images']:>7} {r['patients']:>8} {r['train']:>6} {r['val']:>5} {r['test']:>6}  "
            f"{r['no_finding']:>5.3f} " + " ".join(f"{r['prevalence'][f]:>5.3f}" for f in FINDINGS)
        )
        if "sites" in r:
            lines.append(f"{'':<12} sites: " + ", ".join(f"{k}: {v}" for k, v in r["sites"].items()))
    ni = summary["non_iid"]
    lines.append(
        "non-IID: mean JSD(hospital || pooled) = {:.4f} bits, max = {:.4f}; hospital size CV = {:.3f}".format(
            ni["mean_jsd"], ni["max_jsd"], ni["size_cv"])
    )
    lines.append("  per hospital JSD: " + ", ".join(f"{display_name(k)} {v:.4f}" for k, v in ni["jsd"].items()))
    lines.append(f"(prevalence columns: {', '.join(f'{_ABBR[f]}={f}' for f in FINDINGS)}; NoF={NO_FINDING})")
    return "\n".join(lines)
