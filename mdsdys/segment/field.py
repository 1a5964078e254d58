"""Segmenting one field: its scale, the forward pass at the model's nucleus size, instances and cell boxes.

The network always sees nuclei at the size it was trained at (`Segmenter.diameter`, 32 px by
default). A field is resized by `model diameter / slide diameter` before the forward pass and the
result is mapped back, so one model serves any microscope, camera and magnification (issue 3).
When a field's diameter is unknown, `scale.estimate_diameter` finds it, as Cellpose's size model does.
The nuclei of one cell (a multinucleated megakaryocyte, a neutrophil's lobes) are then grouped into
one cell by `grouping.group_cells`, so such a cell is boxed and cropped once (issue 14).

Array conventions: `image` (H, W, 3) uint8 RGB; `mask` (H, W) uint8, 255 = nucleus; `prob` (H, W)
float32 in [0, 1]; `instances` (H, W) int32, 0 = background, k = nucleus k; boxes (x, y, w, h).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional as F

from mdsdys.errors import ScaleEstimateError
from mdsdys.imaging.geometry import cell_box
from mdsdys.segment.grouping import group_cells
from mdsdys.segment.postprocess import (
    Box,
    PostConfig,
    instances_from_mask,
    nucleus_boxes,
    renumber,
)
from mdsdys.segment.scale import estimate_diameter
from mdsdys.segment.segmenter import (
    Segmenter,
    check_image,
    checked_scale,
    nearest_resize,
    prob_at_scale,
)


@dataclass(frozen=True, eq=False)
class Nucleus:
    """One detected cell's nucleus (every piece of it, for a multinucleated cell) and the square box of the cell."""

    label: int  # its value in Segmentation.cells
    box: Box  # the cell's square box (x, y, w, h): nucleus plus a cytoplasm margin
    mask: np.ndarray  # (h, w) uint8 inside box, 255 = this cell's nucleus or nuclei (not its neighbours')
    area: int  # nucleus pixels
    score: float  # mean nucleus probability over its pixels


@dataclass(frozen=True, eq=False)
class Segmentation:
    """The segmenter's output for one field, at the field's own size."""

    prob: np.ndarray  # (H, W) float32 nucleus probability
    instances: np.ndarray  # (H, W) int32, 0 = background, k = nucleus k (what segmentation metrics score)
    nuclei: list[Nucleus] = field(default_factory=list)  # one per cell: nuclei[k - 1] is label k of `cells`
    diameter: float = 0.0  # nucleus diameter (px) the field was treated as having
    diameter_estimated: bool = False  # True when estimate_diameter chose it
    # (H, W) int32 over the same pixels, the nuclei of one cell sharing a label (segment.grouping);
    # None when every nucleus is its own cell.
    cells: np.ndarray | None = None

    @property
    def cell_labels(self) -> np.ndarray:
        """(H, W) int32, 0 = background, k = the nucleus pixels of cell nuclei[k - 1]."""
        return self.instances if self.cells is None else self.cells

    @property
    def mask(self) -> np.ndarray:
        """(H, W) uint8, 255 = nucleus."""
        return np.where(self.instances > 0, 255, 0).astype(np.uint8)


def segment_patch(model: Segmenter, image: np.ndarray, nucleus_diameter: float | None = None,
                  post: PostConfig | None = None) -> Segmentation:
    """Find the nuclei of one field; the nucleus diameter (px) is estimated when not given."""
    image = check_image(image)
    post = post or model.post
    diameter, estimated = nucleus_diameter, nucleus_diameter is None
    if diameter is None:
        try:
            diameter = estimate_diameter(model, image)
        except ScaleEstimateError:
            diameter = model.diameter  # no nuclei at any scale: the result is empty at any scale too
    scale = checked_scale(model, image.shape, diameter)
    small_prob = prob_at_scale(model, image, scale)
    small = instances_from_mask(small_prob > post.threshold, model.diameter, post)
    prob = _resize_prob(small_prob, image.shape[:2])
    instances = renumber(_map_back(small, prob, post.threshold, scale))  # a tiny instance can vanish at full size
    cells = group_cells(image, instances, diameter, post)
    return Segmentation(prob, instances, _nuclei(cells, prob, diameter, post), float(diameter), estimated, cells)


def _nuclei(instances: np.ndarray, prob: np.ndarray, diameter: float, post: PostConfig) -> list[Nucleus]:
    """A Nucleus with its square cell box for each label of a cell (or nucleus) map."""
    nuclei = []
    for label, tight in nucleus_boxes(instances):
        x, y, w, h = box = cell_box(tight, diameter, instances.shape, post.cell_margin)
        inside = instances[y:y + h, x:x + w] == label
        tx, ty, tw, th = tight
        own = instances[ty:ty + th, tx:tx + tw] == label
        nuclei.append(Nucleus(label, box, np.where(inside, 255, 0).astype(np.uint8), int(own.sum()),
                              float(prob[ty:ty + th, tx:tx + tw][own].mean())))
    return nuclei


def _resize_prob(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an (h, w) probability map to shape (H, W)."""
    if prob.shape == shape:
        return prob
    t = torch.from_numpy(prob)[None, None]
    return F.interpolate(t, size=shape, mode="bilinear", align_corners=False)[0, 0].numpy()


def _map_back(small: np.ndarray, prob: np.ndarray, threshold: float, scale: float) -> np.ndarray:
    """Instances found at the working scale, redrawn on the full-size probability map's outline.

    Edges follow the bilinear-upsampled probability (smooth, sub-working-pixel accurate); labels come
    from the nearest working-scale instance within ~1.5 working pixels, so specks removed there stay
    removed here.
    """
    up = nearest_resize(small, prob.shape)
    fg = prob > threshold
    gaps = fg & (up == 0)
    if gaps.any():
        dist, (iy, ix) = ndimage.distance_transform_edt(up == 0, return_indices=True)
        near = np.where(dist <= max(1.5, 1.5 / scale), up[iy, ix], 0)
        up = np.where(gaps, near, up)
    return np.where(fg, up, 0).astype(np.int32)
