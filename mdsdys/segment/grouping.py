"""From nuclei to cells: the separate nuclear pieces of one cell get one label (issue 14).

A multinucleated megakaryocyte, a binucleate erythroblast or the lobes of a neutrophil or eosinophil
often reach the post-processing as separate components, further apart than `PostConfig.lobe_gap`
joins. They are one cell when they lie inside one cell's boundary: close together, with cell (not
glass) between them. Two rules keep touching neighbours apart: nuclei the watershed cut apart
(`postprocess.split_touching`) stay apart, and pieces are joined only when the smaller is lobe-sized,
since two whole nuclei side by side are two cells far more often than one binucleate cell.

Array conventions: `image` (H, W, 3) uint8 RGB; `instances` (H, W) int32, 0 = background, k = nucleus
k; the result is an (H, W) int32 map of the same pixels with the nuclei of one cell sharing a label.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from skimage.morphology import convex_hull_image

from mdsdys.imaging.measure import stained_pixels
from mdsdys.segment.postprocess import PostConfig, renumber


def group_cells(image: np.ndarray, instances: np.ndarray, diameter: float,
                post: PostConfig | None = None) -> np.ndarray:
    """Give the nuclei of one cell one label -> (H, W) int32 cells numbered 1..n."""
    post = post or PostConfig()
    n = int(instances.max())
    if n < 2 or post.cell_gap <= 0:
        return instances
    stained = stained_pixels(image, max(1.0, 0.02 * diameter))
    sizes = 2.0 * np.sqrt(np.bincount(instances.ravel(), minlength=n + 1) / math.pi)
    cut = touching_pairs(instances)
    joins = []
    for a, b, window in candidate_pairs(instances, post.cell_gap * diameter):
        if (a, b) in cut or min(sizes[a], sizes[b]) > post.lobe_size * diameter:
            continue
        pair_a, pair_b = instances[window] == a, instances[window] == b
        gap = pair_gap(pair_a, pair_b)
        if gap <= post.cell_gap * diameter and between_fill(pair_a, pair_b, stained[window]) >= post.cell_fill:
            joins.append((gap, a, b))
    return renumber(join_groups(n, sorted(joins), cut)[instances])


def join_groups(n: int, joins: list[tuple[float, int, int]], cut: set[tuple[int, int]]) -> np.ndarray:
    """(n + 1,) int32 group of each label after the joins, closest first; no group takes in both of a cut pair.

    A nucleus that touches one lobe of a cell (the watershed cut them apart) may lie as close to
    another lobe; joining closest pieces first and never across a cut keeps it out of that cell.
    """
    members = {k: {k} for k in range(n + 1)}
    group = np.arange(n + 1, dtype=np.int32)
    for _, a, b in joins:
        ga, gb = int(group[a]), int(group[b])
        if ga == gb or any((min(p, q), max(p, q)) in cut for p in members[ga] for q in members[gb]):
            continue
        keep, gone = min(ga, gb), max(ga, gb)
        members[keep] |= members.pop(gone)
        group[list(members[keep])] = keep
    return group


def touching_pairs(instances: np.ndarray) -> set[tuple[int, int]]:
    """(a, b), a < b, for every two labels that share an edge: nuclei the watershed cut apart."""
    pairs: set[tuple[int, int]] = set()
    for axis in (0, 1):
        a = np.moveaxis(instances, axis, 0)
        left, right = a[:-1], a[1:]
        border = (left != right) & (left > 0) & (right > 0)
        pairs.update(zip(np.minimum(left, right)[border].tolist(), np.maximum(left, right)[border].tolist()))
    return pairs


def candidate_pairs(instances: np.ndarray, gap: float) -> list[tuple[int, int, tuple[slice, slice]]]:
    """(a, b, window) for labels whose boxes, grown by gap px, overlap; window covers both grown boxes."""
    grow = math.ceil(gap) + 1
    height, width = instances.shape
    boxes = [(label, found) for label, found in enumerate(ndimage.find_objects(instances), start=1) if found]
    out = []
    for i, (a, (ay, ax)) in enumerate(boxes):
        for b, (by, bx) in boxes[i + 1:]:
            if ay.start - grow < by.stop and by.start - grow < ay.stop and ax.start - grow < bx.stop \
                    and bx.start - grow < ax.stop:
                y0, y1 = max(0, min(ay.start, by.start) - 1), min(height, max(ay.stop, by.stop) + 1)
                x0, x1 = max(0, min(ax.start, bx.start) - 1), min(width, max(ax.stop, bx.stop) + 1)
                out.append((a, b, (slice(y0, y1), slice(x0, x1))))
    return out


def pair_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Shortest distance (px) between the pixels of two (h, w) bool masks."""
    return float(ndimage.distance_transform_edt(~a)[b].min()) - 1.0  # 1 px apart = touching: no gap


def between_fill(a: np.ndarray, b: np.ndarray, stained: np.ndarray) -> float:
    """Share of the space between two nuclei (their joint convex hull, less both) that is stained.

    Inside one cell that space is cytoplasm; between two cells that merely touch, the hull also
    takes in the glass on either side of where they meet.
    """
    between = convex_hull_image(a | b) & ~(a | b)
    return float(stained[between].mean()) if between.any() else 1.0
