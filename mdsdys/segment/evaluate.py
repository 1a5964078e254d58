"""Evaluating a segmenter on fields with true masks, beside the classical multi-Otsu baseline.

`mdsdys eval-segmenter DIR`, where DIR holds images/NAME.* and masks/NAME.* (like
../shared/data/bccd_nuclei). Dice and IoU per field; objects matched at IoU >= 0.5.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mdsdys.errors import MaskError, NotFoundError
from mdsdys.imaging.decode import IMAGE_SUFFIXES, decode_image, decode_mask
from mdsdys.segment.field import segment_patch
from mdsdys.segment.metrics import (
    ObjectCounts,
    dice,
    iou,
    label_mask,
    match_objects,
    summarise,
)
from mdsdys.segment.postprocess import (
    PostConfig,
    instances_from_mask,
    mask_diameter,
    otsu_mask,
)
from mdsdys.segment.scale import estimate_set_diameter
from mdsdys.segment.segmenter import Segmenter

Pair = tuple[str, np.ndarray, np.ndarray]  # (name, (H, W, 3) uint8 image, (H, W) uint8 mask 255 = nucleus)


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
