"""From a nucleus probability map (or a classical threshold) to nucleus instances and square cell boxes.

Everything here is numpy/scipy/scikit-image and measures sizes relative to the expected nucleus
diameter, so the same rules hold at any magnification.

Array conventions: `mask` (H, W) bool or uint8 (nonzero = nucleus); `instances` (H, W) int32,
0 = background, k = nucleus k; boxes are (x, y, w, h) in pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_multiotsu
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from mdsdys.imaging.geometry import CELL_MARGIN

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class PostConfig:
    """Rules that turn a probability map into nuclei; every size is a fraction of the nucleus diameter."""

    threshold: float = 0.5  # the probability the network was trained to put on the nucleus edge
    # Components narrower than 0.4 diameters (~3.5 µm) are platelets or platelet clumps, stain debris
    # or a sliver of a nucleus cut by the field's edge; the smallest nuclei of nucleated cells (small
    # lymphocytes, late erythroblasts) are ~0.6-0.7 of a typical one.
    min_diameter: float = 0.4
    # A touching neighbour is split off only around a core at least 0.8 diameters across. Two round
    # nuclei of typical size qualify; the lobes of a neutrophil or eosinophil (each ~0.5-0.7 of the
    # whole nucleus) do not, so one lobed nucleus stays one cell. A bilobed or ring-shaped nucleus
    # can still hold two such cores, so the cut must also run through a neck at most half as wide as
    # the narrower core: two nuclei touch at a narrow neck, one nucleus bends through a wide one.
    # Post-processing the 235 BCCD training masks themselves, cores of 0.3 cut ~20 of their nuclei in
    # two, 0.4 six, and 0.4 with the neck rule (anywhere from 0.4 to 0.7) none, while 26 of 30
    # touching pairs of synthetic round nuclei are still split.
    split_core: float = 0.4  # minimum distance-transform peak, in diameters (radius of the core)
    split_depth: float = 0.1  # the saddle between two cores must dip by this much (h-maxima)
    split_neck: float = 0.5  # widest neck (distance-transform height) to cut, as a share of the narrower core
    # Pieces less than 0.1 diameters (~1 µm) apart are lobes of one nucleus: one cell, one crop. In
    # the 235 BCCD training masks, lobes drawn apart lie 0.02-0.09 diameters from each other and the
    # nuclei of different cells 0.2 or more.
    lobe_gap: float = 0.1
    # Nuclear pieces further apart than lobe_gap are still one cell (segment.grouping, issue 14) when
    # they lie within cell_gap diameters of each other, the smaller is no wider than lobe_size
    # diameters and cell_fill of the space between them is stained like a cell, not glass. The two
    # lobes of BCCD eosinophils lie 0.15-0.25 diameters apart and measure 0.75-0.95 (the set's
    # diameter is a median over components, lobes included); the demo's multinuclear erythroblasts
    # and megakaryocytes 0.08-0.4 apart, 0.5-1.0 wide. Two nuclei of touching cells have two cytoplasm
    # rims between them (0.35-0.7 diameters for erythroblasts) and glass beside where they meet; a
    # blast (1.0-1.2 diameters) is never a lobe. On 60 synthetic fields of touching cells, lobe_size
    # 0.85 / 0.95 / 1.0 left 34 / 25 / 23 of 64 cells in pieces and wrongly merged 6 / 8 / 8 pairs
    # (bench/multinucleated.py gives the current figures).
    cell_gap: float = 0.5
    lobe_size: float = 0.95
    cell_fill: float = 0.85
    # The cell box reaches half a diameter past the nucleus on each side: the cytoplasm rim of an
    # erythroblast or a neutrophil (the paper's crops show the whole cell).
    cell_margin: float = CELL_MARGIN


def equivalent_diameters(instances: np.ndarray) -> np.ndarray:
    """Diameter (px) of the disc with each instance's area, for labels 1..max."""
    areas = np.bincount(instances.ravel())[1:]
    return 2.0 * np.sqrt(areas[areas > 0] / math.pi)


def mask_diameter(mask: np.ndarray) -> float | None:
    """The median equivalent diameter of a mask's connected nuclei, or None for an empty mask.

    This is the app's definition of a slide's "nucleus diameter": training measures it on drawn
    masks and estimate_diameter measures it on the model's own output.
    """
    labels, n = ndimage.label(np.asarray(mask) > 0)
    return float(np.median(equivalent_diameters(labels))) if n else None


def instances_from_mask(mask: np.ndarray, diameter: float, post: PostConfig = PostConfig()) -> np.ndarray:
    """Fill small holes, split touching nuclei, join lobes, drop specks -> (H, W) int32 instances 1..n."""
    min_area = math.pi * (post.min_diameter * diameter / 2) ** 2
    mask = np.asarray(mask) > 0
    holes = ndimage.binary_fill_holes(mask) & ~mask
    hole_labels, _ = ndimage.label(holes)
    small = np.bincount(hole_labels.ravel()) < min_area
    small[0] = False
    instances = join_lobes(split_touching(mask | small[hole_labels], diameter, post), post.lobe_gap * diameter)
    keep = np.bincount(instances.ravel()) >= min_area  # specks go after joining, so a small lobe stays
    keep[0] = False
    return renumber(np.where(keep[instances], instances, 0))


def join_lobes(instances: np.ndarray, gap: float) -> np.ndarray:
    """Merge separate components lying within `gap` px of each other into one instance.

    Components that split_touching cut into several nuclei keep their cut: touching nuclei are
    split by shape, separate pieces joined by distance.
    """
    fg = instances > 0
    if gap <= 0 or not fg.any():
        return instances
    components, n = ndimage.label(fg)
    groups, _ = ndimage.label(ndimage.binary_dilation(fg, iterations=max(1, math.ceil(gap / 2))))
    pairs = np.unique(np.stack([components[fg], instances[fg]]), axis=1)  # (2, k) distinct (component, instance)
    cut = np.bincount(pairs[0], minlength=n + 1) > 1  # components the watershed cut
    group_of = np.zeros(n + 1, np.int64)
    group_of[components[fg]] = groups[fg]
    joined = np.where(fg & ~cut[components], group_of[components] + int(instances.max()), instances)
    return renumber(joined)


def split_touching(mask: np.ndarray, diameter: float, post: PostConfig = PostConfig()) -> np.ndarray:
    """Distance-transform watershed: split a component where two wide cores meet at a narrow neck."""
    dist = ndimage.distance_transform_edt(mask)
    cores = h_maxima(dist, post.split_depth * diameter).astype(bool) & (dist >= post.split_core * diameter)
    markers, _ = ndimage.label(cores)
    instances = watershed(-dist, markers, mask=mask) if markers.any() else np.zeros(mask.shape, np.int32)
    instances = _rejoin_wide_necks(instances, dist, post.split_neck)
    rest, _ = ndimage.label(mask & (instances == 0))  # components with no qualifying core stay whole
    instances = np.where(rest > 0, rest + instances.max(), instances)
    return renumber(instances)


def _rejoin_wide_necks(instances: np.ndarray, dist: np.ndarray, neck: float) -> np.ndarray:
    """Undo watershed cuts whose ridge is wider than `neck` x the smaller core: one nucleus, not two."""
    if instances.max() < 2:
        return instances
    peaks = np.zeros(int(instances.max()) + 1)
    peaks[1:] = ndimage.maximum(dist, instances, np.arange(1, instances.max() + 1))
    parent = np.arange(peaks.size)
    for a, b, ridge in _ridges(instances, dist):
        if ridge > neck * min(peaks[a], peaks[b]):
            parent[parent == parent[b]] = parent[a]
    return parent[instances]


def _ridges(instances: np.ndarray, dist: np.ndarray) -> list[tuple[int, int, float]]:
    """(label a, label b, highest distance-transform value along their shared border) per touching pair."""
    best: dict[tuple[int, int], float] = {}
    for axis in (0, 1):
        a = np.moveaxis(instances, axis, 0)
        d = np.moveaxis(dist, axis, 0)
        left, right = a[:-1], a[1:]
        border = (left != right) & (left > 0) & (right > 0)
        heights = np.minimum(d[:-1], d[1:])[border]
        for p, q, h in zip(left[border], right[border], heights):
            key = (int(min(p, q)), int(max(p, q)))
            best[key] = max(best.get(key, 0.0), float(h))
    return [(a, b, h) for (a, b), h in best.items()]


def renumber(instances: np.ndarray) -> np.ndarray:
    """The same instances numbered 1..n without gaps, in the order of their old labels."""
    ids = np.unique(instances)
    ids = ids[ids > 0]
    lut = np.zeros(int(instances.max()) + 1, np.int32)
    lut[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
    return lut[instances]


def otsu_mask(image: np.ndarray) -> np.ndarray:
    """The classical baseline: the darkest of three multi-Otsu classes of the green channel.

    Nuclei absorb green most strongly in Romanowsky stains; the middle class holds red cells and
    cytoplasm, the brightest the glass. Returns (H, W) bool.
    """
    green = np.asarray(image)[..., 1]
    if green.min() == green.max():
        return np.zeros(green.shape, bool)
    return green <= threshold_multiotsu(green, classes=3)[0]


def nucleus_boxes(instances: np.ndarray) -> list[tuple[int, Box]]:
    """(label, tight (x, y, w, h) box) of each instance, in label order."""
    boxes = []
    for label, found in enumerate(ndimage.find_objects(instances), start=1):
        if found is not None:
            ys, xs = found
            boxes.append((label, (xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start)))
    return boxes
