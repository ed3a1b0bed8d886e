"""The 14 ChestX-ray14 findings and conversions between their text and 0/1 forms (paper 3.1).

The order is the CheXNet / MedMNIST ChestMNIST order, which is also the column order of every
manifest and of every model's ``findings`` output. NIH's ``Data_Entry_2017.csv`` writes labels
as ``"Cardiomegaly|Emphysema"`` or ``"No Finding"``; NIH's ``BBox_List_2017.csv`` spells
Infiltration as ``"Infiltrate"`` (accepted as an alias).
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np

from bfdl_tff.errors import DataError

FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
NUM_FINDINGS = len(FINDINGS)
NO_FINDING = "No Finding"
FINDING_INDEX: dict[str, int] = {f: i for i, f in enumerate(FINDINGS)}
# Spellings used by other NIH files.
ALIASES: dict[str, str] = {"Infiltrate": "Infiltration", "Pleural Thickening": "Pleural_Thickening"}

_IMAGE_RE = re.compile(r"^(\d+)_(\d+)\.png$")


def canonical_finding(name: str, *, source: str = "<labels>") -> str:
    """Return the canonical spelling of ``name`` or raise :class:`DataError` naming ``source``."""
    name = name.strip()
    name = ALIASES.get(name, name)
    if name not in FINDING_INDEX:
        raise DataError(f"{source}: unknown finding {name!r} (known: {', '.join(FINDINGS)}, {NO_FINDING!r})")
    return name


def parse_finding_labels(text: str, *, source: str = "<labels>") -> np.ndarray:
    """``"Cardiomegaly|Emphysema"`` -> 0/1 vector of length 14; ``"No Finding"`` -> zeros."""
    vec = np.zeros(NUM_FINDINGS, dtype=np.int8)
    text = str(text).strip()
    if text == NO_FINDING:
        return vec
    if not text:
        raise DataError(f"{source}: empty 'Finding Labels' value (use {NO_FINDING!r})")
    for part in text.split("|"):
        vec[FINDING_INDEX[canonical_finding(part, source=source)]] = 1
    return vec


def parse_many(texts: Iterable[str], *, source: str = "<labels>") -> np.ndarray:
    """Vectorised :func:`parse_finding_labels` (memoised per distinct string) -> int8 [N, 14]."""
    cache: dict[str, np.ndarray] = {}
    rows = []
    for t in texts:
        v = cache.get(t)
        if v is None:
            v = cache[t] = parse_finding_labels(t, source=source)
        rows.append(v)
    if not rows:
        return np.zeros((0, NUM_FINDINGS), dtype=np.int8)
    return np.stack(rows)


def format_finding_labels(vec: Sequence[int] | np.ndarray) -> str:
    """Inverse of :func:`parse_finding_labels` (NIH text form, CheXNet order)."""
    names = [FINDINGS[i] for i, v in enumerate(vec) if int(v)]
    return "|".join(names) if names else NO_FINDING


def patient_id_from_image(name: str, *, source: str = "<images>") -> int:
    """NIH image names are ``<patient:08d>_<follow-up:03d>.png``: ``00000001_000.png`` -> 1."""
    m = _IMAGE_RE.match(name)
    if not m:
        raise DataError(f"{source}: image name {name!r} is not of the NIH form 00000001_000.png")
    return int(m.group(1))
