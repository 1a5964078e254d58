"""Seeded synthetic Giemsa-like bone-marrow smear patches, for the demo study and tests only.

The images are cartoons: each of the eight classes of Lee et al. 2022 is drawn with its defining
morphology (in `synth_cells`), but nothing here is real marrow, and no result on these images says
anything about performance on real smears. Sizes follow `nucleus_diameter`, the width in pixels of a
typical normal nucleus. Stain is modelled as optical density (OD), so overlapping red cells darken as
on a slide.

Array conventions: `image` (H, W, 3) uint8 RGB; `mask` (H, W) uint8, 255 = nucleus of a nucleated
cell, 0 = everything else (red cells included); `instances` (H, W) int32, 0 = background,
i + 1 = nucleus of `cells[i]`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from types import MappingProxyType

import numpy as np
from scipy import ndimage

from mdsdys.demo.synth_cells import DRAWERS, Drawn, blob, grid, offset, to_od

logger = logging.getLogger(__name__)
_Rng = np.random.Generator

CLASS_CODES: tuple[str, ...] = ("EN", "ED", "GN", "GD", "MN", "MD", "BL", "OT")
# Paper Table 2 (n = 8,065 labelled cells), in percent.
DEFAULT_CLASS_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"GN": 35.9, "EN": 16.5, "GD": 14.4, "ED": 12.6, "BL": 8.0, "MN": 5.5, "OT": 4.8, "MD": 2.4}
)
# Demo slides, in the order demo.DEMO_GROUPS names them: normal marrow; MDS with erythroid
# dysplasia (ED/(EN+ED) ~47%, over the WHO 10% line); MDS with excess blasts (~16%, MDS-EB-2).
_STUDY_PROFILES: tuple[Mapping[str, float], ...] = (
    {"GN": 45, "EN": 25, "GD": 2, "ED": 1.5, "BL": 2, "MN": 6, "OT": 8, "MD": 0.5},
    {"GN": 30, "EN": 18, "ED": 16, "GD": 8, "BL": 3, "MN": 4, "OT": 5, "MD": 4},
    {"GN": 28, "EN": 14, "ED": 6, "GD": 14, "BL": 14, "MN": 4, "OT": 5, "MD": 4},
)
_STUDY_NUCLEUS_DIAMETER = 24.0
_MIN_SIZES = MappingProxyType({"nucleus_diameter": 4.0, "size": 16})  # below these nuclei vanish
_ATTEMPTS = 80  # random tries to place one cell before dropping it
_RBC_RADIUS = 0.52  # x nucleus_diameter: a red cell (~7.5 um) is about as wide as a normoblast nucleus
_BACKGROUND, _RBC = (0.96, 0.91, 0.93), (0.88, 0.57, 0.59)


@dataclass(frozen=True)
class SynthCell:
    """One nucleated cell: its class, whole-cell box and nucleus pixels."""

    code: str  # one of CLASS_CODES
    box: tuple[int, int, int, int]  # (x, y, w, h) of the whole cell, cytoplasm included, clipped to the patch
    nucleus: np.ndarray  # (h, w) bool, the nucleus pixels inside box


@dataclass(frozen=True)
class SynthPatch:
    """A synthetic smear field with its nucleus mask, instance map and cell list."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    mask: np.ndarray  # (H, W) uint8, 255 = nucleus of a nucleated cell, 0 = everything else
    instances: np.ndarray  # (H, W) int32, 0 = background, i + 1 = nucleus of cells[i]
    cells: tuple[SynthCell, ...]


@dataclass(frozen=True)
class SynthSlide:
    """A named synthetic slide: a handful of patches sharing one class mix."""

    name: str
    patches: tuple[SynthPatch, ...]


_Placed = tuple[str, Drawn, int, int]  # (code, cell, centre y, centre x) in the patch


def _window(shape: tuple[int, ...], y0: int, x0: int, h: int, w: int) -> tuple[tuple[slice, slice], ...] | None:
    """(patch, local) slice pairs where a local canvas with top-left (y0, x0) meets an (h, w) patch."""
    gy0, gx0, gy1, gx1 = max(y0, 0), max(x0, 0), min(y0 + shape[0], h), min(x0 + shape[1], w)
    if gy0 >= gy1 or gx0 >= gx1:
        return None
    return (slice(gy0, gy1), slice(gx0, gx1)), (slice(gy0 - y0, gy1 - y0), slice(gx0 - x0, gx1 - x0))


def _nuclei_meet(a: Drawn, ay: int, ax: int, b: Drawn, by: int, bx: int, grow: bool = False) -> bool:
    """Whether nucleus a centred at (ay, ax), 4-dilated if grow, shares a pixel with nucleus b."""
    na = ndimage.binary_dilation(a.nucleus) if grow else a.nucleus
    win = _window(na.shape, ay - a.half - (by - b.half), ax - a.half - (bx - b.half), *b.nucleus.shape)
    return win is not None and bool((na[win[1]] & b.nucleus[win[0]]).any())


def _fits(cell: Drawn, cy: int, cx: int, placed: list[_Placed], h: int, w: int, skip: int = -1) -> bool:
    """Whether the cell's disc clears every placed cell but skip, with most of its nucleus in view."""
    if any(math.hypot(cy - py, cx - px) < cell.radius + p.radius + 2
           for k, (_, p, py, px) in enumerate(placed) if k != skip):
        return False
    ys, xs = np.nonzero(cell.nucleus)
    ys, xs = ys + cy - cell.half, xs + cx - cell.half
    return ys.size > 0 and float(np.mean((ys >= 0) & (ys < h) & (xs >= 0) & (xs < w))) >= 0.6


def _free_spot(rng: _Rng, cell: Drawn, placed: list[_Placed], h: int, w: int) -> tuple[int, int] | None:
    """A random centre where the cell overlaps no placed cell, or None."""
    my, mx = min(0.6 * cell.radius, h / 2), min(0.6 * cell.radius, w / 2)
    for _ in range(_ATTEMPTS):
        cy, cx = int(rng.uniform(my, h - my)), int(rng.uniform(mx, w - mx))
        if _fits(cell, cy, cx, placed, h, w):
            return cy, cx
    return None


def _touching_spot(rng: _Rng, cell: Drawn, placed: list[_Placed], h: int, w: int) -> tuple[int, int] | None:
    """A centre where the cell's nucleus 4-touches, but does not overlap, a placed cell's nucleus."""
    j = int(rng.integers(len(placed)))
    _, other, oy, ox = placed[j]
    for _ in range(8):  # slide in from a random side until the nuclei would overlap, then back off
        dy, dx = offset(rng, 1.0)
        last = None
        for dist in np.arange(cell.radius + other.radius, 0, -0.5):
            if _nuclei_meet(other, oy, ox, cell, round(oy + dist * dy), round(ox + dist * dx)):
                break
            last = round(oy + dist * dy), round(ox + dist * dx)
        if last is None:
            continue
        for ny, nx in [(last[0] + a, last[1] + b) for a in (0, -1, 1) for b in (0, -1, 1)]:
            if (not _nuclei_meet(other, oy, ox, cell, ny, nx) and _nuclei_meet(other, oy, ox, cell, ny, nx, True)
                    and _fits(cell, ny, nx, placed, h, w, skip=j)):
                return ny, nx
    return None


def _place(rng: _Rng, drawn: list[tuple[str, Drawn]], h: int, w: int, allow_touching: bool) -> list[_Placed]:
    """Centres for the cells, largest first; with allow_touching every other cell tries to touch one."""
    placed: list[_Placed] = []
    for k, (code, cell) in enumerate(sorted(drawn, key=lambda item: -item[1].radius)):
        spot = _touching_spot(rng, cell, placed, h, w) if allow_touching and placed and k % 2 else None
        spot = spot or _free_spot(rng, cell, placed, h, w)
        if spot is None:
            logger.debug("no room for a %s cell of radius %.0f px in a %dx%d patch", code, cell.radius, h, w)
        else:
            placed.append((code, cell, *spot))
    return placed


def _rbc(rng: _Rng, d: float) -> np.ndarray:
    """(S, S, 3) OD of one anucleate red cell: a disc, thinner in the middle (central pallor)."""
    r = _RBC_RADIUS * d * rng.uniform(0.88, 1.12)
    yy, xx = grid(r)
    thick = np.clip(0.5 - blob(rng, yy, xx, 0.0, 0.0, r, 0.12, 0.02) / 1.2, 0, 1)
    pallor = 1 - rng.uniform(0.4, 0.6) * np.exp(-((np.hypot(yy, xx) / (0.5 * r)) ** 2))  # (S, S)
    return (thick * pallor)[..., None] * to_od(_RBC)


def _draw_rbcs(rng: _Rng, od: np.ndarray, n: int, d: float) -> None:
    """Add n red cells to the (H, W, 3) OD canvas in place; overlaps add up and look darker."""
    h, w = od.shape[:2]
    shapes = [_rbc(rng, d) for _ in range(min(n, 12))]  # stamping a dozen shapes keeps this fast
    for k in rng.integers(0, len(shapes), n):
        half = shapes[k].shape[0] // 2
        win = _window(shapes[k].shape, int(rng.uniform(-2 * half, h)), int(rng.uniform(-2 * half, w)), h, w)
        if win is not None:
            od[win[0]] += shapes[k][win[1]]


def _blend(od: np.ndarray, alpha: np.ndarray, layer: np.ndarray, cy: int, cx: int) -> None:
    """Lay a local OD layer centred at (cy, cx) over the (H, W, 3) canvas in place, clipped to it."""
    half = alpha.shape[0] // 2
    win = _window(alpha.shape, cy - half, cx - half, *od.shape[:2])
    if win is not None:
        a = alpha[win[1]][..., None]
        od[win[0]] = od[win[0]] * (1 - a) + a * layer[win[1]]


def _to_rgb(rng: _Rng, od: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 image from OD, with stain jitter, optical blur, uneven light and noise."""
    h, w = od.shape[:2]
    od = ndimage.gaussian_filter(od * rng.uniform(0.92, 1.08, 3).astype(np.float32), (0.6, 0.6, 0))
    yy = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
    xx = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
    ty, tx = offset(rng, rng.uniform(0.02, 0.07))
    light = 1.0 + ty * yy + tx * xx - 0.12 * (yy**2 + xx**2)  # (H, W) tilt plus vignette
    rgb = np.exp(-od) * light[..., None] + 0.012 * rng.standard_normal(od.shape, dtype=np.float32)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def _annotate(placed: list[_Placed], h: int, w: int) -> tuple[np.ndarray, tuple[SynthCell, ...]]:
    """(H, W) int32 instance map and the cell records, clipped to the patch."""
    instances, cells = np.zeros((h, w), np.int32), []
    for i, (code, cell, cy, cx) in enumerate(placed):
        (gy, gx), local = _window(cell.nucleus.shape, cy - cell.half, cx - cell.half, h, w)
        nucleus = cell.nucleus[local]
        ys, xs = np.nonzero((cell.cyto_alpha[local] > 0.5) | nucleus)
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        nucleus = nucleus[y0:y1, x0:x1].copy()
        instances[gy.start + y0:gy.start + y1, gx.start + x0:gx.start + x1][nucleus] = i + 1
        cells.append(SynthCell(code, (gx.start + x0, gy.start + y0, x1 - x0, y1 - y0), nucleus))
    return instances, tuple(cells)


def _render(rng: _Rng, h: int, w: int, placed: list[_Placed], n_rbc: int, d: float) -> SynthPatch:
    """Paint background, red cells, then all cytoplasm, then all nuclei, so nuclei stay on top."""
    od = np.broadcast_to(to_od(_BACKGROUND), (h, w, 3)).copy()
    _draw_rbcs(rng, od, n_rbc, d)
    for _, cell, cy, cx in placed:
        _blend(od, cell.cyto_alpha, cell.cyto_od, cy, cx)
    for _, cell, cy, cx in placed:
        _blend(od, cell.nuc_alpha, cell.nuc_od, cy, cx)
    instances, cells = _annotate(placed, h, w)
    return SynthPatch(_to_rgb(rng, od), np.where(instances > 0, 255, 0).astype(np.uint8), instances, cells)


def _check_positive(**sizes: float) -> None:
    """Raise ValueError naming the first size that is not positive or too small to draw."""
    for name, value in sizes.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}.")
        if name in _MIN_SIZES and value < _MIN_SIZES[name]:
            raise ValueError(f"{name} must be at least {_MIN_SIZES[name]} px to draw a cell, got {value!r}.")


def _check_code(code: str) -> None:
    """Raise ValueError for a class code outside CLASS_CODES."""
    if code not in DRAWERS:
        raise ValueError(f"Unknown class code {code!r}; use one of {', '.join(CLASS_CODES)}.")


def _class_probs(weights: Mapping[str, float] | None) -> np.ndarray:
    """(8,) sampling probabilities over CLASS_CODES from a code -> weight mapping (None: paper's mix)."""
    weights = DEFAULT_CLASS_WEIGHTS if weights is None else weights
    for code, weight in weights.items():
        _check_code(code)
        if not weight >= 0:
            raise ValueError(f"Class weight for {code} must be >= 0, got {weight!r}.")
    probs = np.array([float(weights.get(code, 0.0)) for code in CLASS_CODES])
    if probs.sum() <= 0:
        raise ValueError("class_weights must give at least one class a positive weight.")
    return probs / probs.sum()


def _default_count(rng: _Rng, h: int, w: int, d: float) -> int:
    """Cells to aim for: about 6-9 in a 256 px field at d = 24, like the paper's patches."""
    area = h * w / d**2
    return int(rng.integers(max(1, round(0.05 * area)), max(1, round(0.08 * area)) + 1))


def _quota(rng: _Rng, weights: Mapping[str, float], n: int) -> list[str]:
    """n class codes in proportion to weights (largest remainder), shuffled."""
    share = _class_probs(weights) * n
    counts = np.floor(share).astype(int)
    counts[np.argsort(counts - share, kind="stable")[: n - counts.sum()]] += 1
    codes = np.repeat(np.arange(len(CLASS_CODES)), counts)
    rng.shuffle(codes)
    return [CLASS_CODES[k] for k in codes]


def _patch_of(rng: _Rng, h: int, w: int, codes: list[str], d: float, n_rbc: int | None,
              allow_touching: bool) -> SynthPatch:
    """Draw, place and render these cells plus red cells (30-55% cover unless n_rbc is given)."""
    placed = _place(rng, [(code, DRAWERS[code](rng, d)) for code in codes], h, w, allow_touching)
    if n_rbc is None:
        n_rbc = int(rng.uniform(0.3, 0.55) * h * w / (math.pi * (_RBC_RADIUS * d) ** 2))
    return _render(rng, h, w, placed, n_rbc, d)


def generate_patch(rng: _Rng, height: int = 256, width: int = 256, n_cells: int | None = None,
                   class_weights: Mapping[str, float] | None = None, nucleus_diameter: float = 24.0,
                   n_rbc: int | None = None, allow_touching: bool = False) -> SynthPatch:
    """A synthetic smear field; n_cells is a target, and cells that find no room are dropped."""
    _check_positive(height=height, width=width, nucleus_diameter=nucleus_diameter)
    probs, d = _class_probs(class_weights), float(nucleus_diameter)
    n_cells = _default_count(rng, height, width, d) if n_cells is None else n_cells
    if n_cells < 0 or (n_rbc is not None and n_rbc < 0):
        raise ValueError(f"n_cells and n_rbc must be >= 0, got {n_cells!r} and {n_rbc!r}.")
    codes = [CLASS_CODES[k] for k in rng.choice(len(CLASS_CODES), size=n_cells, p=probs)]
    return _patch_of(rng, height, width, codes, d, n_rbc, allow_touching)


def generate_cell(rng: _Rng, code: str, size: int = 96,
                  nucleus_diameter: float = 24.0) -> tuple[np.ndarray, np.ndarray]:
    """One centred cell like a CellaVision image: (size, size, 3) uint8 RGB, (size, size) uint8 mask 255 = nucleus."""
    _check_code(code)
    _check_positive(size=size, nucleus_diameter=nucleus_diameter)
    d = float(nucleus_diameter)
    cell = DRAWERS[code](rng, d)
    for _ in range(20):  # megakaryocytes can outgrow the image: redraw them smaller
        if cell.radius <= size / 2 - 2 or d <= _MIN_SIZES["nucleus_diameter"]:
            break
        d = max(_MIN_SIZES["nucleus_diameter"], d * 0.95 * (size / 2 - 2) / cell.radius)
        cell = DRAWERS[code](rng, d)
    n_rbc = int(0.25 * size**2 / (math.pi * (_RBC_RADIUS * d) ** 2))
    patch = _render(rng, size, size, [(code, cell, size // 2, size // 2)], n_rbc, d)
    return patch.image, patch.mask


def generate_study(seed: int = 0, n_slides: int = 3, patches_per_slide: int = 8,
                   height: int = 256, width: int = 256) -> tuple[SynthSlide, ...]:
    """Demo slides SYN-001...: normal marrow, MDS with erythroid dysplasia, MDS with excess blasts, repeating."""
    _check_positive(n_slides=n_slides, patches_per_slide=patches_per_slide, height=height, width=width)
    slides, d = [], _STUDY_NUCLEUS_DIAMETER
    for i in range(n_slides):
        rng = np.random.default_rng([seed, i])  # a slide does not depend on how many follow it
        sizes = [_default_count(rng, height, width, d) for _ in range(patches_per_slide)]
        # Quotas, not independent draws, so each slide's mix lands near its profile's percentages.
        codes, ends = _quota(rng, _STUDY_PROFILES[i % len(_STUDY_PROFILES)], sum(sizes)), np.cumsum([0, *sizes])
        patches = tuple(_patch_of(rng, height, width, codes[a:b], d, None, False) for a, b in pairwise(ends))
        slides.append(SynthSlide(f"SYN-{i + 1:03d}", patches))
    return tuple(slides)
