"""The checked-in NIH ChestX-ray14 metadata and hospital manifests (``data_manifests/nih_cxr14``),
paper 3.1 ("NIH chest X-ray dataset ... split into simulated institutional silos").

Metadata (``metadata/``) is copied from ``../shared/nih_cxr14`` (see its PROVENANCE.md):
the CheXNet label lists (14 labels for all 112,120 images), the official NIH train_val / test
lists, ``BBox_List_2017.csv`` and the label statistics. Text lists are stored gzip-compressed
(deterministic: mtime 0, no name); ``SHA256SUMS`` lists the stored files and PROVENANCE.md the
upstream checksums of the decompressed content, which :func:`verify_metadata` re-checks.

Manifests ``k3/`` ... ``k10/`` (``k3`` = the paper's Hospital-A/B/C): the official NIH
``test_list.txt`` (25,596 images, 2,797 patients, patient-disjoint from train_val) is the held-out
test split; the 86,524 train_val images are dealt to K hospitals by patient with the
``dirichlet`` label-skew scheme (alpha 0.5, seed 0), 10 % of each hospital's patients marked
``val``. ``view_k3/`` (issue 15.5): the same test split, the train_val images dealt by the
``view`` scheme (an AP-heavy "ICU" Hospital-A) from the complete v2020 ``Data_Entry`` table
(``metadata/full_metadata/Data_Entry_2017_v2020.csv.gz``, stored verbatim; its v2020 labels
differ from the CheXNet lists on 181 images, 0.16 %). Regenerating (``bfdl data nih-manifests``)
gives byte-identical files; ``bfdl data nih-manifests --check`` verifies that.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from bfdl_tff.config import REPO_ROOT
from bfdl_tff.data import loader, partition
from bfdl_tff.data.manifest import manifest_bytes
from bfdl_tff.errors import DataError
from bfdl_tff.io_utils import atomic_write_bytes, atomic_write_text

NIH_DIR = REPO_ROOT / "data_manifests" / "nih_cxr14"
SHARED_DIR = Path(os.environ.get("BFDL_SHARED") or REPO_ROOT.parent / "shared") / "nih_cxr14"
# stored path (under metadata/) -> upstream path (under ../shared/nih_cxr14)
METADATA_FILES = {
    "chexnet_split/train_list.txt.gz": "chexnet_split/train_list.txt",
    "chexnet_split/val_list.txt.gz": "chexnet_split/val_list.txt",
    "chexnet_split/test_list.txt.gz": "chexnet_split/test_list.txt",
    "nih_official/train_val_list.txt.gz": "nih_official/train_val_list.txt",
    "nih_official/test_list.txt.gz": "nih_official/test_list.txt",
    "nih_official/BBox_List_2017.csv": "nih_official/BBox_List_2017.csv",
    "chestxray14_label_stats.json": "chestxray14_label_stats.json",
    "full_metadata/Data_Entry_2017_v2020.csv.gz": "full_metadata/Data_Entry_2017_v2020.csv.gz",
}
FULL_TABLE = "full_metadata/Data_Entry_2017_v2020.csv.gz"
KS = tuple(range(3, 11))
VIEW_KS = (3,)
SCHEME = "dirichlet"
ALPHA = 0.5
SEED = 0
VAL_FRACTION = 0.1


def _gzip(data: bytes) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return out.getvalue()


def _plain(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def _content(stored: Path, upstream: str) -> bytes:
    """What the upstream checksum covers: the decompressed bytes if we compressed the file, else
    the stored bytes (an upstream ``.gz`` is stored verbatim)."""
    return stored.read_bytes() if upstream.endswith(".gz") else _plain(stored)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upstream_sums(shared_dir: Path = SHARED_DIR) -> dict[str, str]:
    sums = {}
    for line in (shared_dir / "SHA256SUMS").read_text().splitlines():
        if line.strip():
            h, name = line.split(maxsplit=1)
            sums[name.strip()] = h
    return sums


def import_metadata(shared_dir: Path = SHARED_DIR, out_dir: Path = NIH_DIR) -> dict[str, str]:
    """Copy the upstream files into ``out_dir/metadata`` (checksums verified first)."""
    sums = upstream_sums(shared_dir)
    written = {}
    for stored, up in METADATA_FILES.items():
        data = (shared_dir / up).read_bytes()
        if sha256(data) != sums.get(up):
            raise DataError(f"{shared_dir / up}: SHA-256 does not match {shared_dir / 'SHA256SUMS'}")
        blob = _gzip(data) if stored.endswith(".gz") and not up.endswith(".gz") else data
        atomic_write_bytes(out_dir / "metadata" / stored, blob)
        written[stored] = sha256(data)
    return written


def verify_metadata(out_dir: Path = NIH_DIR, expected: dict[str, str] | None = None) -> None:
    """Decompressed content of every stored file must match the upstream SHA-256."""
    expected = expected or UPSTREAM_SHA256
    for stored, up in METADATA_FILES.items():
        p = out_dir / "metadata" / stored
        if not p.is_file():
            raise DataError(f"{p}: missing (run: bfdl data nih-manifests --import-metadata)")
        if sha256(_content(p, up)) != expected[up]:
            raise DataError(f"{p}: content does not match the upstream SHA-256 {expected[up]}")


# Upstream checksums (../shared/nih_cxr14/SHA256SUMS), fixed here so the repo can verify alone.
UPSTREAM_SHA256 = {
    "chexnet_split/test_list.txt": "4333f58bed6d26bd974d825f6ee78a48ce7f81985803c145b3e13ae0c1d8f927",
    "chexnet_split/train_list.txt": "332d49fb9b7a380bd25c1a54de7544ab422bdc37142459e273298a8ea2ea5c03",
    "chexnet_split/val_list.txt": "ef239d3493893aba431c39a9aa5c57e9bc3c04cdd3df505e0754dece04cb31da",
    "nih_official/BBox_List_2017.csv": "b53c7a2857284c978277f18ce972f803698d3ffa929face512f908df42076dee",
    "nih_official/test_list.txt": "38ca5ef7f756092946f57c1a59faca882ed589a1ab1f72590b45dc06c6d5e1cc",
    "nih_official/train_val_list.txt": "61fbe896321c1c1c8b75f3e4f3a08e4fef6486d95ef8a667c31d4d60dca6cb81",
    "chestxray14_label_stats.json": "75549eb822f8f30236a98a4a758a18c04deedc60a29792a14ab4d1885e2af5b0",
    "full_metadata/Data_Entry_2017_v2020.csv.gz": "9d4de640ee4f760215d8be98376b20387ca52f9c6b4d1b727cb588fb82f40b80",
}


def read_labels(out_dir: Path = NIH_DIR) -> pd.DataFrame:
    """All 112,120 images with patient and 14 labels (from the CheXNet lists)."""
    md = out_dir / "metadata" / "chexnet_split"
    return loader.read_chexnet_lists([md / f"{s}_list.txt.gz" for s in ("train", "val", "test")])


def official_test_images(out_dir: Path = NIH_DIR) -> list[str]:
    text = _plain(out_dir / "metadata" / "nih_official" / "test_list.txt.gz").decode()
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def _rounded(non_iid: dict[str, Any]) -> dict[str, Any]:
    return {key: (round(v, 6) if isinstance(v, float) else {a: round(b, 6) for a, b in v.items()})
            for key, v in non_iid.items()}


def _manifest_set(meta: pd.DataFrame, test: list[str], *, dirname: str, k: int, scheme: str, source: str,
                  info: dict[str, Any]) -> dict[str, bytes]:
    parts = partition.partition(meta, hospitals=k, scheme=scheme, seed=SEED, alpha=ALPHA, val_fraction=VAL_FRACTION,
                                test_images=test, source=source)
    files = {f"{dirname}/{name}.csv.gz": manifest_bytes(df, gzip_output=True) for name, df in parts.items()}
    summ = partition.summarize(parts, meta=meta if scheme == "view" else None)
    rows = summ["manifests"]
    info = {**info, "hospitals": k, "scheme": scheme, "seed": SEED, "val_fraction": VAL_FRACTION,
            "test_split": "official NIH test_list.txt (metadata/nih_official/test_list.txt.gz)",
            "counts": {n: r["images"] for n, r in rows.items()},
            "patients": {n: r["patients"] for n, r in rows.items()},
            "non_iid": _rounded(summ["non_iid"]), "command": "bfdl data nih-manifests"}
    if scheme == "view":
        info["ap_fraction"] = {n: round(r["ap_fraction"], 6) for n, r in rows.items()}
    files[f"{dirname}/partition.json"] = (json.dumps(info, indent=2, sort_keys=True) + "\n").encode()
    return files


def build_manifests(out_dir: Path = NIH_DIR, ks: Iterable[int] = KS, view_ks: Iterable[int] = VIEW_KS) -> dict[str, bytes]:
    """relative path -> bytes of every manifest file (plus ``partition.json``): ``k<K>/`` for
    ``ks`` (dirichlet, CheXNet labels) and ``view_k<K>/`` for ``view_ks`` (view, v2020 table)."""
    test = official_test_images(out_dir)
    source = str(out_dir / "metadata" / "nih_official" / "test_list.txt.gz")
    files: dict[str, bytes] = {}
    ks, view_ks = tuple(ks), tuple(view_ks)
    if ks:
        meta = read_labels(out_dir)
        info = {"dataset": "NIH ChestX-ray14 (labels: CheXNet lists, 2017 release)",
                "labels": "metadata/chexnet_split/{train,val,test}_list.txt.gz", "alpha": ALPHA}
        for k in ks:
            files.update(_manifest_set(meta, test, dirname=f"k{k}", k=k, scheme=SCHEME, source=source, info=info))
    if view_ks:
        full = loader.read_data_entry(out_dir / "metadata" / FULL_TABLE)
        info = {"dataset": "NIH ChestX-ray14 (labels and views: complete Data_Entry table, v2020 release)",
                "labels": f"metadata/{FULL_TABLE}"}
        for k in view_ks:
            files.update(_manifest_set(full, test, dirname=f"view_k{k}", k=k, scheme="view", source=source, info=info))
    return files


def sha256sums_text(out_dir: Path, extra: dict[str, bytes] | None = None) -> str:
    """SHA256SUMS over metadata/, k*/ and view_k*/ (``extra`` overrides files not yet written)."""
    entries: dict[str, str] = {}
    for p in sorted(out_dir.rglob("*")):
        rel = p.relative_to(out_dir).as_posix()
        top = rel.split("/")[0]
        if p.is_file() and (top == "metadata" or top.startswith("k") or top.startswith("view_k")):
            entries[rel] = sha256(p.read_bytes())
    for rel, data in (extra or {}).items():
        entries[rel] = sha256(data)
    return "".join(f"{h}  {rel}\n" for rel, h in sorted(entries.items()))


def regenerate(out_dir: Path = NIH_DIR, *, check: bool = False, ks: Iterable[int] = KS,
               view_ks: Iterable[int] = VIEW_KS) -> dict[str, Any]:
    """Write (or with ``check`` compare) the manifests and SHA256SUMS. Returns a report; in
    check mode raises :class:`DataError` listing the differing files."""
    verify_metadata(out_dir)
    ks, view_ks = tuple(ks), tuple(view_ks)
    files = build_manifests(out_dir, ks, view_ks)
    if check:
        differ = [rel for rel, data in files.items()
                  if not (out_dir / rel).is_file() or (out_dir / rel).read_bytes() != data]
        if differ:
            raise DataError(f"{out_dir}: {len(differ)} manifest file(s) differ from a fresh regeneration, first: {', '.join(differ[:5])}")
        if set(ks) == set(KS) and set(view_ks) == set(VIEW_KS):
            sums = sha256sums_text(out_dir)
            if (out_dir / "SHA256SUMS").read_text() != sums:
                raise DataError(f"{out_dir / 'SHA256SUMS'}: out of date")
        return {"checked": len(files), "identical": True}
    for rel, data in files.items():
        atomic_write_bytes(out_dir / rel, data)
    atomic_write_text(out_dir / "SHA256SUMS", sha256sums_text(out_dir))
    return {"written": len(files)}
