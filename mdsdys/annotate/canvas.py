"""Canvas geometry for drawing nucleus masks: views of a field, canvas sizes, strokes back to masks.

The canvas shows one view (a tile of the field, scaled to fit); strokes come back as an
RGBA image at canvas size and are mapped back to the view's exact pixel size before they
are merged into the field's mask, so a saved mask always has the field's size (issue 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

NUCLEUS_RGBA = (255, 0, 255, 110)   # translucent magenta: the nucleus stays visible under the brush
# The eraser paints translucent white, so an erased area looks rubbed out (the old opaque green read as
# paint, issue 14). The brush has no green at all; a pixel whose green is over half is mostly eraser,
# which also lets the later of two overlapping strokes win.
ERASE_RGBA = (255, 255, 255, 150)


@dataclass(frozen=True)
class View:
    """A rectangle of a field shown on the canvas, in field pixels."""

    x: int
    y: int
    w: int
    h: int


def plan_views(width: int, height: int, max_side: int = 512) -> list[View]:
    """Split a field into near-equal tiles no larger than max_side on each side, row by row."""
    cols, rows = math.ceil(width / max_side), math.ceil(height / max_side)
    xs = np.linspace(0, width, cols + 1).round().astype(int)
    ys = np.linspace(0, height, rows + 1).round().astype(int)
    return [View(int(xs[i]), int(ys[j]), int(xs[i + 1] - xs[i]), int(ys[j + 1] - ys[j]))
            for j in range(rows) for i in range(cols)]


def canvas_size(view: View, max_canvas: int = 720, max_zoom: float = 3.0) -> tuple[int, int]:
    """Canvas (width, height) showing the view as large as fits, zoomed at most max_zoom."""
    scale = min(max_canvas / view.w, max_canvas / view.h, max_zoom)
    return max(round(view.w * scale), 1), max(round(view.h * scale), 1)


def strokes_to_masks(strokes: np.ndarray, view: View) -> tuple[np.ndarray, np.ndarray]:
    """Canvas RGBA (h', w', 4) → (add, erase) boolean masks of the view's size (view.h, view.w)."""
    alpha = strokes[..., 3] > 0
    erase = alpha & (strokes[..., 1] > 127)
    add = alpha & ~erase
    return _resize_bool(add, view), _resize_bool(erase, view)


def css_rgba(rgba: tuple[int, int, int, int]) -> str:
    """An (r, g, b, a) colour with 0-255 alpha as the CSS string the canvas takes."""
    return "rgba({},{},{},{:.2f})".format(*rgba[:3], rgba[3] / 255)


def _resize_bool(mask: np.ndarray, view: View) -> np.ndarray:
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(image.resize((view.w, view.h), Image.NEAREST)) > 127


def merge_view(base: np.ndarray, view: View, add: np.ndarray, erase: np.ndarray) -> np.ndarray:
    """The field mask (H, W) uint8 255 = nucleus with one view's additions and erasures applied."""
    merged = base.copy()
    region = merged[view.y:view.y + view.h, view.x:view.x + view.w]
    region[add] = 255
    region[erase] = 0
    return merged


def overlay(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 0, 255),
            alpha: float = 0.45) -> np.ndarray:
    """The image (H, W, 3) with the mask tinted over it, for showing a base mask under the canvas."""
    tinted = image.astype(np.float32)
    on = mask > 0
    tinted[on] = (1 - alpha) * tinted[on] + alpha * np.array(color, np.float32)
    return tinted.clip(0, 255).astype(np.uint8)


def view_background(image: np.ndarray, mask: np.ndarray, view: View, size: tuple[int, int]) -> Image.Image:
    """The canvas background: the view's pixels with the current mask tinted, scaled to the canvas."""
    crop = image[view.y:view.y + view.h, view.x:view.x + view.w]
    crop_mask = mask[view.y:view.y + view.h, view.x:view.x + view.w]
    return Image.fromarray(overlay(crop, crop_mask)).resize(size, Image.NEAREST)
