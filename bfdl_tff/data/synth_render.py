"""Rendering of the synthetic chest films (used by :mod:`bfdl_tff.data.synth`): anatomy, one painter
per finding, the per-site acquisition, and the calibrated trace constants (per-finding gains and
invisible fractions; calibration in docs/sweeps.md). Results on this data are not NIH results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from bfdl_tff.data.labels import FINDINGS, NUM_FINDINGS

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
