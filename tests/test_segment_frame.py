"""Small single-cell images are framed in their own background before the segmenter (issue 13)."""

from __future__ import annotations

import numpy as np
import torch
from conftest import requires_shared

from mdsdys.augment import to_density
from mdsdys.config import STARTER_SEGMENTER
from mdsdys.segment.evaluate import load_mask_pairs, otsu_segment
from mdsdys.segment.field import segment_patch
from mdsdys.segment.metrics import dice
from mdsdys.segment.postprocess import mask_diameter
from mdsdys.segment.segmenter import (
    FRAME_BELOW,
    background_colour,
    frame_in_background,
    frame_margin,
    load_segmenter,
)


def _yellow_field(seed: int = 0) -> torch.Tensor:
    """(1, 3, 20, 30): yellow glass with a dark blob, the shape of a small single-cell image."""
    rgb = torch.tensor([0.95, 0.85, 0.45])[None, :, None, None].expand(1, 3, 20, 30).clone()
    rgb[..., 5:12, 8:16] = torch.tensor([0.3, 0.2, 0.4])[None, :, None, None]
    return rgb + 0.01 * torch.rand(rgb.shape, generator=torch.Generator().manual_seed(seed))


def test_the_frame_is_the_field_own_yellow_background_and_reads_as_no_density():
    rgb = _yellow_field()
    framed = frame_in_background(rgb, 7)
    assert framed.shape == (1, 3, 34, 44)
    assert torch.equal(framed[..., 7:27, 7:37], rgb)
    colour = background_colour(rgb)[0, :, 0, 0]
    assert colour[2] < 0.5 < colour[0]  # yellow, not white
    assert torch.allclose(framed[0, :, 0, 0], colour) and torch.allclose(framed[0, :, -1, -1], colour)
    assert to_density(framed)[..., :7, :].abs().max() < 1e-6  # the frame is glass to the network


def test_only_fields_narrower_than_a_few_nucleus_diameters_are_framed():
    assert frame_margin((127, 169), 32.0) == 0  # a BCCD field at the starter's scale
    assert frame_margin((40, 300), 32.0) == 32  # one short side is enough
    assert frame_margin((round(FRAME_BELOW * 32), 999), 32.0) == 0


def test_the_starter_beats_otsu_on_small_yellow_single_cell_crops_of_real_fields():
    data = requires_shared("bccd_nuclei")
    model = load_segmenter(STARTER_SEGMENTER)
    ours, otsu = [], []
    for _, image, mask in load_mask_pairs(data)[-8:]:
        d = mask_diameter(mask)
        ys, xs = np.nonzero(mask)
        side = int(1.6 * d)  # the nucleus fills most of the image and touches its edges
        top = int(np.clip(ys.mean() - side / 2, 0, image.shape[0] - side))
        left = int(np.clip(xs.mean() - side / 2, 0, image.shape[1] - side))
        crop = image[top:top + side:4, left:left + side:4].astype(np.float32)  # nucleus ~30 px
        crop = np.clip(crop * [1.0, 0.92, 0.62], 0, 255).astype(np.uint8)  # yellow lamp
        truth = mask[top:top + side:4, left:left + side:4]
        ours.append(dice(segment_patch(model, crop, d / 4).instances, truth))
        otsu.append(dice(otsu_segment(crop, d / 4), truth))
    assert np.mean(ours) > max(0.9, np.mean(otsu))
