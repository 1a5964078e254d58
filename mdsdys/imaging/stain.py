"""Colour that does not depend on the microscope (issue 13): white balance, then stain normalisation.

Every cell reaches the classifier through `normalise_squares`: first a white balance on the slide's
glass (the brightest pixels of its cells' images become white, so a yellow lamp or a blue camera
cast goes), then Macenko's optical-density stain normalisation (Macenko et al. 2009): the slide's two
stain directions are found in optical density, each pixel is unmixed into the two stains, their
densities are scaled so the slide's darkest stain matches the reference's, and the pixel is remixed
with the reference's stain colours; what the two stains do not explain is kept, so the mapping loses
nothing. In a Romanowsky stain the two extreme directions are the azure/methylene blue of nuclei and
the eosin-orange of red cells and granules; a pale, a dark, a bluer or a pinker stain then all reach
the model as the reference stain.

A fit is per slide: all the slide's cells share one mapping, so colour differences between its
cells (an eosinophil's orange granules, a basophil's dark ones) survive. With too few stained pixels
for two stain directions the fit keeps the reference directions and only matches densities.

Written here rather than taken from torchstain (issue 13 names it): torchstain fits one image at a
time and raises on images whose stain is too sparse to fit, while a slide needs one fit pooled over
many small cell crops and a fallback that never fails; the method itself is ~40 lines of numpy.

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


@dataclass(frozen=True)
class StainFit:
    """A slide's white point and stains: what `normalise_squares` maps to the reference."""

    white: tuple[float, float, float]  # per-channel glass intensity, 1..256
    stains: tuple[tuple[float, float, float], tuple[float, float, float]]  # unit OD vectors: nucleus, then eosin-orange
    max_density: tuple[float, float]  # 99th percentile density of each stain
    fitted: bool = True  # False: too few stained pixels; the reference's stain directions were kept

    def to_dict(self) -> dict[str, Any]:
        """Plain types, for a checkpoint or a store row."""
        return {"white": list(self.white), "stains": [list(v) for v in self.stains],
                "max_density": list(self.max_density), "fitted": self.fitted}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StainFit:
        """Inverse of to_dict."""
        stains = tuple(tuple(float(x) for x in v) for v in data["stains"])
        return cls(tuple(float(x) for x in data["white"]), stains,  # type: ignore[arg-type]
                   tuple(float(x) for x in data["max_density"]), bool(data.get("fitted", True)))  # type: ignore[arg-type]


# The reference stain: fit_stain on the 3,200 PBC cells of ../shared/data/pbc (CellaVision DM96,
# May-Grünwald-Giemsa), cut by the nucleus rule at 64 px, with the white point set to pure white.
# Every classifier checkpoint stores the reference it was trained with.
REFERENCE = StainFit(white=(255.0, 255.0, 255.0),
                     stains=((0.5310, 0.8432, 0.0840), (0.0759, 0.1155, 0.9904)),
                     max_density=(2.6162, 0.4599))


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


def fit_stain(squares: np.ndarray | Sequence[np.ndarray], seed: int = 0) -> StainFit:
    """A slide's StainFit from its cells' images (a batch or a list of crops of any sizes)."""
    pixels = _pixels(squares)
    if pixels.size == 0:
        return REFERENCE
    white = white_point(pixels)
    od = optical_density(pixels, white)
    od = od[od.sum(axis=1) > STAINED_OD]
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
                    tuple(float(v) for v in top), fitted)  # type: ignore[arg-type]


def normalise_pixels(pixels: np.ndarray, fit: StainFit, reference: StainFit = REFERENCE) -> np.ndarray:
    """(..., 3) uint8 of a slide fitted by `fit` -> (..., 3) uint8 in the reference's white and stains."""
    shape = pixels.shape
    od = optical_density(pixels.reshape(-1, 3).astype(np.float32), np.array(fit.white, np.float32))
    concentrations = _densities(od, np.array(fit.stains, np.float32))
    concentrations[:, :2] *= np.array(reference.max_density, np.float32) / np.array(fit.max_density, np.float32)
    remixed = concentrations @ _basis(np.array(reference.stains, np.float32))  # (P, 3)
    rgb = np.array(reference.white, np.float32) * np.exp(-remixed) - 1.0
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(shape)


def normalise_squares(squares: np.ndarray, fit: StainFit | None = None,
                      reference: StainFit = REFERENCE) -> np.ndarray:
    """(N, S, S, 3) uint8 squares of one slide -> the same in the reference stain; fitted on them if no fit is given."""
    squares = np.asarray(squares)
    if squares.size == 0:
        return squares
    return normalise_pixels(squares, fit or fit_stain(squares), reference)
