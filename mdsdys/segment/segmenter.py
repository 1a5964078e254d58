"""The trained nucleus segmenter: a U-Net checkpoint and its forward pass at a given scale.

A field is resized by `model diameter / field diameter` so that nuclei reach the network at the
size it was trained at; `segment.field` maps the result back and finds the instances.

Array conventions: `image` (H, W, 3) uint8 RGB; `prob` (h, w) float32 in [0, 1] at the working size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from mdsdys.augment import to_density
from mdsdys.checkpoints import load_checkpoint
from mdsdys.errors import ScaleError, WrongModelError
from mdsdys.segment.postprocess import PostConfig
from mdsdys.segment.unet import UNet, UNetConfig, predict

log = logging.getLogger(__name__)
# A field is enlarged at most to this many pixels: the network runs in tiles, but the resized field
# and its maps then take ~2 GB of memory.
MAX_WORKING_PIXELS = 60_000_000
# A field less than FRAME_BELOW nucleus diameters across (a single-cell image) is framed in its own
# background colour, FRAME_MARGIN diameters a side, before the forward pass: the network was trained
# on crops of whole fields and, on a small image, treated a nucleus cut by the edge, or a field with
# too little glass for to_density's white point, as background (starter Dice 0.88 vs Otsu 0.90 on
# crops of 1.5-3 nucleus diameters; 0.94 framed; bench/segmenter_shifts.py). Whole fields (a BCCD
# field is 4 diameters across) are left as they are: framed too, their Dice fell from 0.947 to 0.944.
FRAME_BELOW = 3.5
FRAME_MARGIN = 1.0


@dataclass(frozen=True, eq=False)
class Segmenter:
    """A trained nucleus segmenter: the network and the nucleus diameter (px) it was trained at."""

    net: UNet
    diameter: float
    post: PostConfig = field(default_factory=PostConfig)
    version: str | None = None


def segmenter_from_checkpoint(checkpoint: dict[str, Any]) -> Segmenter:
    """Rebuild a Segmenter from a checkpoint dict; raise WrongModelError for another kind of model."""
    kind = checkpoint.get("kind")
    if kind != "segmenter":
        raise WrongModelError(
            f"This checkpoint is a {kind or 'unknown'} model, not a segmenter. Choose a segmenter "
            "checkpoint, or train one with 'mdsdys train segmenter'."
        )
    net = UNet(UNetConfig(**checkpoint["unet"]))
    net.load_state_dict(checkpoint["state_dict"])
    net.eval()
    return Segmenter(net, float(checkpoint["diameter"]), PostConfig(**checkpoint.get("post", {})),
                     checkpoint.get("version"))


def load_segmenter(path: Path | str) -> Segmenter:
    """Load a segmenter checkpoint file written by registry.save_checkpoint."""
    return segmenter_from_checkpoint(load_checkpoint(path))


def check_image(image: np.ndarray) -> np.ndarray:
    """The image as an array; ValueError for anything but an (H, W, 3) uint8 RGB field."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) < 2:
        raise ValueError(f"Expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}.")
    return image


def _working_size(shape: tuple[int, ...], scale: float) -> tuple[int, int]:
    """(h, w) of a field resized by scale, at least 8 px a side."""
    return max(8, round(shape[0] * scale)), max(8, round(shape[1] * scale))


def prob_at_scale(model: Segmenter, image: np.ndarray, scale: float) -> np.ndarray:
    """Nucleus probability of the field resized by `scale`: (h, w) float32 at the working size."""
    # astype copies, so a read-only image (np.asarray of a PIL image) never backs a tensor
    rgb = torch.from_numpy(check_image(image).astype(np.float32)).permute(2, 0, 1)[None] / 255.0  # (1, 3, H, W)
    size = _working_size(image.shape, scale)
    if size != tuple(image.shape[:2]):
        rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
    rgb = rgb.clamp(0, 1)
    margin = frame_margin(rgb.shape[-2:], model.diameter)
    prob = predict(model.net, to_density(frame_in_background(rgb, margin) if margin else rgb))
    return prob[margin:prob.shape[0] - margin, margin:prob.shape[1] - margin].numpy().astype(np.float32)


def frame_margin(size: tuple[int, ...], diameter: float) -> int:
    """Working px of background frame for a field of this working size: 0 for a field FRAME_BELOW diameters across."""
    return round(FRAME_MARGIN * diameter) if min(size) < FRAME_BELOW * diameter else 0


def background_colour(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, 1, 1): each image's per-channel 99th percentile, the white point to_density uses (the glass)."""
    flat = rgb.flatten(2)  # (B, 3, H*W)
    return flat.kthvalue(max(1, round(0.99 * flat.shape[-1])), dim=-1).values[..., None, None]


def frame_in_background(rgb: torch.Tensor, margin: int) -> torch.Tensor:
    """(B, 3, H + 2m, W + 2m): the images centred in a frame of their own background colour."""
    b, c, h, w = rgb.shape
    out = background_colour(rgb).expand(b, c, h + 2 * margin, w + 2 * margin).clone()
    out[..., margin:margin + h, margin:margin + w] = rgb
    return out


def nearest_resize(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (h, w) label map to shape (H, W)."""
    ys = np.minimum(((np.arange(shape[0]) + 0.5) * labels.shape[0] / shape[0]).astype(int), labels.shape[0] - 1)
    xs = np.minimum(((np.arange(shape[1]) + 0.5) * labels.shape[1] / shape[1]).astype(int), labels.shape[1] - 1)
    return labels[ys[:, None], xs[None, :]]


def checked_scale(model: Segmenter, shape: tuple[int, ...], diameter: float) -> float:
    """model diameter / field diameter; ScaleError when the resized field would be absurdly large."""
    if not diameter > 0:
        raise ScaleError(f"The nucleus diameter must be a positive number of pixels, not {diameter!r}.")
    scale = model.diameter / diameter
    if shape[0] * shape[1] * scale * scale > MAX_WORKING_PIXELS:
        raise ScaleError(
            f"A nucleus diameter of {diameter:g} px is too small for this {shape[1]}×{shape[0]} field: it "
            f"would be enlarged {scale:.0f}x. Check the slide's scale (nuclei are rarely under 6 px)."
        )
    return scale


def patch_uncertainty(model: Segmenter, image: np.ndarray, nucleus_diameter: float | None = None) -> float:
    """How unsure the model is about a field: mean of 4 p (1 - p) over its pixels, 0 (sure) to 1.

    Used to queue the least certain patches for annotation; without a diameter the field is read
    at the model's own scale (no estimate), which is cheap enough to score a whole slide.
    """
    image = check_image(image)
    scale = checked_scale(model, image.shape, nucleus_diameter) if nucleus_diameter else 1.0
    return uncertainty_of(prob_at_scale(model, image, scale))


def uncertainty_of(prob: np.ndarray) -> float:
    """Mean of 4 p (1 - p) over a probability map: 0 where the model is sure, 1 where p = 0.5 everywhere."""
    prob = np.asarray(prob, dtype=np.float64)
    return float(np.mean(4.0 * prob * (1.0 - prob))) if prob.size else 0.0
