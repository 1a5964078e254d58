"""How each synthetic cell class looks: colours, nucleus shapes and the drawing of one cell on its own canvas."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from types import MappingProxyType
from typing import cast

import numpy as np
from scipy import ndimage

_Rng = np.random.Generator
RGB = tuple[float, float, float]  # transmittance of a full-thickness layer, 0-1 per channel

_NUCLEOLUS: RGB = (0.66, 0.66, 0.86)
_GRANULE: RGB = (0.76, 0.58, 0.78)
_NUC_DENSE: RGB = (0.30, 0.17, 0.38)  # pyknotic erythroid / lymphoid chromatin
_NUC_MYELOID: RGB = (0.40, 0.26, 0.52)
_ERY_BLUE, _ERY_PINK = (0.60, 0.64, 0.86), (0.86, 0.68, 0.74)  # basophilic -> orthochromatic cytoplasm


@dataclass(frozen=True)
class _Look:
    """Colours and texture of one cell."""

    cyto: RGB
    nuc: RGB
    clump: float = 0.3  # chromatin contrast: high for clumped, low for a blast's fine chromatin
    grain: float = 1.3  # chromatin texture scale, px
    granules: float = 0.0  # granules per cytoplasm pixel
    nucleoli: int = 0


@dataclass(frozen=True)
class Drawn:
    """One cell rendered on a local (S, S) canvas whose centre pixel is the cell centre."""

    cyto_alpha: np.ndarray  # (S, S) float32, 0-1
    cyto_od: np.ndarray  # (S, S, 3) float32
    nuc_alpha: np.ndarray  # (S, S) float32, 0-1
    nuc_od: np.ndarray  # (S, S, 3) float32
    nucleus: np.ndarray  # (S, S) bool
    radius: float  # px from the centre to the farthest pixel of the cell

    @property
    def half(self) -> int:
        """Index of the centre pixel along each axis."""
        return self.nucleus.shape[0] // 2


_GRANULAR = _Look((0.90, 0.80, 0.87), _NUC_MYELOID, 0.35, 1.3, granules=0.12)  # neutrophil lilac
_HYPOGRANULAR = _Look((0.94, 0.89, 0.92), _NUC_MYELOID, 0.35, 1.3, granules=0.012)
_MEGA = _Look((0.86, 0.75, 0.87), _NUC_MYELOID, 0.35, 1.4, granules=0.38)  # crowded azurophil granules


def to_od(rgb: RGB) -> np.ndarray:
    """Optical density (3,) of a transmittance colour."""
    return -np.log(np.asarray(rgb, dtype=np.float32))


def _erythroid(rng: _Rng, nuc: RGB = _NUC_DENSE, clump: float = 0.3, grain: float = 1.2) -> _Look:
    """Erythroid look, cytoplasm anywhere from basophilic blue to orthochromatic pink."""
    t = rng.uniform()
    return _Look(cast(RGB, tuple(float(b + (p - b) * t) for b, p in zip(_ERY_BLUE, _ERY_PINK))), nuc, clump, grain)


def grid(radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Local coordinates (S, 1) and (1, S) centred on 0, with a margin around radius."""
    half = math.ceil(radius) + 3
    ax = np.arange(-half, half + 1, dtype=np.float32)
    return ax[:, None], ax[None, :]


def offset(rng: _Rng, dist: float) -> tuple[float, float]:
    """A (y, x) displacement of length dist in a random direction."""
    ang = rng.uniform(0, 2 * math.pi)
    return dist * math.sin(ang), dist * math.cos(ang)


def blob(rng: _Rng, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float,
         elong: float = 0.1, rough: float = 0.04) -> np.ndarray:
    """Signed distance (px, negative inside) to a rotated, slightly wobbly ellipse."""
    a, ang = 1.0 + rng.uniform(-elong, elong), rng.uniform(0.0, math.pi)
    c, s = math.cos(ang), math.sin(ang)
    u = ((xx - cx) * c + (yy - cy) * s) / a
    v = (-(xx - cx) * s + (yy - cy) * c) * a
    rho = np.hypot(u, v) + 1e-6
    c1, s1 = u / rho, v / rho  # cos and sin of the polar angle; arctan2 + cos would be 2x slower
    c2, s2 = c1 * c1 - s1 * s1, 2 * c1 * s1
    c3, s3 = c1 * c2 - s1 * s2, s1 * c2 + c1 * s2
    k2, k3 = rng.uniform(-rough, rough, 2)
    p2, p3 = rng.uniform(0.0, 2 * math.pi, 2)
    wobble = k2 * (c2 * math.cos(p2) - s2 * math.sin(p2)) + k3 * (c3 * math.cos(p3) - s3 * math.sin(p3))
    return rho - r * (1 + wobble)


def _capsule(yy: np.ndarray, xx: np.ndarray, p: np.ndarray, q: np.ndarray, r: float) -> np.ndarray:
    """Signed distance to the segment p-q (each (y, x)) thickened by r: a chromatin strand."""
    d = q - p
    t = np.clip(((yy - p[0]) * d[0] + (xx - p[1]) * d[1]) / max(float(d @ d), 1e-6), 0.0, 1.0)
    return np.hypot(yy - p[0] - t * d[0], xx - p[1] - t * d[1]) - r


def _noise(rng: _Rng, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Smooth zero-mean, unit-std noise field."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    return n / (n.std() + 1e-6)


def _arc(rng: _Rng, n: int, step: float, rho: float | None = None) -> np.ndarray:
    """(n, 2) centres step px apart along a circle of radius rho; a closed ring when rho is None."""
    rho = step / (2 * math.sin(math.pi / n)) if rho is None else rho
    turn = 2 * math.asin(min(1.0, step / (2 * rho)))
    ang = rng.uniform(0, 2 * math.pi) + (np.arange(n) - (n - 1) / 2) * turn
    return rho * np.stack([np.sin(ang), np.cos(ang)], axis=1)


def _lobes(rng: _Rng, yy: np.ndarray, xx: np.ndarray, centres: np.ndarray, r: float,
           strand: float = 0.0, elong: float = 0.2) -> np.ndarray:
    """Union of lobes at centres, consecutive ones joined by strands of radius strand if > 0."""
    parts = [blob(rng, yy, xx, cy, cx, r * rng.uniform(0.85, 1.1), elong, 0.05) for cy, cx in centres]
    if strand > 0:
        parts += [_capsule(yy, xx, p, q, strand) for p, q in pairwise(centres)]
    return np.minimum.reduce(parts)


def _granules(rng: _Rng, cyto_sd: np.ndarray, density: float) -> np.ndarray:
    """(S, S, 3) OD of fine granules scattered over the cytoplasm."""
    inside = np.flatnonzero(cyto_sd < -1)
    dots = np.zeros(cyto_sd.size, np.float32)
    np.add.at(dots, rng.choice(inside, int(density * inside.size)), 1.0)
    return np.clip(ndimage.gaussian_filter(dots.reshape(cyto_sd.shape), 0.6) * 2.0, 0, 1)[..., None] * to_od(_GRANULE)


def _paint(rng: _Rng, cyto_sd: np.ndarray, nuc_sd: np.ndarray, look: _Look) -> Drawn:
    """Render cytoplasm and nucleus signed-distance fields (S, S) into textured OD layers."""
    shape, half = nuc_sd.shape, nuc_sd.shape[0] // 2
    cyto_od = to_od(look.cyto) * (1 + 0.08 * _noise(rng, shape, 3.0))[..., None]  # (S, S, 3)
    if look.granules > 0:
        cyto_od = cyto_od + _granules(rng, cyto_sd, look.granules)
    nuc_od = to_od(look.nuc) * np.clip(1 + look.clump * _noise(rng, shape, look.grain), 0.35, None)[..., None]
    core, yy, xx = np.flatnonzero(nuc_sd < -3), *grid(half - 3)
    for centre in rng.choice(core, min(look.nucleoli, core.size), replace=False):
        cy, cx = np.unravel_index(centre, shape)
        w = 0.85 * np.exp(-((yy + half - cy) ** 2 + (xx + half - cx) ** 2) / (2 * (0.14 * nuc_sd.min()) ** 2 + 1))
        nuc_od = nuc_od * (1 - w[..., None]) + w[..., None] * to_od(_NUCLEOLUS)
    cyto_alpha, nucleus = np.clip(0.5 - cyto_sd / 1.5, 0, 1).astype(np.float32), nuc_sd <= 0
    ys, xs = np.nonzero((cyto_alpha > 0.5) | nucleus)
    radius = float(np.sqrt(((ys - half) ** 2 + (xs - half) ** 2).max()))
    nuc_alpha = np.clip(0.5 - nuc_sd, 0, 1).astype(np.float32)
    return Drawn(cyto_alpha, cyto_od.astype(np.float32), nuc_alpha, nuc_od.astype(np.float32), nucleus, radius)


def _cell(rng: _Rng, radius: float, look: _Look, nucleus: Callable[[np.ndarray, np.ndarray], np.ndarray],
          rough: float = 0.04) -> Drawn:
    """Draw a round cell of this radius around a nucleus given as a signed-distance function."""
    yy, xx = grid(radius)
    return _paint(rng, blob(rng, yy, xx, 0.0, 0.0, radius, 0.08, rough), nucleus(yy, xx), look)


def _round(rng: _Rng, rn: float, radius: float, look: _Look, shift: float = 0.4, elong: float = 0.08) -> Drawn:
    """A cell with one roundish nucleus of radius rn, off-centre by up to shift of the rim width."""
    oy, ox = offset(rng, (radius - rn) * rng.uniform(0, shift))
    return _cell(rng, radius, look, lambda yy, xx: blob(rng, yy, xx, oy, ox, rn, elong, 0.03))


def _draw_en(rng: _Rng, d: float) -> Drawn:
    """Normoblast: small round dense nucleus, blue-to-pink cytoplasm rim."""
    rn = d / 2 * rng.uniform(0.75, 0.92)
    return _round(rng, rn, rn * rng.uniform(1.4, 1.75), _erythroid(rng))


def _draw_ed(rng: _Rng, d: float) -> Drawn:
    """Dysplastic erythroid: nuclear budding, bi/multinuclearity or megaloblastic change."""
    kind = rng.choice(["budding", "multinuclear", "megaloblastic"])
    if kind == "megaloblastic":  # bigger cell and nucleus, open stippled chromatin
        rn = d / 2 * rng.uniform(1.15, 1.4)
        return _round(rng, rn, rn * rng.uniform(1.55, 1.85), _erythroid(rng, (0.44, 0.32, 0.56), 0.45, 0.8))
    if kind == "budding":  # a small bud on a narrow neck
        rn = d / 2 * rng.uniform(0.78, 0.92)
        rb = rn * rng.uniform(0.3, 0.42)
        bud = np.array(offset(rng, rn + rb * rng.uniform(0.9, 1.4)))
        radius = max(rn * rng.uniform(1.45, 1.75), rn + 2.6 * rb + 2)
        return _cell(rng, radius, _erythroid(rng), lambda yy, xx: np.minimum.reduce([
            blob(rng, yy, xx, 0.0, 0.0, rn, 0.06, 0.02), blob(rng, yy, xx, *bud, rb, 0.1, 0.02),
            _capsule(yy, xx, np.zeros(2), bud, max(0.8, 0.45 * rb))]))
    n = int(rng.choice([2, 2, 3, 4]))
    r = d / 2 * rng.uniform(0.62, 0.75) * (1.0 if n == 2 else 0.85)
    centres = _arc(rng, n, 2 * r + rng.uniform(0.08, 0.2) * d)
    radius = float(np.hypot(*centres.T).max()) + r * rng.uniform(1.4, 1.8)
    return _cell(rng, radius, _erythroid(rng), lambda yy, xx: _lobes(rng, yy, xx, centres, r, elong=0.06))


def _segmented(rng: _Rng, d: float, radius: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Signed-distance function of a 3-4 lobed neutrophil nucleus, lobes on thin strands round a C."""
    r = d * rng.uniform(0.21, 0.25)
    rho = (0.78 * radius - r) * rng.uniform(0.8, 1.0)
    centres = _arc(rng, int(rng.integers(3, 5)), 2 * r + d * rng.uniform(0.12, 0.2), rho)
    return lambda yy, xx: _lobes(rng, yy, xx, centres, r, strand=max(0.8, 0.07 * d), elong=0.25)


def _draw_gn(rng: _Rng, d: float) -> Drawn:
    """Segmented neutrophil: 3-4 lobes on thin strands, finely granular lilac cytoplasm."""
    radius = d * rng.uniform(1.0, 1.2)
    return _cell(rng, radius, _GRANULAR, _segmented(rng, d, radius))


def _draw_gd(rng: _Rng, d: float) -> Drawn:
    """Dysplastic granulocyte: hyposegmented and/or hypogranular, sometimes giant."""
    kind = rng.choice(["pince-nez", "non-segmented", "segmented"], p=[0.4, 0.3, 0.3])
    look = _HYPOGRANULAR if kind == "segmented" or rng.uniform() < 0.5 else _GRANULAR
    radius = d * rng.uniform(1.0, 1.2) * (1.35 if rng.uniform() < 0.25 else 1.0)
    if kind == "segmented":
        return _cell(rng, radius, look, _segmented(rng, d, radius))
    if kind == "non-segmented":  # pseudo-Pelger-Huet: one dense oval or peanut nucleus
        return _round(rng, d * rng.uniform(0.38, 0.46), radius, look, shift=0.3, elong=0.3)
    r = d * rng.uniform(0.3, 0.36)  # bilobed pince-nez
    centres = _arc(rng, 2, 2 * r + d * rng.uniform(0.15, 0.3))
    return _cell(rng, radius, look, lambda yy, xx: _lobes(rng, yy, xx, centres, r, max(0.8, 0.07 * d), 0.1))


def _draw_mn(rng: _Rng, d: float) -> Drawn:
    """Megakaryocyte: very large cell, one big lobulated nucleus, granular cytoplasm."""
    radius, r = d * rng.uniform(2.4, 3.0), d * rng.uniform(0.45, 0.6)
    n = int(rng.integers(6, 11))  # overlapping lobes curled into a lobulated mass
    centres = _arc(rng, n, 1.2 * r, (0.68 * radius - r) * rng.uniform(0.5, 0.8)) + rng.normal(0, 0.25 * r, (n, 2))
    return _cell(rng, radius, _MEGA, lambda yy, xx: _lobes(rng, yy, xx, centres, r), rough=0.06)


def _draw_md(rng: _Rng, d: float) -> Drawn:
    """Dysplastic megakaryocyte: micromegakaryocyte, separated round nuclei, or hypolobation."""
    kind = rng.choice(["micro", "multinuclear", "hypolobated"], p=[0.5, 0.3, 0.2])
    if kind == "micro":
        return _round(rng, d * rng.uniform(0.36, 0.48), d * rng.uniform(0.9, 1.2), _MEGA, shift=0.5)
    if kind == "hypolobated":
        return _round(rng, d * rng.uniform(0.6, 0.8), d * rng.uniform(1.8, 2.3), _MEGA, elong=0.2)
    r = d * rng.uniform(0.3, 0.4)
    centres = _arc(rng, int(rng.integers(3, 7)), 2 * r + d * rng.uniform(0.15, 0.4))
    radius = float(np.hypot(*centres.T).max()) + r + d * rng.uniform(0.6, 1.0)
    return _cell(rng, radius, _MEGA, lambda yy, xx: _lobes(rng, yy, xx, centres, r, elong=0.08), rough=0.06)


def _draw_bl(rng: _Rng, d: float) -> Drawn:
    """Blast: large pale fine-chromatin nucleus, maybe nucleoli, thin basophilic rim (high N:C)."""
    rn = d / 2 * rng.uniform(1.0, 1.2)
    look = _Look((0.56, 0.66, 0.90), (0.58, 0.45, 0.72), 0.12, 0.8, nucleoli=int(rng.integers(0, 3)))
    return _round(rng, rn, rn * rng.uniform(1.12, 1.3), look, shift=0.5, elong=0.12)


def _draw_ot(rng: _Rng, d: float) -> Drawn:
    """Other: lymphocyte, monocyte (folded kidney nucleus) or plasma cell (eccentric nucleus)."""
    kind = rng.choice(["lymphocyte", "monocyte", "plasma"], p=[0.55, 0.3, 0.15])
    if kind == "lymphocyte":
        rn = d / 2 * rng.uniform(0.8, 0.95)
        return _round(rng, rn, rn * rng.uniform(1.08, 1.25), _Look((0.64, 0.76, 0.95), (0.24, 0.15, 0.34), 0.35))
    if kind == "plasma":
        look = _Look((0.45, 0.55, 0.85), (0.30, 0.20, 0.40), 0.45, 1.5)
        return _round(rng, d / 2 * rng.uniform(0.7, 0.85), d * rng.uniform(0.85, 1.0), look, shift=1.0)
    rn = d * rng.uniform(0.45, 0.55)
    ny, nx = offset(rng, rn * 1.05)
    notch = rn * rng.uniform(0.45, 0.6)
    look = _Look((0.76, 0.76, 0.86), (0.50, 0.40, 0.64), 0.2, 1.0, granules=0.02)
    return _cell(rng, d * rng.uniform(1.1, 1.35), look, lambda yy, xx: np.maximum(
        blob(rng, yy, xx, 0.0, 0.0, rn, 0.2, 0.04), notch - np.hypot(yy - ny, xx - nx)))


DRAWERS: Mapping[str, Callable[[_Rng, float], Drawn]] = MappingProxyType({
    "EN": _draw_en, "ED": _draw_ed, "GN": _draw_gn, "GD": _draw_gd,
    "MN": _draw_mn, "MD": _draw_md, "BL": _draw_bl, "OT": _draw_ot,
})
