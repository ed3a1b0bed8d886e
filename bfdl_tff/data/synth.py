"""Synthetic stand-in for NIH ChestX-ray14, written in the NIH layout (paper 3.1 data, simulated).

(File length, about 730 lines, over the project's ~600: the twelve finding painters live with the
generator whose calibrated gains and invisible fractions they use; moving them to a sibling module
of ``bfdl_tff/data`` is for the data area to decide.)

**Results on this data are not NIH ChestX-ray14 results.** It exists so that CI, reviewers and
machines without the 45 GB NIH release can run the whole pipeline through the very same loader.

What it writes into ``out_dir``:

- ``images/<patient:08d>_<follow-up:03d>.png``: 8-bit grayscale PNGs (about 1 % written as RGBA,
  as some NIH PNGs are, so the loader's conversion path is exercised);
- ``Data_Entry_2017.csv`` in NIH's column format (2017 layout with the trailing empty column by
  default, or the v2020 layout), with age / gender / view drawn from the real demographics;
- ``BBox_List_2017.csv`` in NIH's format (boxes in pixel coordinates of the written PNGs, for the
  8 findings NIH boxes: Atelectasis, Cardiomegaly, Effusion, Infiltrate, Mass, Nodule, Pneumonia,
  Pneumothorax);
- ``masks/<image>.png``: lesion masks (0/255) for the U-Net branch, one per image (blank when the
  image has no localized lesion);
- ``synthetic_sites.csv`` (``Patient ID,Site``): the acquisition site of every patient;
- ``SYNTHETIC_DATASET.txt`` (marker: not NIH data) and ``synth_info.json`` (parameters, counts),
  written last: their presence means the dataset is complete.

Labels: drawn so that per-finding prevalence, the number of findings per image and (approximately)
pairwise co-occurrence follow the real 112,120-image statistics in
``chestxray14_label_stats.json`` (a sequential co-occurrence sampler whose per-finding weights
are calibrated to the real marginals). ``min_prevalence`` > 0 *enriches* rare findings: their
target prevalence is raised to ``min_prevalence`` and the other findings' targets are scaled down
so the mean number of findings per image stays the real one (so a test split of a few thousand
images holds tens of positives of every finding; e.g. Hernia is 0.2 % of NIH images). Patients
have several images (the real images-per-patient histogram, capped at 20); each follow-up image
either repeats the patient's findings or is drawn afresh, which keeps the per-image marginals
while making images of one patient correlated.

Images: a schematic chest (torso, two lung fields, heart, diaphragm, ribs) with per-image anatomy
jitter. Every finding leaves a visual trace of random amplitude ``U(0.45, 1)`` times its
per-finding gain (:data:`FINDING_GAINS`, calibrated so that a well-trained centralized CNN at
32 px reaches per-finding AUCs near published NIH results; see docs/sweeps.md) times the global
``signal`` factor; in ``invisible_fraction`` of positive cases the trace is almost invisible
(label noise). E.g. an enlarged heart for Cardiomegaly, a fluid level blunting the costophrenic
angle for Effusion, one large round opacity for Mass, small ones for Nodule, a collapsed lung rim
with a pleural line for Pneumothorax, a retrocardiac bubble for Hernia. Acquisition sites
(hospitals) differ in contrast, gamma, exposure, noise and a vertical exposure gradient when
``site_shift`` is on.
"""

from __future__ import annotations

import functools
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bfdl_tff.data.labels import FINDINGS, NUM_FINDINGS, format_finding_labels
from bfdl_tff.errors import DataError
from bfdl_tff.io_utils import atomic_write_json, atomic_write_text

STATS_PATH = Path(__file__).with_name("chestxray14_label_stats.json")
MARKER = "SYNTHETIC_DATASET.txt"
INFO = "synth_info.json"
SITES_FILE = "synthetic_sites.csv"
GENERATOR_VERSION = 3
DATA_ENTRY_HEADER_2017 = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
DATA_ENTRY_HEADER_V2020 = DATA_ENTRY_HEADER_2017[:-1]
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h]"
BBOX_FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax")
# findings whose trace is a localized lesion (drawn into masks/)
MASK_FINDINGS = ("Atelectasis", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
                 "Consolidation", "Pleural_Thickening", "Hernia")
#: Per-finding share of positives whose trace is almost invisible: label noise (NIH's labels were
#: text-mined from reports, and many reported findings are not visible on a frontal film). It
#: sets each finding's AUC ceiling; calibrated with the gains below (docs/sweeps.md).
INVISIBLE_FRACTION = 0.15  # default for findings missing from INVISIBLE_FRACTIONS
INVISIBLE_FRACTIONS: dict[str, float] = {
    "Atelectasis": 0.407, "Cardiomegaly": 0.266, "Effusion": 0.317, "Infiltration": 0.554, "Mass": 0.233,
    "Nodule": 0.482, "Pneumonia": 0.486, "Pneumothorax": 0.242, "Consolidation": 0.504, "Edema": 0.319,
    "Emphysema": 0.308, "Fibrosis": 0.418, "Pleural_Thickening": 0.482, "Hernia": 0.238,
}
#: Per-finding signal gains (multiply the trace amplitude): strong, clearly learnable traces (the
#: visible positives), so that a small CNN learns in a few epochs; the calibrated invisible
#: fractions bring the well-trained centralized AUCs to the published NIH range. Capped at 1.8 (the
#: geometry of some traces, e.g. the effusion level, is only meaningful for amplitudes <= ~1.8).
FINDING_GAINS: dict[str, float] = {
    "Atelectasis": 1.8, "Cardiomegaly": 1.094, "Effusion": 0.944, "Infiltration": 0.926, "Mass": 1.072,
    "Nodule": 1.324, "Pneumonia": 0.88, "Pneumothorax": 1.8, "Consolidation": 0.88, "Edema": 0.782,
    "Emphysema": 0.64, "Fibrosis": 1.754, "Pleural_Thickening": 1.8, "Hernia": 1.8,
}
MAX_GAIN = 1.8

_MARKER_TEXT = """SYNTHETIC DATASET - NOT NIH ChestX-ray14.
Generated by bfdl_tff.data.synth (bfdl data synth). Images are schematic renderings whose findings
were drawn from the real NIH label statistics; they carry no clinical information.
Any result obtained on this directory is NOT an NIH ChestX-ray14 result.
"""


@functools.lru_cache(maxsize=1)
def load_label_stats() -> dict[str, Any]:
    """The real ChestX-ray14 statistics (copied from ``../shared/nih_cxr14``, see data_manifests)."""
    return json.loads(STATS_PATH.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


def enriched_prevalence(prevalence: np.ndarray, min_prevalence: float) -> np.ndarray:
    """Raise every finding's prevalence to ``min_prevalence`` and scale the others down so the sum
    (the mean number of findings per image) is unchanged."""
    p = np.asarray(prevalence, dtype=np.float64)
    if min_prevalence <= 0:
        return p.copy()
    low = p < min_prevalence
    excess = float(np.sum(min_prevalence - p[low]))
    rest = float(np.sum(p[~low]))
    if not low.any() or rest <= excess:
        raise DataError(f"min_prevalence={min_prevalence} is too large for the real label statistics")
    out = p.copy()
    out[low] = min_prevalence
    out[~low] *= (rest - excess) / rest
    return out


class LabelSampler:
    """Draws 14-finding label vectors with the real marginals (or enriched ones, see
    :func:`enriched_prevalence`), label-count histogram and approximately the real pairwise
    co-occurrence.

    Per image: the number of findings ``k`` is drawn from the real histogram; the first finding
    with probability proportional to ``w_j * p_j``, each further one proportional to
    ``w_j * mean_i P(j | i)`` over the findings ``i`` already drawn (real conditional
    co-occurrence). The weights ``w`` are calibrated by fixed-point iteration (fixed seed) so the
    marginals match the target prevalence.
    """

    def __init__(self, stats: dict[str, Any] | None = None, *, min_prevalence: float = 0.0,
                 calib_samples: int = 60000, iters: int = 12) -> None:
        stats = stats or load_label_stats()
        if list(stats["label_order"]) != list(FINDINGS):
            raise DataError(f"{STATS_PATH}: label_order differs from the CheXNet order")
        self.real_prevalence = np.array([stats["per_label_prevalence"][f] for f in FINDINGS], dtype=np.float64)
        self.prevalence = enriched_prevalence(self.real_prevalence, min_prevalence)
        counts = np.array([stats["per_label_count"][f] for f in FINDINGS], dtype=np.float64)
        co = np.zeros((NUM_FINDINGS, NUM_FINDINGS))
        for i, a in enumerate(FINDINGS):
            for j, b in enumerate(FINDINGS):
                if i != j:
                    co[i, j] = stats["cooccurrence_counts"][a].get(b, 0)
        self.cooccurrence = co
        self.cond = co / counts[:, None] + 1e-6  # P(j | i)
        np.fill_diagonal(self.cond, 0.0)
        hist = stats["labels_per_image_hist"]
        h = np.zeros(max(int(k) for k in hist) + 1)
        for k, v in hist.items():
            h[int(k)] = v
        self.k_probs = h / h.sum()
        self.w = np.ones(NUM_FINDINGS)
        rng = np.random.default_rng(20170101)
        for _ in range(iters):
            obs = self.sample(rng, calib_samples).mean(axis=0)
            self.w *= np.clip(self.prevalence / np.maximum(obs, 1e-6), 0.5, 2.0) ** 0.9

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        k = rng.choice(len(self.k_probs), size=n, p=self.k_probs)
        y = np.zeros((n, NUM_FINDINGS), dtype=np.int8)
        cond_sum = np.zeros((n, NUM_FINDINGS))
        for step in range(int(k.max(initial=0))):
            active = np.flatnonzero(k > step)
            if step == 0:
                score = np.broadcast_to(self.w * self.prevalence, (len(active), NUM_FINDINGS)).copy()
            else:
                score = self.w * cond_sum[active] / step
            score[y[active] == 1] = 0.0
            score += 1e-12 * (y[active] == 0)
            cum = np.cumsum(score, axis=1)
            u = rng.random(len(active)) * cum[:, -1]
            pick = np.minimum((cum < u[:, None]).sum(axis=1), NUM_FINDINGS - 1)
            y[active, pick] = 1
            cond_sum[active] += self.cond[pick]
        return y


@functools.lru_cache(maxsize=4)
def default_label_sampler(min_prevalence: float = 0.0) -> LabelSampler:
    return LabelSampler(min_prevalence=min_prevalence)


def _images_per_patient(rng: np.random.Generator, n_images: int) -> np.ndarray:
    hist = load_label_stats()["images_per_patient"]["hist_capped20"]
    ks = np.array([int(k) for k in hist])
    p = np.array([hist[k] for k in hist], dtype=np.float64)
    p /= p.sum()
    counts: list[int] = []
    total = 0
    while total < n_images:
        draw = rng.choice(ks, size=max(16, (n_images - total) // 2), p=p)
        for c in draw:
            c = int(min(c, n_images - total))
            counts.append(c)
            total += c
            if total >= n_images:
                break
    return np.array(counts, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Sites (acquisition differences)
# --------------------------------------------------------------------------------------------


def site_params(n_sites: int, *, site_shift: bool) -> list[dict[str, float]]:
    """Acquisition parameters per site (deterministic in the site index, not in the seed)."""
    base = dict(gain=1.0, offset=0.0, gamma=1.0, noise=0.03, gradient=0.0)
    fixed = [
        base,
        dict(gain=0.78, offset=0.10, gamma=1.30, noise=0.05, gradient=0.0),
        dict(gain=1.18, offset=-0.06, gamma=0.80, noise=0.02, gradient=0.10),
    ]
    out = []
    for s in range(n_sites):
        if not site_shift:
            out.append(dict(base))
        elif s < len(fixed):
            out.append(dict(fixed[s]))
        else:
            r = np.random.default_rng(7919 + s)
            out.append(dict(gain=float(r.uniform(0.75, 1.2)), offset=float(r.uniform(-0.06, 0.1)),
                            gamma=float(r.uniform(0.8, 1.3)), noise=float(r.uniform(0.015, 0.06)),
                            gradient=float(r.uniform(-0.1, 0.1))))
    return out


# --------------------------------------------------------------------------------------------
# Rendering: anatomy, one painter per finding, acquisition
# --------------------------------------------------------------------------------------------


def _soft(d: np.ndarray, width: float) -> np.ndarray:
    """Smooth step: 1 where d << 0, 0 where d >> 0."""
    return 0.5 * (1.0 - np.tanh(d / width))


def _ellipse(xx, yy, cx, cy, rx, ry):
    return np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)


def _col(v: Any) -> np.ndarray:
    return np.asarray(v, dtype=np.float32).reshape(-1, 1, 1)


@dataclass
class _Canvas:
    """A batch being rendered: images, masks, boxes and the anatomy the painters draw into."""

    y: np.ndarray
    size: int
    rng: np.random.Generator
    amp: dict[str, np.ndarray]  # finding -> [B,1,1] trace amplitude (0 where absent is irrelevant)
    xx: np.ndarray
    yy: np.ndarray
    img: np.ndarray
    masks: np.ndarray
    boxes: list[dict[str, tuple[float, float, float, float]]]
    lungs: list[np.ndarray] = field(default_factory=list)
    lung_geo: list[tuple[np.ndarray, ...]] = field(default_factory=list)
    heart_centre: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.zeros(0))
    ribs: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def edge(self) -> float:
        return 1.2 / self.size

    @property
    def lung(self) -> np.ndarray:
        return np.maximum(self.lungs[0], self.lungs[1])

    def u(self, lo: float, hi: float, n: int | None = None) -> np.ndarray:
        return _col(self.rng.uniform(lo, hi, len(self.y) if n is None else n))

    def idx_of(self, finding: str) -> np.ndarray:
        return np.flatnonzero(self.y[:, FINDINGS.index(finding)])

    def add(self, finding: str, idx: np.ndarray, feat: np.ndarray, weight: np.ndarray,
            support: np.ndarray | None = None) -> None:
        """Add a trace ``weight * feat`` to images ``idx``; record its mask and NIH box."""
        self.img[idx] += weight * feat
        if support is None:
            support = feat > 0.35 * feat.max(axis=(1, 2), keepdims=True).clip(1e-6)
        if finding in MASK_FINDINGS:
            self.masks[idx] |= support.astype(np.uint8)
        if finding in BBOX_FINDINGS:
            rows, cols = support.any(axis=2), support.any(axis=1)
            for k, i in enumerate(idx):
                r, c = np.flatnonzero(rows[k]), np.flatnonzero(cols[k])
                if len(r) and len(c):
                    self.boxes[i][finding] = (float(c[0]), float(r[0]), float(c[-1] - c[0] + 1), float(r[-1] - r[0] + 1))

    def lesion_centre(self, idx: np.ndarray, spread_x: float = 0.55, spread_y: float = 0.6, low: bool = False):
        n = len(idx)
        side = self.rng.integers(0, 2, n)
        geo = [np.where(side == 0, self.lung_geo[0][j][idx, 0, 0], self.lung_geo[1][j][idx, 0, 0]) for j in range(4)]
        cx, cy, rx, ry = geo
        ox = self.rng.uniform(-spread_x, spread_x, n) * rx
        oy = (self.rng.uniform(0.1, spread_y, n) if low else self.rng.uniform(-spread_y, spread_y, n)) * ry
        return _col(cx + ox), _col(cy + oy), _col(rx), _col(ry), side


def _draw_anatomy(c: _Canvas) -> None:
    """Torso, lungs (Emphysema: larger, darker lungs, flat low diaphragm), ribs, heart
    (Cardiomegaly: enlarged), diaphragm."""
    xx, yy, y = c.xx, c.yy, c.y
    dx, dy = c.u(-0.025, 0.025), c.u(-0.02, 0.02)
    emph = _col(y[:, FINDINGS.index("Emphysema")]) * c.amp["Emphysema"]
    c.img += 0.42 * _soft(_ellipse(xx, yy, 0.5 + dx, 0.58 + dy, c.u(0.44, 0.48), 0.55) - 1.0, 0.04)
    emph_scale = 1.0 + emph * 0.13
    for side in (-1, 1):
        cx = 0.5 + side * c.u(0.165, 0.185) + dx
        cy = c.u(0.44, 0.47) + dy
        rx = c.u(0.12, 0.135) * emph_scale
        ry = c.u(0.25, 0.28) * emph_scale
        c.lungs.append(_soft(_ellipse(xx, yy, cx, cy, rx, ry) - 1.0, c.edge / rx + 0.03))
        c.lung_geo.append((cx, cy, rx, ry))
    lung = c.lung
    c.img -= lung * (0.30 + emph * 0.10)
    c.ribs = 0.5 + 0.5 * np.sin(2 * np.pi * (7.0 * yy + 1.2 * np.abs(xx - 0.5)) + c.u(0, 2 * np.pi))
    c.img += 0.05 * c.ribs * lung
    cardio = _col(y[:, FINDINGS.index("Cardiomegaly")]) * c.amp["Cardiomegaly"]
    heart_scale = c.u(0.92, 1.06) + 0.42 * cardio
    hcx, hcy = 0.545 + dx, 0.64 + dy
    c.heart_centre = (hcx, hcy)
    c.img += 0.30 * _soft(_ellipse(xx, yy, hcx, hcy, 0.125 * heart_scale, 0.09 * (0.6 + 0.4 * heart_scale)) - 1.0, 0.05)
    dia = 0.78 + dy + 0.04 * emph - 0.05 * np.cos(np.pi * (xx - 0.5) * 2.0)
    c.img += 0.18 * _soft(dia - yy, 0.015)


def _atelectasis(c: _Canvas, i: np.ndarray, a: np.ndarray) -> None:
    """Horizontal plate-like band in a lower lung zone."""
    cx, cy, *_ = c.lesion_centre(i, 0.3, 0.55, low=True)
    band = np.exp(-((c.yy - cy) / 0.018) ** 2) * _soft(np.abs(c.xx - cx) - 0.09, 0.01)
    c.add("Atelectasis", i, band * c.lung[i], 0.195 * a)


def _effusion(c: _Canvas, i: np.ndarray, a: np.ndarray) -> None:
    """Fluid fills the lung base with a lateral meniscus (blunted costophrenic angle)."""
    feat = np.zeros((len(i), c.size, c.size), dtype=np.float32)
    both = c.rng.random(len(i)) < 0.3
    first = c.rng.integers(0, 2, len(i))
    for side in (0, 1):
        cx, cy, rx, ry = (v[i] for v in c.lung_geo[side])
        level = cy + ry * (0.95 - 0.55 * np.minimum(a, 1.6))
        menis = level - 0.07 * np.clip((c.xx - cx) * (1 if side == 1 else -1) / rx, 0, 1)
        feat += _col((first == side) | both) * _soft(menis - c.yy, 0.012) * c.lungs[side][i]
    c.add("Effusion", i, feat, 0.255 * a)


def _infiltration(c: _Canvas, i: np.ndarray, a: np.ndarray) -> None:
    """Several faint patchy blobs."""
    feat = np.zeros((len(i), c.size, c.size), dtype=np.float32)
    for _ in range(4):
        cx, cy, *_ = c.lesion_centre(i, 0.7, 0.7)
        feat += np.exp(-(((c.xx - cx) ** 2 + (c.yy - cy) ** 2) / (2 * 0.035 ** 2)))
    c.add("Infiltration", i, np.clip(feat, 0, 1) * c.lung[i], 0.135 * a)


def _mass(c: _Canvas, i: np.ndarray, a: np.ndarray) -> None:
    """One large, sharp round opacity."""
    cx, cy, *_ = c.lesion_centre(i, 0.5, 0.55)
    rad = _col(c.rng.uniform(0.055, 0.08, len(i)))
    c.add("Mass", i, _soft(np.sqrt((c.xx - cx) ** 2 + (c.yy - cy) ** 2) - rad, c.edge), 0.27 * a)


def _nodule(c: _Canvas, i: np.ndarray, a: np.ndarray) -> None:
    """Two small round opacities."""
    feat = np.zeros((len(i), c.size, c.size), dtype=np.float32)
    for _ in range(2):
        cx, cy, *_ = c.lesion_centre(i, 0.6, 0.65)
        rad = _col(c.rng.uniform(0.022, 0.032, len(i)))
        feat = np.maximum(feat, _soft(np.sqrt((c.xx - cx) ** 2 + (c.yy - cy) ** 2) - rad, c.edge))
    c.add("Nodule", i, feat, 0.285 * a)


def _pneumonia(c: _Canvas, i: np.ndarray, a: np.ndarray) -> None:
    """Fuzzy lower-zone opacity."""
    cx, cy, *_ = c.lesion_centre(i, 0.4, 0.6, low=True)
    blob = np.exp(-(((c.xx - cx) ** 2 + (c.yy - cy) ** 2) / (2 * 0.06 ** 2)))
    c.add("Pneumonia", i, blob * c.lung[i], 0.225 * a)


def _pneumothorax(c: _Canvas, i: np.ndarray, a: np.ndarray) -> None:
    """The lung collapses towards the hilum, leaving a dark rim without markings and a thin
    bright visceral pleural line."""
    side = c.rng.integers(0, 2, len(i))
    shape = (len(i), c.size, c.size)
    feat, line, support = np.zeros(shape, np.float32), np.zeros(shape, np.float32), np.zeros(shape, bool)
    shrink = 1.0 - 0.30 * np.minimum(a, 1.6)
    for sd in (0, 1):
        cx, cy, rx, ry = (v[i] for v in c.lung_geo[sd])
        on = _col(side == sd)
        medial = (1.0 if sd == 0 else -1.0) * 0.9 * rx * (1 - shrink)
        inner = _ellipse(c.xx, c.yy, cx + medial, cy + 0.8 * ry * (1 - shrink), rx * shrink, ry * shrink)
        rim = c.lungs[sd][i] * (1.0 - _soft(inner - 1.0, 0.03))
        feat += on * rim
        line += on * np.exp(-((inner - 1.0) / 0.05) ** 2) * c.lungs[sd][i]
        support |= (on * rim) > 0.5
    c.img[i] -= 0.10 * a * feat + 0.05 * c.ribs[0] * feat
    c.add("Pneumothorax", i, line, 0.09 * a, support=support)


def _consolidation(c: _Canvas, i: np.ndarray, a: np.ndarray) -> None:
    """Dense homogeneous ellipse."""
    cx, cy, *_ = c.lesion_centre(i, 0.45, 0.55)
    r = _ellipse(c.xx, c.yy, cx, cy, _col(c.rng.uniform(0.06, 0.09, len(i))), _col(c.rng.uniform(0.07, 0.11, len(i))))
    c.add("Consolidation", i, _soft(r - 1.0, 0.12) * c.lung[i], 0.225 * a)


def _edema(c: _Canvas, i: np.ndarray, a: np.ndarray) -> None:
    """Bilateral perihilar haze ("bat wing")."""
    feat = np.zeros((len(i), c.size, c.size), dtype=np.float32)
    for sd in (0, 1):
        cx, cy, rx, ry = (v[i] for v in c.lung_geo[sd])
        hx = cx + (0.45 if sd == 0 else -0.45) * rx
        feat += np.exp(-(((c.xx - hx) / 0.09) ** 2 + ((c.yy - cy) / 0.14) ** 2) / 2) * c.lungs[sd][i]
    c.add("Edema", i, feat, 0.165 * a)


def _fibrosis(c: _Canvas, i: np.ndarray, a: np.ndarray) -> None:
    """Reticular pattern in the upper lung zones."""
    ph = c.u(0, 2 * np.pi, len(i))
    ret = np.clip(np.sin(2 * np.pi * 11 * c.xx + ph) * np.sin(2 * np.pi * 11 * c.yy + ph), 0, 1)
    upper = _soft(c.yy - _col([0.46]), 0.06)
    c.add("Fibrosis", i, ret * upper * c.lung[i], 0.21 * a)


def _pleural_thickening(c: _Canvas, i: np.ndarray, a: np.ndarray) -> None:
    """Bright rim along the lateral border of one lung."""
    side = c.rng.integers(0, 2, len(i))
    feat = np.zeros((len(i), c.size, c.size), dtype=np.float32)
    for sd in (0, 1):
        cx, cy, rx, ry = (v[i] for v in c.lung_geo[sd])
        lateral = (c.xx < cx) if sd == 0 else (c.xx > cx)
        feat += _col(side == sd) * np.exp(-((_ellipse(c.xx, c.yy, cx, cy, rx, ry) - 0.95) / 0.07) ** 2) * lateral
    c.add("Pleural_Thickening", i, feat, 0.195 * a)


def _hernia(c: _Canvas, i: np.ndarray, a: np.ndarray) -> None:
    """Retrocardiac round structure with an air bubble."""
    hcx, hcy = c.heart_centre
    cx, cy = hcx[i] + _col(c.rng.uniform(-0.03, 0.03, len(i))), hcy[i] + 0.04
    d = np.sqrt((c.xx - cx) ** 2 + (c.yy - cy) ** 2)
    ring = _soft(d - 0.065, c.edge) - 0.8 * _soft(d - 0.03, c.edge)
    c.add("Hernia", i, ring, 0.26 * a, support=d < 0.065)


#: Painters of the findings drawn on top of the anatomy (Cardiomegaly and Emphysema are part of
#: the anatomy). Base weights are the v2 weights times its trace scale 0.75.
PAINTERS: dict[str, Callable[[_Canvas, np.ndarray, np.ndarray], None]] = {
    "Atelectasis": _atelectasis, "Effusion": _effusion, "Infiltration": _infiltration, "Mass": _mass,
    "Nodule": _nodule, "Pneumonia": _pneumonia, "Pneumothorax": _pneumothorax, "Consolidation": _consolidation,
    "Edema": _edema, "Fibrosis": _fibrosis, "Pleural_Thickening": _pleural_thickening, "Hernia": _hernia,
}


def _amplitudes(rng: np.random.Generator, b: int, *, signal: float, gains: dict[str, float],
                invisible_fraction: float | dict[str, float]) -> dict[str, np.ndarray]:
    amp = rng.uniform(0.45, 1.0, (b, NUM_FINDINGS)).astype(np.float32)
    inv = invisible_fraction
    f = np.array([inv.get(k, INVISIBLE_FRACTION) if isinstance(inv, dict) else inv for k in FINDINGS], np.float32)
    amp[rng.random((b, NUM_FINDINGS)) < f] = 0.08  # nearly invisible trace: label noise
    g = np.array([min(MAX_GAIN, signal * gains.get(f, 1.0)) for f in FINDINGS], dtype=np.float32)
    amp *= g
    return {f: _col(amp[:, i]) for i, f in enumerate(FINDINGS)}


def _acquire(img: np.ndarray, sites: np.ndarray, params: list[dict[str, float]], c: _Canvas) -> np.ndarray:
    """Per-site gain / gamma / offset / gradient / noise, per-image exposure jitter -> uint8."""
    gain = _col([params[k]["gain"] for k in sites]) * c.u(0.95, 1.05)
    gamma = _col([params[k]["gamma"] for k in sites])
    off = _col([params[k]["offset"] for k in sites]) + c.u(-0.03, 0.03)
    grad = _col([params[k]["gradient"] for k in sites])
    noise = _col([params[k]["noise"] for k in sites])
    img = np.clip(img, 0.0, 1.0) ** gamma * gain + off + grad * (c.yy - 0.5)
    img += c.rng.standard_normal(img.shape, dtype=np.float32) * noise
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def render_batch(y: np.ndarray, sites: np.ndarray, size: int, rng: np.random.Generator,
                 params: list[dict[str, float]], *, signal: float = 1.0, gains: dict[str, float] | None = None,
                 invisible_fraction: float | dict[str, float] | None = None,
                 ) -> tuple[np.ndarray, np.ndarray, list[dict[str, tuple[float, float, float, float]]]]:
    """Render a batch: returns uint8 images [B,S,S], uint8 masks [B,S,S] (0/1) and per image a
    dict finding -> bbox (x, y, w, h) in pixels for the NIH box findings."""
    b = len(y)
    g = (np.arange(size, dtype=np.float32) + 0.5) / size
    amp = _amplitudes(rng, b, signal=signal, gains=FINDING_GAINS if gains is None else gains,
                      invisible_fraction=INVISIBLE_FRACTIONS if invisible_fraction is None else invisible_fraction)
    c = _Canvas(y=y, size=size, rng=rng, amp=amp, xx=g[None, None, :], yy=g[None, :, None],
                img=np.full((b, size, size), 0.10, dtype=np.float32),
                masks=np.zeros((b, size, size), dtype=np.uint8), boxes=[dict() for _ in range(b)])
    _draw_anatomy(c)
    for finding, paint in PAINTERS.items():
        i = c.idx_of(finding)
        if len(i):
            paint(c, i, amp[finding][i])
    return _acquire(c.img, sites, params, c), c.masks, c.boxes


def _png_bytes(arr: np.ndarray, *, rgba: bool = False) -> bytes:
    from PIL import Image

    if rgba:
        im = Image.fromarray(np.stack([arr, arr, arr, np.full_like(arr, 255)], axis=-1), mode="RGBA")
    else:
        im = Image.fromarray(arr, mode="L")
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# Cohort (patients, labels, demographics) and the public entry points
# --------------------------------------------------------------------------------------------


@dataclass
class Cohort:
    """Who is in the synthetic dataset: per image its patient, follow-up number, site, labels."""

    y: np.ndarray  # int8 [N, 14]
    pat_of_img: np.ndarray  # [N] index into patient_ids
    follow: np.ndarray  # [N] follow-up number
    patient_ids: np.ndarray  # [P]
    pat_sites: np.ndarray  # [P]

    @property
    def sites(self) -> np.ndarray:
        return self.pat_sites[self.pat_of_img]

    @property
    def names(self) -> list[str]:
        return [f"{self.patient_ids[p]:08d}_{f:03d}.png" for p, f in zip(self.pat_of_img, self.follow)]


def draw_cohort(rng: np.random.Generator, n_images: int, *, n_sites: int, min_prevalence: float = 0.0) -> Cohort:
    sampler = default_label_sampler(float(min_prevalence))
    per_patient = _images_per_patient(rng, n_images)
    n_pat = len(per_patient)
    pat_sites = rng.integers(0, n_sites, n_pat)
    base = sampler.sample(rng, n_pat)
    fresh = sampler.sample(rng, n_images)
    pat_of_img = np.repeat(np.arange(n_pat), per_patient)
    follow = np.concatenate([np.arange(c) for c in per_patient])
    repeat = rng.random(n_images) < 0.5
    y = np.where(repeat[:, None], base[pat_of_img], fresh)
    return Cohort(y=y, pat_of_img=pat_of_img, follow=follow, patient_ids=np.arange(1, n_pat + 1), pat_sites=pat_sites)


def _check_args(out_dir: Any, n_images: int, size: int, n_sites: int, layout: str, signal: float,
                min_prevalence: float) -> None:
    if n_images < 1:
        raise DataError(f"{out_dir}: n_images must be >= 1, got {n_images}")
    if not 8 <= size <= 1024:
        raise DataError(f"{out_dir}: size must be in 8..1024, got {size}")
    if n_sites < 1:
        raise DataError(f"{out_dir}: n_sites must be >= 1, got {n_sites}")
    if layout not in ("2017", "v2020"):
        raise DataError(f"{out_dir}: layout must be '2017' or 'v2020', got {layout!r}")
    if not 0.0 < signal <= 5.0:
        raise DataError(f"{out_dir}: signal must be in (0, 5], got {signal}")
    if not 0.0 <= min_prevalence <= 0.05:
        raise DataError(f"{out_dir}: min_prevalence must be in [0, 0.05], got {min_prevalence}")


def _rng_for(seed: int, n_images: int, size: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, n_images, size, 0x5EED]))


def generate_arrays(n_images: int, *, size: int, seed: int, n_sites: int = 3, site_shift: bool = True,
                    signal: float = 1.0, min_prevalence: float = 0.0, gains: dict[str, float] | None = None,
                    invisible_fraction: float | dict[str, float] | None = None) -> tuple[np.ndarray, Cohort]:
    """In-memory images (uint8 [N,S,S]) and cohort, without writing files (calibration sweeps).

    Not byte-identical to :func:`synthesize` (which also draws demographics between the cohort and
    the images), but the same generative model."""
    _check_args("<memory>", n_images, size, n_sites, "2017", signal, min_prevalence)
    rng = _rng_for(seed, n_images, size)
    cohort = draw_cohort(rng, n_images, n_sites=n_sites, min_prevalence=min_prevalence)
    params = site_params(n_sites, site_shift=site_shift)
    chunk = max(8, (1 << 20) // (size * size))
    out = np.zeros((n_images, size, size), dtype=np.uint8)
    sites = cohort.sites
    for start in range(0, n_images, chunk):
        sl = slice(start, min(start + chunk, n_images))
        out[sl] = render_batch(cohort.y[sl], sites[sl], size, rng, params, signal=signal, gains=gains,
                               invisible_fraction=invisible_fraction)[0]
    return out, cohort


def _data_entry_lines(cohort: Cohort, names: list[str], rng: np.random.Generator, *, size: int, layout: str) -> list[str]:
    demo = load_label_stats()["demographics_partial_40000rows"]
    n_pat, n_images = len(cohort.patient_ids), len(names)
    age0 = np.clip(rng.normal(demo["age_mean"], demo["age_sd"], n_pat), 1, 94).astype(int)
    p_m = demo["gender"]["M"] / (demo["gender"]["M"] + demo["gender"]["F"])
    gender = np.where(rng.random(n_pat) < p_m, "M", "F")
    p_pa = demo["view"]["PA"] / (demo["view"]["PA"] + demo["view"]["AP"])
    view = np.where(rng.random(n_images) < p_pa, "PA", "AP")
    spacing = round(0.143 * 1024 / size, 6)
    trail = "," if layout == "2017" else ""
    lines = [DATA_ENTRY_HEADER_2017 if layout == "2017" else DATA_ENTRY_HEADER_V2020]
    for j, name in enumerate(names):
        p, f = cohort.pat_of_img[j], cohort.follow[j]
        lines.append(
            f"{name},{format_finding_labels(cohort.y[j])},{f},{cohort.patient_ids[p]},{age0[p] + f // 4},"
            f"{gender[p]},{view[j]},{size},{size},{spacing},{spacing}{trail}"
        )
    return lines


def _write_images(out: Path, cohort: Cohort, names: list[str], rng: np.random.Generator, *, size: int,
                  params: list[dict[str, float]], rgba: np.ndarray, write_masks: bool, signal: float,
                  ) -> tuple[list[str], int]:
    """Render and write every image (and mask); return the NIH box lines and the mask pixel count."""
    chunk = max(8, (1 << 20) // (size * size))
    bbox_lines = [BBOX_HEADER]
    mask_pixels = 0
    sites = cohort.sites
    for start in range(0, len(names), chunk):
        sl = slice(start, min(start + chunk, len(names)))
        imgs, masks, boxes = render_batch(cohort.y[sl], sites[sl], size, rng, params, signal=signal)
        for k in range(imgs.shape[0]):
            j = start + k
            (out / "images" / names[j]).write_bytes(_png_bytes(imgs[k], rgba=bool(rgba[j])))
            if write_masks:
                (out / "masks" / names[j]).write_bytes(_png_bytes(masks[k] * np.uint8(255)))
            for f in BBOX_FINDINGS:
                if f in boxes[k]:
                    bx = boxes[k][f]
                    label = "Infiltrate" if f == "Infiltration" else f
                    bbox_lines.append(f"{names[j]},{label},{bx[0]:.1f},{bx[1]:.1f},{bx[2]:.1f},{bx[3]:.1f}")
        mask_pixels += int(masks.sum())
    return bbox_lines, mask_pixels


def synthesize(
    out_dir: str | os.PathLike[str],
    *,
    n_images: int,
    size: int,
    seed: int,
    n_sites: int = 3,
    site_shift: bool = True,
    layout: str = "2017",
    rgba_fraction: float = 0.01,
    write_masks: bool = True,
    overwrite: bool = False,
    signal: float = 1.0,
    min_prevalence: float = 0.0,
) -> dict[str, Any]:
    """Write a synthetic dataset in the NIH layout into ``out_dir`` (see the module docstring).

    Deterministic in ``(n_images, size, seed, n_sites, site_shift, layout, signal,
    min_prevalence)``. Returns the ``synth_info.json`` content."""
    _check_args(out_dir, n_images, size, n_sites, layout, signal, min_prevalence)
    out = Path(out_dir)
    if (out / "Data_Entry_2017.csv").exists() and not overwrite:
        raise DataError(f"{out / 'Data_Entry_2017.csv'}: a dataset already exists here (pass overwrite)")
    t0 = time.perf_counter()
    (out / "images").mkdir(parents=True, exist_ok=True)
    if write_masks:
        (out / "masks").mkdir(exist_ok=True)
    for name in (MARKER, INFO):
        (out / name).unlink(missing_ok=True)

    rng = _rng_for(seed, n_images, size)
    cohort = draw_cohort(rng, n_images, n_sites=n_sites, min_prevalence=min_prevalence)
    names = cohort.names
    entry_lines = _data_entry_lines(cohort, names, rng, size=size, layout=layout)
    params = site_params(n_sites, site_shift=site_shift)
    rgba = rng.random(n_images) < rgba_fraction
    bbox_lines, mask_pixels = _write_images(out, cohort, names, rng, size=size, params=params, rgba=rgba,
                                            write_masks=write_masks, signal=signal)
    atomic_write_text(out / "Data_Entry_2017.csv", "\n".join(entry_lines) + "\n")
    atomic_write_text(out / "BBox_List_2017.csv", "\n".join(bbox_lines) + "\n")
    atomic_write_text(out / SITES_FILE, "Patient ID,Site\n" + "".join(
        f"{pid},{s}\n" for pid, s in zip(cohort.patient_ids, cohort.pat_sites)))
    sites = cohort.sites
    info = {
        "generator": "bfdl_tff.data.synth",
        "generator_version": GENERATOR_VERSION,
        "synthetic": True,
        "not_nih": "results on this dataset are not NIH ChestX-ray14 results",
        "n_images": int(n_images),
        "n_patients": int(len(cohort.patient_ids)),
        "size": int(size),
        "seed": int(seed),
        "n_sites": int(n_sites),
        "site_shift": bool(site_shift),
        "layout": layout,
        "signal": float(signal),
        "finding_gains": {f: float(FINDING_GAINS[f]) for f in FINDINGS},
        "invisible_fractions": {f: float(INVISIBLE_FRACTIONS[f]) for f in FINDINGS},
        "min_prevalence": float(min_prevalence),
        "site_params": params,
        "per_label_count": {f: int(c) for f, c in zip(FINDINGS, cohort.y.sum(axis=0))},
        "no_finding_count": int((cohort.y.sum(axis=1) == 0).sum()),
        "images_per_site": {str(s): int((sites == s).sum()) for s in range(n_sites)},
        "bbox_rows": len(bbox_lines) - 1,
        "rgba_images": int(rgba.sum()),
        "masks": bool(write_masks),
        "mask_pixel_fraction": mask_pixels / float(n_images * size * size),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    atomic_write_text(out / MARKER, _MARKER_TEXT)
    atomic_write_json(out / INFO, info)
    return info


def is_complete(root: str | os.PathLike[str]) -> bool:
    """True when ``root`` holds a finished synthetic dataset (info file written last)."""
    return (Path(root) / INFO).is_file() and (Path(root) / MARKER).is_file()
