"""Estimating a field's or a slide's nucleus diameter with the segmenter itself (issue 3).

Microscopes, cameras and objectives differ, so a slide without a scale gets one estimated, as
Cellpose's size model does; the app shows it so a user can correct it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mdsdys.errors import ScaleEstimateError
from mdsdys.segment.postprocess import otsu_mask
from mdsdys.segment.segmenter import (
    Segmenter,
    check_image,
    nearest_resize,
    prob_at_scale,
)

# Scale search: candidate diameters 2^(1/2) apart, from 6 px up to a quarter of the field's shorter
# side (a BCCD field at 100x oil fits four of its nuclei across). Shrunk further, a dense field's
# clusters of nuclei pass for single large nuclei. Each pass sees at most ESTIMATE_PIXELS, taken
# where the field is darkest (most nuclei).
_ESTIMATE_MIN_DIAMETER = 6.0
_ESTIMATE_MIN_ACROSS = 4.0
_ESTIMATE_STEP = math.sqrt(2.0)
ESTIMATE_PIXELS = 256 * 256
_GROUP_GAP = 0.1  # pieces this close (in diameters) are one nucleus when measuring
_MIN_KEPT = 0.5  # share of the found nucleus area that must survive speck removal for a reading


def estimate_diameter(model: Segmenter, image: np.ndarray) -> float:
    """The field's nucleus diameter in px, found with the segmenter itself (Cellpose's size idea).

    The field is segmented at a ladder of candidate diameters, 2^(1/2) apart. Each rung gives a
    reading: the median equivalent diameter of the nuclei found, in field pixels. Near the true
    scale the model (trained with x1.5 scale jitter) finds the same nuclei on neighbouring rungs, so
    their masks overlap and their readings agree; a field blown up too far makes the model cut
    arbitrary nucleus-sized pieces out of chromatin texture, which move from rung to rung. The
    neighbouring pair whose masks overlap most (IoU, less the log-ratio of their readings) wins, and
    one more pass at the scale it implies refines the reading.
    Raises ScaleEstimateError when no scale yields any nucleus.
    """
    image = check_image(image)
    best: tuple[float, list[float]] | None = None  # (score, the pair's readings)
    single: list[float] = []
    previous: _Rung | None = None
    for candidate in _candidates(image.shape, model.diameter):
        rung = _rung(model, image, candidate)
        if rung.reading is not None:
            single.append(rung.reading)
            if previous is not None and previous.reading is not None:
                score = _overlap(previous, rung) - abs(math.log(previous.reading / rung.reading))
                if best is None or score > best[0]:
                    best = (score, [previous.reading, rung.reading])
        previous = rung
    if not single:
        raise ScaleEstimateError(
            "Found no nuclei at any scale, so the nucleus diameter cannot be estimated. Set the slide's "
            "nucleus diameter (px) by hand, or check that the field shows nucleated cells."
        )
    readings = best[1] if best is not None else [float(np.median(single))]
    refined = _rung(model, image, float(np.sqrt(np.prod(readings)) if len(readings) > 1 else readings[0])).reading
    return float(np.median(readings + ([refined] if refined is not None else [])))


@dataclass(frozen=True, eq=False)
class _Rung:
    """One rung of the scale ladder: what the model found, seen in field pixels."""

    candidate: float
    reading: float | None  # median nucleus diameter found, field px; None when nothing was found
    window: tuple[int, int, int, int]  # (top, left, height, width) of the field it looked at
    mask: np.ndarray  # (height, width) bool, the nuclei found, resized to field pixels


def _rung(model: Segmenter, image: np.ndarray, candidate: float) -> _Rung:
    """Segment the field's darkest window as if its nuclei were `candidate` px wide."""
    scale = model.diameter / candidate
    top, left, height, width = window = _darkest_window(image, scale)
    mask = prob_at_scale(model, image[top:top + height, left:left + width], scale) > model.post.threshold
    reading = _reading(mask, model)
    return _Rung(candidate, None if reading is None else reading / scale, window, nearest_resize(mask, (height, width)))


def _reading(mask: np.ndarray, model: Segmenter) -> float | None:
    """Median equivalent diameter (working px) of the nuclei in a working-scale mask, or None.

    Pieces closer than a tenth of a diameter count as one nucleus (a lobed nucleus whose thin
    strands fell below threshold); nuclei cut by the window's edge and specks are left out, and
    there is no reading when specks hold most of the nucleus area (the field is shrunk too far).
    """
    gap = max(1, round(_GROUP_GAP * model.diameter))
    groups, n = ndimage.label(ndimage.binary_dilation(mask, iterations=gap))
    if n == 0:
        return None
    areas = np.bincount(groups[mask], minlength=n + 1)[1:]
    inside = np.ones(n, bool)
    inside[np.unique(np.concatenate([groups[0], groups[-1], groups[:, 0], groups[:, -1]]))[1:] - 1] = False
    sizes = 2.0 * np.sqrt(areas / math.pi)
    kept = sizes >= model.post.min_diameter * model.diameter
    # Shrunk too far, most nuclei fall below the speck size and only clumps of them remain: no reading.
    if areas[kept].sum() < _MIN_KEPT * areas.sum() or not (kept & inside).any():
        return None
    return float(np.median(sizes[kept & inside]))


def _overlap(a: _Rung, b: _Rung) -> float:
    """IoU of two rungs' nuclei where their windows overlap; 0 when either found nothing there."""
    top, left = max(a.window[0], b.window[0]), max(a.window[1], b.window[1])
    bottom = min(a.window[0] + a.window[2], b.window[0] + b.window[2])
    right = min(a.window[1] + a.window[3], b.window[1] + b.window[3])
    if bottom <= top or right <= left:
        return 0.0
    ma = a.mask[top - a.window[0]:bottom - a.window[0], left - a.window[1]:right - a.window[1]]
    mb = b.mask[top - b.window[0]:bottom - b.window[0], left - b.window[1]:right - b.window[1]]
    union = int((ma | mb).sum())
    return int((ma & mb).sum()) / union if union else 0.0


def _candidates(shape: tuple[int, ...], diameter: float) -> list[float]:
    """Candidate diameters (px) on a geometric ladder through the training diameter."""
    low = math.floor(math.log(_ESTIMATE_MIN_DIAMETER / diameter, _ESTIMATE_STEP))
    high = math.ceil(math.log(min(shape[:2]) / _ESTIMATE_MIN_ACROSS / diameter, _ESTIMATE_STEP))
    return [diameter * _ESTIMATE_STEP**k for k in range(low, high + 1)]


def _darkest_window(image: np.ndarray, scale: float) -> tuple[int, int, int, int]:
    """(top, left, height, width): the part of the field that fits ESTIMATE_PIXELS at this scale,
    where the most dark (multi-Otsu nucleus-class) pixels are."""
    side = int(math.sqrt(ESTIMATE_PIXELS) / scale)
    h, w = image.shape[:2]
    if h * w * scale * scale <= ESTIMATE_PIXELS or side >= min(h, w):
        return 0, 0, h, w
    dark = otsu_mask(image).astype(np.float64)
    sums = np.pad(dark.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    stride = max(1, side // 2)
    best, best_at = -1.0, (0, 0)
    for top in sorted({*range(0, h - side + 1, stride), h - side}):
        for left in sorted({*range(0, w - side + 1, stride), w - side}):
            total = sums[top + side, left + side] - sums[top, left + side] - sums[top + side, left] + sums[top, left]
            if total > best:
                best, best_at = total, (top, left)
    return best_at[0], best_at[1], side, side


def estimate_set_diameter(model: Segmenter, images: Sequence[np.ndarray], max_images: int = 8) -> float:
    """One nucleus diameter for fields from one slide or microscope: the median of per-field estimates.

    Uses up to max_images fields spread over the set; fields without nuclei are skipped. Raises
    ScaleEstimateError when none of them shows a nucleus.
    """
    if not images:
        raise ScaleEstimateError("No fields to estimate the nucleus diameter from.")
    picks = np.unique(np.linspace(0, len(images) - 1, min(max_images, len(images))).round().astype(int))
    estimates = []
    for k in picks:
        try:
            estimates.append(estimate_diameter(model, images[int(k)]))
        except ScaleEstimateError:
            continue
    if not estimates:
        raise ScaleEstimateError(
            f"Found no nuclei in any of {len(picks)} fields at any scale. Set the nucleus diameter (px) by hand."
        )
    return float(np.median(estimates))
