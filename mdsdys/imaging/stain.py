"""Colour that does not depend on the microscope (issue 13): white balance, then density matching.

Every cell reaches the classifier through `normalise_squares`: first a white balance on the slide's
glass (the brightest pixels of its cells' images become white, so a yellow lamp or a blue camera
cast goes), then each RGB channel's optical density is scaled so that the slide's stained pixels
have the reference's 99th percentile (the darkest chromatin; glass stays glass). A pale, a dark, a
bluer or a pinker stain, and a stain mix whose chromatin absorbs more or less blue light, then all
reach the model as the reference stain.

One anchor rather than the whole distribution: what a slide holds (its cell types, how many red
cells and how much glass lie around each cell) moves the shape of its density distribution, and
matching the whole of it (33 quantiles, the method of the first checkpoints with quantiles, kept
for them) recoloured a slide of lymphocytes, or of cells cut tighter, until a third of them were
misread (DENSITY_ANCHORS gives the figures).

Macenko's two-stain normalisation (Macenko et al. 2009) was the first method and is kept for fits
and references made before the quantiles were (every checkpoint stores its reference): the slide's
two stain directions are found in optical density, each pixel is unmixed into them plus a rest,
their densities are scaled to the reference's and remixed with the reference's stain colours. A
Romanowsky stain is more than two dyes (azure B, methylene blue, eosin, and the purple of their
complex on chromatin), and on another microscope's cells (BCCD) two stains left chromatin bright
blue where PBC's is dark purple. One PBC-trained model read BCCD's white cells 0.64 right
through Macenko and 0.58 through the 99th percentile, PBC's held-out cells 0.939 and 0.945, but
Macenko moved a synthetic slide of one lineage ~3x as much (docs/notes/issue13-classifier.md).

A fit is per slide: all the slide's cells share one mapping, so colour differences between its
cells (an eosinophil's orange granules, a basophil's dark ones) survive. A slide of fewer than
MIN_FIT_CELLS images is only white-balanced: its few cells' colours are their types', not its
stain's. With too few stained pixels to fit, a slide keeps the reference's stain directions and only
its densities are matched.

Written here rather than taken from torchstain (issue 13 names it): torchstain fits one image at a
time, raises on images whose stain is too sparse to fit, and has no per-channel density matching,
while a slide needs one fit pooled over many small cell crops and a fallback that never fails; the
methods are ~60 lines of numpy.

Array conventions: `squares` (N, S, S, 3) uint8 RGB (or a list of (h, w, 3) uint8 crops); optical
density `od = -log(I / white)` per channel. Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# The glass is the brightest part of a smear image; per channel, this percentile of all the slide's
# pixels is taken as white (a cell image holds a few percent of glass between its neighbours).
WHITE_PERCENTILE = 99.0
# A pixel counts as stained when its optical density summed over RGB exceeds this (glass ~0).
STAINED_OD = 0.15
# Macenko's robust extremes: the stain directions are the 1st and 99th percentile angles in the plane
# of the two main optical-density directions; a stain's maximum density is its 99th percentile.
ANGLE_PERCENTILE = 1.0
MAX_PERCENTILE = 99.0
MIN_STAINED_PIXELS = 500    # fewer, and the two directions are noise: keep the reference's
MIN_STAIN_ANGLE = 0.05      # radians; two directions closer than this are one stain
MAX_FIT_PIXELS = 200_000    # a random sample of the slide's stained pixels is enough for the fit
# With fewer cell images than this, a slide's density distribution is that of its few cells' types,
# not of its stain (an eosinophil fitted alone would lose its orange): only the white point is fitted.
MIN_FIT_CELLS = 10
# The stained pixels' optical density per channel is summarised by these percentiles.
DENSITY_QUANTILES = np.linspace(1.0, 99.0, 33)
# A slide is mapped onto the reference through one of them per channel, the 99th percentile: the
# chromatin of its nucleated cells, which every slide has whatever else it holds. Matching all 33
# moved a slide's colour with its contents: PBC's held-out lymphocytes fitted as a slide of their own
# fell from 0.95 to 0.65 right, and cells cut 20% tighter (less glass and red cells) from 0.93 to
# 0.64; through the 99th percentile they stay at 0.96 and 0.92, erythroblasts alone at 0.88 (0.80).
# A median anchor as well kept those but moved a synthetic slide of one lineage 2.5x as much. The
# cost is on BCCD's pale stain: 0.58 of its white cells right against 0.71 (one PBC-trained model
# read both ways, issue 13, docs/notes/issue13-classifier.md).
DENSITY_ANCHORS = (99.0,)


@dataclass(frozen=True)
class StainFit:
    """A slide's white point and stains: what `normalise_squares` maps to the reference."""

    white: tuple[float, float, float]  # per-channel glass intensity, 1..256
    stains: tuple[tuple[float, float, float], tuple[float, float, float]]  # unit OD vectors: nucleus, then eosin-orange
    max_density: tuple[float, float]  # 99th percentile density of each stain
    fitted: bool = True  # False: too few stained pixels; the reference's stain directions were kept
    # Per channel, the optical-density quantiles (DENSITY_QUANTILES, 1st to 99th percentile) of the stained pixels; None in
    # fits made before they were kept, which are normalised by Macenko alone.
    quantiles: tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]] | None = None
    # True: fitted on fewer than MIN_FIT_CELLS images, so only the white point is used (white balance).
    white_only: bool = False
    # On a reference: the percentiles (of DENSITY_QUANTILES) through which slides are mapped onto it;
    # None on slides' fits, and on references from before the anchors, which map through all of them.
    anchors: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain types, for a checkpoint or a store row."""
        out = {"white": list(self.white), "stains": [list(v) for v in self.stains],
               "max_density": list(self.max_density), "fitted": self.fitted}
        if self.quantiles is not None:
            out["quantiles"] = [list(q) for q in self.quantiles]
        if self.white_only:
            out["white_only"] = True
        if self.anchors is not None:
            out["anchors"] = list(self.anchors)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StainFit:
        """Inverse of to_dict."""
        stains = tuple(tuple(float(x) for x in v) for v in data["stains"])
        quantiles = data.get("quantiles")
        return cls(tuple(float(x) for x in data["white"]), stains,  # type: ignore[arg-type]
                   tuple(float(x) for x in data["max_density"]), bool(data.get("fitted", True)),  # type: ignore[arg-type]
                   None if quantiles is None else tuple(tuple(float(x) for x in q) for q in quantiles),  # type: ignore[arg-type]
                   bool(data.get("white_only", False)),
                   None if data.get("anchors") is None else tuple(float(x) for x in data["anchors"]))


# The reference stain: fit_stain on the 3,200 PBC cells of ../shared/data/pbc (CellaVision DM96,
# May-Grünwald-Giemsa), cut by the nucleus rule at 64 px, with the white point set to pure white;
# `python bench/stain_reference.py` recomputes it. Every classifier checkpoint stores the reference
# it was trained with, so a later change here does not move an existing model.
REFERENCE = StainFit(
    white=(255.0, 255.0, 255.0),
    stains=((0.5263, 0.8341, 0.1654), (0.3654, 0.0001, 0.9309)),
    max_density=(2.6716, 0.3596),
    quantiles=(
        (0.0039, 0.0078, 0.0118, 0.0157, 0.0197, 0.0277, 0.0439, 0.0604, 0.0813, 0.1028, 0.1202, 0.1335, 0.1515,
         0.1653, 0.1792, 0.1886, 0.2028, 0.2125, 0.2271, 0.2419, 0.2569, 0.2722, 0.2929, 0.3248, 0.3690, 0.4453,
         0.5684, 0.7330, 0.8723, 0.9913, 1.1263, 1.2685, 1.4343),
        (0.0130, 0.0217, 0.0261, 0.0305, 0.0394, 0.0484, 0.0620, 0.0804, 0.1087, 0.1428, 0.1729, 0.2040, 0.2253,
         0.2525, 0.2693, 0.2920, 0.3094, 0.3211, 0.3391, 0.3573, 0.3759, 0.4012, 0.4272, 0.4743, 0.5532, 0.6804,
         0.8661, 1.1072, 1.3567, 1.5592, 1.7622, 1.9545, 2.2730),
        (0.0178, 0.1167, 0.1216, 0.1266, 0.1316, 0.1417, 0.1468, 0.1623, 0.1727, 0.1885, 0.1992, 0.2155, 0.2265,
         0.2376, 0.2488, 0.2602, 0.2659, 0.2775, 0.2833, 0.2951, 0.3010, 0.3130, 0.3251, 0.3312, 0.3498, 0.3624,
         0.3945, 0.4277, 0.4621, 0.4977, 0.5271, 0.5729, 0.6800),
    ),
    anchors=DENSITY_ANCHORS,
)


def _pixels(squares: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """All pixels of a batch or a list of crops -> (P, 3) float32."""
    if isinstance(squares, np.ndarray):
        return squares.reshape(-1, 3).astype(np.float32)
    return np.concatenate([np.asarray(s).reshape(-1, 3) for s in squares]).astype(np.float32)


def white_point(pixels: np.ndarray) -> np.ndarray:
    """(P, 3) intensities -> (3,) glass intensity per channel (+1, so a black pixel keeps a finite density)."""
    return np.percentile(pixels + 1.0, WHITE_PERCENTILE, axis=0).clip(16.0, 256.0)


def optical_density(pixels: np.ndarray, white: np.ndarray) -> np.ndarray:
    """(P, 3) intensities -> (P, 3) optical density relative to `white`, >= 0."""
    return np.log(np.asarray(white, np.float32) / np.minimum(pixels + 1.0, white)).astype(np.float32)


def _stain_directions(od: np.ndarray) -> np.ndarray | None:
    """(P, 3) stained densities -> (2, 3) unit stain vectors (nucleus first), or None if one stain only."""
    _, _, vt = np.linalg.svd(od - od.mean(axis=0), full_matrices=False)
    plane = vt[:2].copy()  # (2, 3) the two main directions
    plane[plane.sum(axis=1) < 0] *= -1  # densities are positive: point the axes into the positive octant
    projected = od @ plane.T  # (P, 2)
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angles, [ANGLE_PERCENTILE, 100 - ANGLE_PERCENTILE])
    if high - low < MIN_STAIN_ANGLE:
        return None
    vectors = np.stack([np.cos([low, high]), np.sin([low, high])], axis=1) @ plane  # (2, 3)
    if (vectors < -0.05).any():
        return None
    vectors = np.clip(vectors, 1e-4, None)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    # The nucleus stain absorbs red light (its red share is larger); eosin absorbs green and blue.
    return vectors if vectors[0, 0] >= vectors[1, 0] else vectors[::-1].copy()


def _basis(stains: np.ndarray) -> np.ndarray:
    """(2, 3) stain vectors -> (3, 3): the two stains and the unit direction normal to both (the rest)."""
    rest = np.cross(stains[0], stains[1])
    return np.vstack([stains, rest / max(float(np.linalg.norm(rest)), 1e-6)]).astype(np.float32)


def _densities(od: np.ndarray, stains: np.ndarray) -> np.ndarray:
    """(P, 3) densities -> (P, 3): the two stains' concentrations and what neither explains.

    Keeping the rest makes the mapping invertible: an eosinophil's orange granules or a basophil's
    dark ones are not flattened onto the two stains.
    """
    return np.linalg.solve(_basis(stains).T, od.T).T


def _density_quantiles(stained: np.ndarray) -> np.ndarray | None:
    """(P, 3) densities of a slide's stained pixels -> (3, Q) quantiles of them, or None with too few of them.

    Stained means a summed density above STAINED_OD, the stain fit's fixed threshold. When all 33
    quantiles were matched, thresholds that scale with a slide's own darkest pixels kept the same
    pixels of a stain twice as faint (synthetic cells, yellow lamp and half the stain: 95% of the
    difference undone against 47%) but lost BCCD's pale cytoplasm (accuracy 0.59 and 0.49 against
    0.70; docs/notes/issue13-classifier.md). Through the 99th-percentile anchor the fixed threshold
    undoes 93% of that synthetic shift: the chromatin is above any threshold.
    """
    if stained.shape[0] < MIN_STAINED_PIXELS:
        return None
    return np.percentile(stained, DENSITY_QUANTILES, axis=0).T


def fit_stain(squares: np.ndarray | Sequence[np.ndarray], seed: int = 0) -> StainFit:
    """A slide's StainFit from its cells' images (a batch or a list of crops of any sizes)."""
    pixels = _pixels(squares)
    if pixels.size == 0:
        return REFERENCE
    white = white_point(pixels)
    images = 1 if isinstance(squares, np.ndarray) and squares.ndim == 3 else len(squares)
    if images < MIN_FIT_CELLS:
        return StainFit(tuple(float(v) for v in white), REFERENCE.stains, REFERENCE.max_density, False,  # type: ignore[arg-type]
                        white_only=True)
    od = optical_density(pixels, white)
    od = od[od.sum(axis=1) > STAINED_OD]
    quantiles = _density_quantiles(od)  # on every stained pixel, before the stain fit's sample
    if od.shape[0] > MAX_FIT_PIXELS:
        od = od[np.random.default_rng(seed).choice(od.shape[0], MAX_FIT_PIXELS, replace=False)]
    stains = _stain_directions(od) if od.shape[0] >= MIN_STAINED_PIXELS else None
    fitted = stains is not None
    if stains is None:
        stains = np.array(REFERENCE.stains, dtype=np.float32)
    if od.shape[0] == 0:
        return StainFit(tuple(float(v) for v in white), REFERENCE.stains, REFERENCE.max_density, False)
    top = np.percentile(_densities(od, stains)[:, :2], MAX_PERCENTILE, axis=0).clip(1e-3, None)
    return StainFit(tuple(float(v) for v in white), tuple(tuple(float(x) for x in v) for v in stains),  # type: ignore[arg-type]
                    tuple(float(v) for v in top), fitted,  # type: ignore[arg-type]
                    None if quantiles is None else tuple(tuple(float(x) for x in q) for q in quantiles))  # type: ignore[arg-type]


def match_densities(od: np.ndarray, fit: StainFit, reference: StainFit) -> np.ndarray:
    """(P, 3) optical densities of a slide -> the same with each channel's anchors at the reference's.

    Per channel, a monotone piecewise-linear map sends the slide's density quantiles at the
    reference's anchors (DENSITY_ANCHORS; every quantile for a reference without them) onto the
    reference's (glass, at density 0, stays glass); beyond the top one densities scale by the ratio
    of the two top quantiles, which stays bounded where a slide's darkest pixels all saturate.
    Unlike Macenko's two stains, it also moves what a Romanowsky stain's third colour does: the
    purple of chromatin, which absorbs blue light in one lab's stain and hardly at all in another's.
    """
    pick = _anchor_index(reference.anchors)
    out = np.empty_like(od)
    for c in range(3):
        slide = np.asarray(fit.quantiles[c])[pick]
        xs = np.maximum.accumulate(np.r_[0.0, slide]) + np.arange(len(slide) + 1) * 1e-6
        ys = np.r_[0.0, np.asarray(reference.quantiles[c])[pick]]
        slope = ys[-1] / max(xs[-1], 1e-3)
        v = od[:, c]
        out[:, c] = np.where(v <= xs[-1], np.interp(v, xs, ys), ys[-1] + (v - xs[-1]) * slope)
    return out


def _anchor_index(anchors: tuple[float, ...] | None) -> np.ndarray:
    """Indices into DENSITY_QUANTILES of a reference's anchors; all of them when it has none."""
    if anchors is None:
        return np.arange(len(DENSITY_QUANTILES))
    index = [int(np.argmin(np.abs(DENSITY_QUANTILES - a))) for a in anchors]
    if not np.allclose(DENSITY_QUANTILES[index], anchors):
        raise ValueError(f"Stain anchors {anchors} are not among the density quantiles.")
    return np.array(index)


def normalise_pixels(pixels: np.ndarray, fit: StainFit, reference: StainFit = REFERENCE) -> np.ndarray:
    """(..., 3) uint8 of a slide fitted by `fit` -> (..., 3) uint8 in the reference's white and stains."""
    if pixels.dtype == np.uint8 and _per_channel(fit, reference):
        # Each channel's new value depends on its old one alone: map its 256 levels once, then look
        # every pixel up: the same numbers, 16x faster on 1,024 squares than each pixel's density.
        table = _normalise(np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1), fit, reference)
        out = np.empty_like(pixels)
        for c in range(3):
            out[..., c] = table[:, c][pixels[..., c]]
        return out
    return _normalise(pixels, fit, reference)


def _per_channel(fit: StainFit, reference: StainFit) -> bool:
    """Whether the mapping treats each colour channel alone (a white balance, the density match), not Macenko's."""
    return fit.white_only or (fit.quantiles is not None and reference.quantiles is not None)


def _normalise(pixels: np.ndarray, fit: StainFit, reference: StainFit) -> np.ndarray:
    """normalise_pixels computed pixel by pixel."""
    shape = pixels.shape
    od = optical_density(pixels.reshape(-1, 3).astype(np.float32), np.array(fit.white, np.float32))
    if fit.white_only:
        mapped = od
    elif _per_channel(fit, reference):
        mapped = match_densities(od, fit, reference)
    else:  # Macenko: fits or references from before the quantiles were kept
        concentrations = _densities(od, np.array(fit.stains, np.float32))
        concentrations[:, :2] *= np.array(reference.max_density, np.float32) / np.array(fit.max_density, np.float32)
        mapped = concentrations @ _basis(np.array(reference.stains, np.float32))  # (P, 3)
    rgb = np.array(reference.white, np.float32) * np.exp(-mapped) - 1.0
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(shape)


def normalise_squares(squares: np.ndarray, fit: StainFit | None = None,
                      reference: StainFit = REFERENCE) -> np.ndarray:
    """(N, S, S, 3) uint8 squares of one slide -> the same in the reference stain; fitted on them if no fit is given."""
    squares = np.asarray(squares)
    if squares.size == 0:
        return squares
    return normalise_pixels(squares, fit or fit_stain(squares), reference)
