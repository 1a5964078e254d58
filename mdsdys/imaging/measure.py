"""A cell's size: its nucleus and its whole cell (nucleus plus cytoplasm) as equivalent-circle diameters (issue 18).

"Unusually large" granulocytes and micromegakaryocytes are size criteria, so sizes are kept in pixels
when a cell is stored and shown in µm with the slide's scale. The nucleus is the segmenter's mask with
its edge moved to where the stain ends (half-way between nucleus and cytoplasm darkness). The
cytoplasm is found by colour: in a Romanowsky stain it absorbs red light (basophilia, azure granules)
while red cells absorb green and glass absorbs little, so a pixel belongs to the cell when its red
optical density is high enough and not dwarfed by its green one. Torch-free.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from mdsdys.imaging.zones import optical_density

CYTOPLASM_OD_RED = 0.25    # red cells transmit red light (OD ~0.1 per layer); cytoplasm and nuclei do not
CYTOPLASM_RED_GREEN = 0.5  # red OD / green OD: ~0.2 for a red cell, >1 for basophilic cytoplasm
REACH = 2.4                # the cell is looked for within this many nucleus radii of the nucleus centre
# The stain's nucleus is trusted when its area is within this factor of the mask's: wide enough for a
# segmenter from another microscope whose masks are twice too big, narrow enough to refuse a stain edge
# that ran into a neighbour or shrank to a speck.
STAIN_AREA_FACTOR = 3.0


# Glass is the brightest tenth of a field; a pixel is stained (cell, not glass) when its optical density,
# summed over RGB and counted from the glass's, exceeds this. BCCD glass sits at ~0.65 (a dim JPEG) and
# pale neutrophil cytoplasm ~0.25 above it; the demo generator's glass is ~0.2 and its palest cytoplasm
# (hypogranular) ~0.15 above.
STAIN_OVER_GLASS = 0.1
GLASS_PERCENTILE = 10


def stained_pixels(image: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """(H, W) bool: pixels darker than the field's glass (cells, red cells, debris), after a Gaussian blur of sigma px.

    Relative to the field's own glass, so a dim camera or a pale stain moves the line with it.
    """
    od = ndimage.gaussian_filter(optical_density(np.asarray(image)).sum(axis=2), sigma)
    glass = float(np.percentile(od, GLASS_PERCENTILE))
    return od > glass + STAIN_OVER_GLASS


def equivalent_diameter(area_px: float) -> float:
    """Diameter (px) of the circle with this area."""
    return 2.0 * math.sqrt(max(area_px, 0.0) / math.pi)


def cell_pixels(image: np.ndarray, nucleus: np.ndarray, centre: tuple[float, float], radius: float) -> np.ndarray:
    """(H, W) bool: the cell around a nucleus, the stained region joined to it within `radius` px of `centre`."""
    od = optical_density(image)
    stained = (od[..., 0] > CYTOPLASM_OD_RED) & (od[..., 0] > CYTOPLASM_RED_GREEN * od[..., 1])
    yy, xx = np.ogrid[:image.shape[0], :image.shape[1]]
    near = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2
    candidate = ndimage.binary_opening((stained | nucleus) & near, iterations=1) | nucleus
    labels, _ = ndimage.label(candidate)
    own = np.unique(labels[nucleus & (labels > 0)])
    return ndimage.binary_fill_holes(np.isin(labels, own[own > 0]))


def stained_region(od_red: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """The nucleus as the stain draws it: pixels near the mask darker than half-way from cytoplasm to nucleus.

    A segmenter's edge sits wherever it learned to put it; the half-way line between the nucleus's
    and its surroundings' red optical density is where the nucleus visibly ends. None when the stain
    gives no clear edge (too small a mask, or nothing darker than the line).
    """
    core = ndimage.binary_erosion(mask, iterations=2)
    near = ndimage.binary_dilation(mask, iterations=3)
    ring = ndimage.binary_dilation(mask, iterations=6) & ~near
    if core.sum() < 4 or ring.sum() < 4:
        return None
    edge = 0.5 * (np.median(od_red[core]) + np.median(od_red[ring]))
    labels, _ = ndimage.label(near & (od_red > edge))
    own = np.bincount(labels[mask & (labels > 0)].ravel(), minlength=labels.max() + 1)
    own[0] = 0
    if own.sum() == 0:
        return None
    # Every lobe of a multinucleated cell's mask (segment.grouping) is its own stained piece: keep each
    # piece that holds a fair share of the mask, not only the largest; a neighbour grazing the edge holds little.
    return ndimage.binary_fill_holes(np.isin(labels, np.flatnonzero(own >= 0.2 * own.max())))


def stain_nucleus(od_red: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The stain's nucleus (`stained_region`) where it is plausible for this mask, else the mask itself.

    So sizes do not depend on the model that drew the mask.
    """
    stained = stained_region(od_red, mask)
    if stained is None:
        return mask
    ratio = stained.sum() / mask.sum()
    return stained if 1 / STAIN_AREA_FACTOR <= ratio <= STAIN_AREA_FACTOR else mask


def _around(image: np.ndarray, box: tuple[int, int, int, int], nucleus_mask: np.ndarray):
    """(crop of the field around the nucleus, the nucleus inside it, its centre in the crop, reach px), or None."""
    x, y, _, _ = box
    inside = np.asarray(nucleus_mask) > 0
    area = float(inside.sum())
    if not area:
        return None
    ys, xs = np.nonzero(inside)
    cy, cx = y + ys.mean(), x + xs.mean()
    reach = REACH * equivalent_diameter(area) / 2  # the search radius; the stain then gives the size
    top, left = max(0, int(cy - reach - 1)), max(0, int(cx - reach - 1))
    bottom, right = min(image.shape[0], int(cy + reach + 2)), min(image.shape[1], int(cx + reach + 2))
    window = np.zeros((bottom - top, right - left), bool)
    ny, nx = ys + y - top, xs + x - left
    keep = (ny >= 0) & (ny < window.shape[0]) & (nx >= 0) & (nx < window.shape[1])
    window[ny[keep], nx[keep]] = True
    return image[top:bottom, left:right], window, (cy - top, cx - left), reach


def measure_cell(image: np.ndarray, box: tuple[int, int, int, int], nucleus_mask: np.ndarray) -> tuple[float, float]:
    """(nucleus, cell) equivalent diameters in px of the cell whose (h, w) nucleus mask (255) lies at box.

    `image` is the whole (H, W, 3) uint8 field; the cell may reach beyond its box, up to REACH nucleus radii.
    """
    around = _around(image, box, nucleus_mask)
    if around is None:
        return 0.0, 0.0
    crop, window, centre, reach = around
    nucleus = stain_nucleus(optical_density(crop)[..., 0], window)
    nucleus_d = equivalent_diameter(float(nucleus.sum()))
    cell = cell_pixels(crop, nucleus, centre, reach)
    return nucleus_d, max(nucleus_d, equivalent_diameter(float(cell.sum())))


def stain_edge_error(image: np.ndarray, box: tuple[int, int, int, int], nucleus_mask: np.ndarray) -> float | None:
    """How far a nucleus mask's edge is from the stain's: |log2(stain's nucleus area / mask area)|.

    0 when the mask ends where the stain does; 1 when it is twice too big or half too small. A check
    on a segmenter that needs no drawn masks (segment.starter weighs two models with it). None when
    the stain gives no clear edge.
    """
    around = _around(image, box, nucleus_mask)
    if around is None:
        return None
    crop, window, _, _ = around
    stained = stained_region(optical_density(crop)[..., 0], window)
    return None if stained is None else abs(math.log2(max(stained.sum(), 1) / window.sum()))
