"""Finding nuclei: a trained U-Net at a fixed nucleus scale, its scale estimate, and cell boxes.

The network always sees nuclei at the size it was trained at (`Segmenter.diameter`, 32 px by
default). A field is resized by `model diameter / slide diameter` before the forward pass and the
result is mapped back, so one model serves any microscope, camera and magnification (issue 3).
When a slide's diameter is unknown, scale.estimate_diameter finds it, as Cellpose's size model does.

It also evaluates a segmenter on fields with true masks (`mdsdys eval-segmenter DIR`, where DIR
holds images/NAME.* and masks/NAME.*, like ../shared/data/bccd_nuclei), beside the multi-Otsu
baseline.

Array conventions: `image` (H, W, 3) uint8 RGB; `mask` (H, W) uint8, 255 = nucleus; `prob` (H, W)
float32 in [0, 1]; `instances` (H, W) int32, 0 = background, k = nucleus k; boxes (x, y, w, h).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional as F

from mdsdys.augment import to_density
from mdsdys.errors import (
    CheckpointError,
    MaskError,
    MdsdysError,
    NotFoundError,
    ScaleError,
    ScaleEstimateError,
    WrongModelError,
)
from mdsdys.imaging.decode import IMAGE_SUFFIXES, decode_image, decode_mask, encode_png
from mdsdys.segment.metrics import (
    ObjectCounts,
    dice,
    iou,
    label_mask,
    match_objects,
    summarise,
)
from mdsdys.segment.postprocess import (
    Box,
    PostConfig,
    cell_box,
    instances_from_mask,
    mask_diameter,
    nucleus_boxes,
    otsu_mask,
    renumber,
)
from mdsdys.registry.versions import load_checkpoint
from mdsdys.segment.unet import UNet, UNetConfig, predict

log = logging.getLogger(__name__)
# A field is enlarged at most to this many pixels: the network runs in tiles, but the resized field
# and its maps then take ~2 GB of memory.
MAX_WORKING_PIXELS = 60_000_000
Pair = tuple[str, np.ndarray, np.ndarray]  # (name, (H, W, 3) uint8 image, (H, W) uint8 mask 255 = nucleus)



@dataclass(frozen=True, eq=False)
class Segmenter:
    """A trained nucleus segmenter: the network and the nucleus diameter (px) it was trained at."""

    net: UNet
    diameter: float
    post: PostConfig = field(default_factory=PostConfig)
    version: str | None = None


@dataclass(frozen=True, eq=False)
class Nucleus:
    """One detected nucleus and the square box of its whole cell."""

    label: int  # its value in Segmentation.instances
    box: Box  # the cell's square box (x, y, w, h): nucleus plus a cytoplasm margin
    mask: np.ndarray  # (h, w) uint8 inside box, 255 = this nucleus (not its neighbours)
    area: int  # nucleus pixels
    score: float  # mean nucleus probability over its pixels


@dataclass(frozen=True, eq=False)
class Segmentation:
    """The segmenter's output for one field, at the field's own size."""

    prob: np.ndarray  # (H, W) float32 nucleus probability
    instances: np.ndarray  # (H, W) int32, 0 = background, k = nuclei[k - 1]
    nuclei: list[Nucleus] = field(default_factory=list)
    diameter: float = 0.0  # nucleus diameter (px) the field was treated as having
    diameter_estimated: bool = False  # True when estimate_diameter chose it

    @property
    def mask(self) -> np.ndarray:
        """(H, W) uint8, 255 = nucleus."""
        return np.where(self.instances > 0, 255, 0).astype(np.uint8)


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
    rgb = torch.from_numpy(check_image(image)).permute(2, 0, 1)[None].float() / 255.0  # (1, 3, H, W)
    size = _working_size(image.shape, scale)
    if size != tuple(image.shape[:2]):
        rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
    return predict(model.net, to_density(rgb.clamp(0, 1))).numpy().astype(np.float32)


def _resize_prob(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an (h, w) probability map to shape (H, W)."""
    if prob.shape == shape:
        return prob
    t = torch.from_numpy(prob)[None, None]
    return F.interpolate(t, size=shape, mode="bilinear", align_corners=False)[0, 0].numpy()


def nearest_resize(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (h, w) label map to shape (H, W)."""
    ys = np.minimum(((np.arange(shape[0]) + 0.5) * labels.shape[0] / shape[0]).astype(int), labels.shape[0] - 1)
    xs = np.minimum(((np.arange(shape[1]) + 0.5) * labels.shape[1] / shape[1]).astype(int), labels.shape[1] - 1)
    return labels[ys[:, None], xs[None, :]]


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


def segment_patch(model: Segmenter, image: np.ndarray, nucleus_diameter: float | None = None,
                  post: PostConfig | None = None) -> Segmentation:
    """Find the nuclei of one field; the nucleus diameter (px) is estimated when not given."""
    image = check_image(image)
    post = post or model.post
    diameter, estimated = nucleus_diameter, nucleus_diameter is None
    if diameter is None:
        # Imported here because scale.py builds on this module's forward pass.
        from mdsdys.segment.scale import estimate_diameter

        try:
            diameter = estimate_diameter(model, image)
        except ScaleEstimateError:
            diameter = model.diameter  # no nuclei at any scale: the result is empty at any scale too
    scale = _checked_scale(model, image.shape, diameter)
    small_prob = prob_at_scale(model, image, scale)
    small = instances_from_mask(small_prob > post.threshold, model.diameter, post)
    prob = _resize_prob(small_prob, image.shape[:2])
    instances = renumber(_map_back(small, prob, post.threshold, scale))  # a tiny instance can vanish at full size
    return Segmentation(prob, instances, _nuclei(instances, prob, diameter, post), float(diameter), estimated)


def _checked_scale(model: Segmenter, shape: tuple[int, ...], diameter: float) -> float:
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


def _nuclei(instances: np.ndarray, prob: np.ndarray, diameter: float, post: PostConfig) -> list[Nucleus]:
    """A Nucleus with its square cell box for each instance."""
    nuclei = []
    for label, tight in nucleus_boxes(instances):
        x, y, w, h = box = cell_box(tight, diameter, instances.shape, post.cell_margin)
        inside = instances[y:y + h, x:x + w] == label
        tx, ty, tw, th = tight
        own = instances[ty:ty + th, tx:tx + tw] == label
        nuclei.append(Nucleus(label, box, np.where(inside, 255, 0).astype(np.uint8), int(own.sum()),
                              float(prob[ty:ty + th, tx:tx + tw][own].mean())))
    return nuclei


def patch_uncertainty(model: Segmenter, image: np.ndarray, nucleus_diameter: float | None = None) -> float:
    """How unsure the model is about a field: mean of 4 p (1 - p) over its pixels, 0 (sure) to 1.

    Used to queue the least certain patches for annotation; without a diameter the field is read
    at the model's own scale (no estimate), which is cheap enough to score a whole slide.
    """
    image = check_image(image)
    scale = _checked_scale(model, image.shape, nucleus_diameter) if nucleus_diameter else 1.0
    return uncertainty_of(prob_at_scale(model, image, scale))


def uncertainty_of(prob: np.ndarray) -> float:
    """Mean of 4 p (1 - p) over a probability map: 0 where the model is sure, 1 where p = 0.5 everywhere."""
    prob = np.asarray(prob, dtype=np.float64)
    return float(np.mean(4.0 * prob * (1.0 - prob))) if prob.size else 0.0


def validate_mask(mask: np.ndarray, patch_size: tuple[int, int]) -> tuple[np.ndarray, int]:
    """Check a drawn mask against its patch's (width, height); -> ((H, W) uint8 0/255 mask, nuclei).

    Raises MaskError for a mask of another size or one without any nucleus pixel.
    """
    mask = np.asarray(mask)
    width, height = patch_size
    if mask.ndim != 2 or mask.shape != (height, width):
        got = f"{mask.shape[1]}×{mask.shape[0]}" if mask.ndim == 2 else f"an array of shape {mask.shape}"
        raise MaskError(
            f"The mask is {got} but the patch is {width}×{height} pixels; it was not saved. "
            "Redraw it on this patch (the canvas keeps the patch's size when you save)."
        )
    binary = np.where(mask > 0, 255, 0).astype(np.uint8)
    nuclei = int(ndimage.label(binary > 0)[1])
    if nuclei == 0:
        raise MaskError(
            "The mask is empty: draw over at least one nucleus before saving. A field without nucleated "
            "cells needs no mask; skip it with 'Next'."
        )
    return binary, nuclei


def mask_to_png(mask: np.ndarray, patch_size: tuple[int, int]) -> tuple[bytes, int]:
    """Validate a drawn mask (see validate_mask) and encode it for the store: (PNG bytes, nuclei)."""
    binary, nuclei = validate_mask(mask, patch_size)
    return encode_png(binary), nuclei


def otsu_segment(image: np.ndarray, nucleus_diameter: float, post: PostConfig | None = None) -> np.ndarray:
    """The classical baseline's instances: multi-Otsu on green plus the same post-processing, (H, W) int32."""
    return instances_from_mask(otsu_mask(np.asarray(image)), nucleus_diameter, post or PostConfig())


def load_mask_pairs(folder: Path | str) -> list[Pair]:
    """(name, image, mask) for each images/NAME.* with a masks/NAME.* in folder, sorted by name.

    Raises NotFoundError when the folder lacks images/ or masks/, or no name is in both.
    """
    folder = Path(folder)
    found = {sub: {p.stem: p for p in sorted((folder / sub).glob("*")) if p.suffix.lower() in IMAGE_SUFFIXES}
             for sub in ("images", "masks") if (folder / sub).is_dir()}
    if len(found) < 2:
        raise NotFoundError(f"{folder} needs an images/ and a masks/ folder with files of the same names "
                            "(like ../shared/data/bccd_nuclei).")
    names = sorted(found["images"].keys() & found["masks"].keys())
    if not names:
        raise NotFoundError(f"No file in {folder / 'images'} has a mask of the same name in {folder / 'masks'}.")
    pairs = []
    for name in names:
        image = decode_image(found["images"][name].read_bytes(), found["images"][name].name).rgb
        mask = decode_mask(found["masks"][name].read_bytes(), found["masks"][name].name)
        if mask.shape != image.shape[:2]:
            raise MaskError(f"Mask {name} is {mask.shape[1]}×{mask.shape[0]} but its image is "
                            f"{image.shape[1]}×{image.shape[0]}.")
        pairs.append((name, image, mask))
    return pairs


def evaluate_segmenter(model: Segmenter, pairs: Sequence[Pair],
                       diameter: float | None = None) -> dict[str, Any]:
    """Dice, IoU and object precision/recall/F1 (IoU >= 0.5) of the model on (name, image, mask) pairs.

    Without a diameter it is estimated once for the whole set, as for a slide. Dice and IoU are
    means over fields; object counts are pooled. The dict also holds the diameter used.
    """
    # Imported here because scale.py builds on this module's forward pass.
    from mdsdys.segment.scale import estimate_set_diameter

    estimated = diameter is None
    used = estimate_set_diameter(model, [image for _, image, _ in pairs]) if estimated else float(diameter)
    scores = _score(pairs, lambda image: segment_patch(model, image, used).instances, model.post.lobe_gap)
    return scores | {"diameter": used, "diameter_estimated": estimated}


def evaluate_folder(model: Segmenter, folder: Path | str, diameter: float | None = None) -> dict[str, Any]:
    """`mdsdys eval-segmenter DIR [--diameter PX]`: evaluate_segmenter on DIR's images/ and masks/."""
    return evaluate_segmenter(model, load_mask_pairs(folder), diameter)


def evaluate_otsu(pairs: Sequence[Pair], diameter: float) -> dict[str, Any]:
    """The same figures for the multi-Otsu baseline, post-processed at the given nucleus diameter."""
    post = PostConfig()
    scores = _score(pairs, lambda image: otsu_segment(image, diameter, post), post.lobe_gap)
    return scores | {"diameter": float(diameter), "diameter_estimated": False}


def _score(pairs: Sequence[Pair], segment: Callable[[np.ndarray], np.ndarray], lobe_gap: float) -> dict[str, Any]:
    """Segment every field and compare with its true mask.

    True nuclei are the mask's connected components with pieces closer than lobe_gap x the set's
    true nucleus diameter joined, as the post-processing joins lobes; the bare components are
    scored too (object_*_components).
    """
    diameters = [d for d in (mask_diameter(mask) for _, _, mask in pairs) if d]
    gap = lobe_gap * float(np.median(diameters)) if diameters else 0.0
    dices, ious, nuclei, components = [], [], ObjectCounts(0, 0, 0), ObjectCounts(0, 0, 0)
    for _, image, mask in pairs:
        instances = segment(image)
        dices.append(dice(instances, mask))
        ious.append(iou(instances, mask))
        nuclei = nuclei + match_objects(instances, label_mask(mask, gap))
        components = components + match_objects(instances, label_mask(mask))
    return summarise(dices, ious, nuclei, components)
