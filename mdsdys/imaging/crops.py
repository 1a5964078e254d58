"""Cutting cells out of patches: square crops (as the paper pads them) and context views."""

from __future__ import annotations

import numpy as np


def pad_to_square(crop: np.ndarray, fill: int = 0) -> np.ndarray:
    """Pad (h, w, 3) to (s, s, 3), s = max(h, w), centring the crop; the paper pads with zeros."""
    h, w = crop.shape[:2]
    side = max(h, w)
    out = np.full((side, side, *crop.shape[2:]), fill, dtype=crop.dtype)
    top, left = (side - h) // 2, (side - w) // 2
    out[top:top + h, left:left + w] = crop
    return out


def cell_crop(image: np.ndarray, box: tuple[int, int, int, int], square: bool = True) -> np.ndarray:
    """The cell's box cut from its patch, (h, w, 3) uint8, padded to a square by default."""
    x, y, w, h = box
    crop = image[max(y, 0):y + h, max(x, 0):x + w]
    return pad_to_square(crop) if square else crop


def context_view(image: np.ndarray, box: tuple[int, int, int, int], zoom_out: float = 3.0,
                 color: tuple[int, int, int] = (0, 200, 255), line: int = 2) -> np.ndarray:
    """The region around a cell, `zoom_out` times its box, with the box outlined: (H', W', 3) uint8."""
    x, y, w, h = box
    height, width = image.shape[:2]
    half_w, half_h = int(w * zoom_out / 2), int(h * zoom_out / 2)
    cx, cy = x + w // 2, y + h // 2
    left, top = max(cx - half_w, 0), max(cy - half_h, 0)
    right, bottom = min(cx + half_w, width), min(cy + half_h, height)
    view = image[top:bottom, left:right].copy()
    draw_box(view, (x - left, y - top, w, h), color, line)
    return view


def draw_box(image: np.ndarray, box: tuple[int, int, int, int], color: tuple[int, int, int], line: int = 2) -> None:
    """Outline a box in place on an (H, W, 3) image, clipped to the image."""
    x, y, w, h = box
    height, width = image.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x1 <= x0 or y1 <= y0:
        return
    image[y0:min(y0 + line, y1), x0:x1] = color
    image[max(y1 - line, y0):y1, x0:x1] = color
    image[y0:y1, x0:min(x0 + line, x1)] = color
    image[y0:y1, max(x1 - line, x0):x1] = color
