"""One cell geometry for every way into the classifier (issue 13): the cell is cut relative to its nucleus.

A detected cell's box is its nucleus box grown by half a nucleus diameter on each side, squared
(`cell_box`). An imported single-cell image, or one scored by `mdsdys eval-classifier`, is cut by the
same rule around the nucleus found in it (`single_cell_box`), so a cell reaches the model at the same
size whether it came from a 120 px crop, a 360 px CellaVision image or a detected field.

Finding the nucleus of a single-cell image is classical, so import needs no model runtime. In every
Romanowsky stain (May-Grünwald-Giemsa, Wright, rapid stains) the chromatin's azure-eosinate is purple:
it absorbs red light more than blue. Haemoglobin and eosin (red cells, eosinophil granules, the pink
cytoplasm of granulocytes) absorb blue and green and transmit red. So the red optical density less half
the blue one, each counted from the image's own glass, is high in nuclei and low in red cells, whatever
the lamp's colour (`nucleus_density`). The red density alone also picked up red cells wherever they lie
thick or overlap (BCCD's smears): the cut of a cell in a wide field grew up to 1.7x. Torch-free.

Array conventions: `rgb` (H, W, 3) uint8; boxes are (x, y, w, h) in pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.filters import threshold_otsu

from mdsdys.imaging.stain import optical_density, white_point

Box = tuple[int, int, int, int]

# The cell box reaches half a nucleus diameter past the nucleus on each side: the cytoplasm rim of
# an erythroblast or a neutrophil (the paper's crops show the whole cell). Stored in each classifier
# checkpoint as its geometry, with GEOMETRY_RULE.
CELL_MARGIN = 0.5
GEOMETRY_RULE = "nucleus box + margin x nucleus diameter, squared"
# The nucleus is looked for at this working side: large enough for a lymphocyte in a 360 px field
# (~60 px nucleus -> ~21 px), small enough to take ~2 ms.
_WORK_SIDE = 128
# The share of the blue density taken from the red one (nucleus_density). On BCCD's 283 white cells, each
# in a field 3.5 nucleus diameters wide, against their drawn nucleus masks: the cut's median ratio to
# the mask's was 1.17 with the red density alone (90th percentile 1.71), 1.00 (1.09) at 0.5, 0.98
# (1.04) at 1.0, which loses more of the nucleus itself (pixel recall 0.92 against 0.96 at 0.5). On
# PBC's nucleated cells the cut moves by under 2% (median); platelets are now cut around the platelet,
# where the red density took the red cells around it (docs/notes/issue13-classifier.md).
BLUE_SHARE = 0.5
# Pieces of nucleus within this share of the main piece's diameter are lobes of it (neutrophils,
# eosinophils); smaller than MIN_PIECE of its area they are specks (platelets beside the cell, debris).
_LOBE_REACH = 0.45
_MIN_PIECE = 0.08
# A nucleus density this far above the glass is dark enough to be a nucleus in any stain seen
# (the threshold between nucleus and the rest is Otsu's, but never lower than this).
_MIN_NUCLEUS_OD = 0.12


@dataclass(frozen=True)
class FoundNucleus:
    """The nucleus found in a single-cell image: its tight box, mask and equivalent diameter (px)."""

    box: Box
    mask: np.ndarray  # (H, W) bool over the whole image
    diameter: float

    @property
    def cell_box(self) -> Box:
        """The cell's square box by the one geometry rule."""
        return cell_box(self.box, self.diameter, self.mask.shape)


def cell_box(nucleus: Box, diameter: float, image_shape: tuple[int, ...], margin: float = CELL_MARGIN) -> Box:
    """The whole cell's square box: the nucleus box grown by margin x diameter, squared, moved inside the image.

    Squaring follows the paper, which pads every crop to a square. At an image's edge the square
    slides inward rather than being clipped, so it stays square and holds only real pixels; it
    shrinks only when it is larger than the image's shorter side.
    """
    x, y, w, h = nucleus
    height, width = image_shape[:2]
    grow = round(margin * diameter)
    side = max(1, min(max(w, h) + 2 * grow, height, width))
    left = round(x + w / 2 - side / 2)
    top = round(y + h / 2 - side / 2)
    left, top = min(max(left, 0), width - side), min(max(top, 0), height - side)
    return left, top, side, side


def nucleus_density(rgb: np.ndarray) -> np.ndarray:
    """(H, W) float >= 0: red optical density less BLUE_SHARE of the blue one, each from the image's own glass."""
    rgb = np.asarray(rgb)
    pixels = rgb[..., :3].reshape(-1, 3).astype(np.float32)
    density = optical_density(pixels, white_point(pixels)).reshape(*rgb.shape[:2], 3)
    return np.clip(density[..., 0] - BLUE_SHARE * density[..., 2], 0.0, None)


def find_nucleus(rgb: np.ndarray) -> FoundNucleus | None:
    """The nucleus of the cell an image is centred on (with its lobes), or None when nothing is stained enough."""
    rgb = np.asarray(rgb)
    height, width = rgb.shape[:2]
    scale = min(1.0, _WORK_SIDE / max(height, width))
    small = rgb if scale == 1.0 else np.asarray(
        Image.fromarray(rgb).resize((max(1, round(width * scale)), max(1, round(height * scale))),
                                    Image.Resampling.BILINEAR))
    od = ndimage.gaussian_filter(nucleus_density(small), 1.0)
    if float(od.max()) < _MIN_NUCLEUS_OD:
        return None
    threshold = max(_MIN_NUCLEUS_OD, float(threshold_otsu(od)) if od.min() < od.max() else _MIN_NUCLEUS_OD)
    labels, count = ndimage.label(ndimage.binary_opening(od > threshold))
    if count == 0:
        return None
    chosen = _central_piece(labels, count)
    mask_small = _with_lobes(labels, chosen)
    mask = mask_small if scale == 1.0 else np.asarray(
        Image.fromarray(mask_small.astype(np.uint8) * 255).resize((width, height), Image.Resampling.BILINEAR)) >= 128
    if not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
    return FoundNucleus(box, mask, 2.0 * math.sqrt(float(mask.sum()) / math.pi))


def _central_piece(labels: np.ndarray, count: int) -> int:
    """The label of the piece most likely the centred cell's nucleus: large and near the centre."""
    h, w = labels.shape
    index = np.arange(1, count + 1)
    areas = ndimage.sum_labels(np.ones_like(labels), labels, index)
    centres = np.array(ndimage.center_of_mass(np.ones_like(labels), labels, index)).reshape(-1, 2)
    spread = 0.35 * max(h, w)
    dist2 = ((centres[:, 0] - h / 2) ** 2 + (centres[:, 1] - w / 2) ** 2) / spread ** 2
    return int(index[np.argmax(areas * np.exp(-0.5 * dist2))])


def _with_lobes(labels: np.ndarray, chosen: int) -> np.ndarray:
    """The chosen piece with every large enough piece within reach of it (the lobes of one nucleus)."""
    main = labels == chosen
    area = float(main.sum())
    reach = _LOBE_REACH * 2.0 * math.sqrt(area / math.pi)
    near = ndimage.distance_transform_edt(~main) <= reach
    mask = main.copy()
    for label in np.unique(labels[near & (labels > 0)]):
        piece = labels == label
        if label != chosen and piece.sum() >= _MIN_PIECE * area:
            mask |= piece
    return mask


def single_cell_box(rgb: np.ndarray) -> Box:
    """The box a single-cell image's cell is cut by: around its nucleus, or the whole image if none is found."""
    found = find_nucleus(rgb)
    if found is None:
        height, width = np.asarray(rgb).shape[:2]
        return 0, 0, width, height
    return found.cell_box


def mask_cell_box(mask: np.ndarray, margin: float = CELL_MARGIN) -> Box | None:
    """The cell box around a known nucleus mask ((H, W), nonzero = nucleus), by the same rule; None if empty."""
    mask = np.asarray(mask) > 0
    if not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
    return cell_box(box, 2.0 * math.sqrt(float(mask.sum()) / math.pi), mask.shape, margin)
