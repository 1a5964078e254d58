"""Cells as models see them, without a model runtime: decode and crop fast, pad to a square, resize, thumbnails.

Array conventions:
- `crop`: (h, w, 3) uint8 RGB; `square`: (S, S, 3) uint8, the crop zero-padded to a square
  (as the paper's code pads) and resized to the model's input side S.
- `thumbnail`: a cell's square at THUMBNAIL_SIDE, stored as a JPEG when the cell is stored. Models
  whose input is at most that side read their cells from it (decoding ~4.7 KB instead of a whole cell
  image or field), and so does every other way into such a model (training, evaluation), so all
  of them see the same pixels.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import simplejpeg
from PIL import Image

from mdsdys.imaging.crops import cell_crop, pad_to_square
from mdsdys.imaging.geometry import single_cell_box

Box = tuple[int, int, int, int]  # (x, y, w, h) in patch pixels

# The default classifier's input side (ClsTrainConfig.input_size), so its proposals decode one ~4.7 KB
# JPEG per cell and resize nothing; smaller models resize from it, wider ones (the paper's 75 px
# Inception-v3) cut their cells from the stored images. Full-resolution colour (4:4:4) at quality 98:
# on PBC cells the round trip is 1.0 grey level off on average and at most ~8 (JPEG's default
# half-resolution colour at quality 95: 2.5 and 43, at the edges of granules and nuclei).
THUMBNAIL_SIDE = 64
THUMBNAIL_QUALITY = 98


def square_resize(crop: np.ndarray, size: int) -> np.ndarray:
    """(h, w, 3) uint8 -> (size, size, 3) uint8: zero-pad to a square, then an antialiased resize."""
    square = pad_to_square(crop) if crop.shape[0] != crop.shape[1] else crop
    if square.shape[0] == size:
        return np.ascontiguousarray(square)
    return np.asarray(Image.fromarray(np.ascontiguousarray(square)).resize((size, size), Image.Resampling.BILINEAR))


def decode_crops(data: bytes, boxes: Sequence[Box] | None = None, size: int | None = None) -> list[np.ndarray]:
    """Cut cells from one stored JPEG/PNG, decoding it once; boxes=None is the whole image.

    Returns zero-padded squares, resized to (size, size, 3) when `size` is given. Then a JPEG is
    decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still leaves every box at least `size`
    pixels across, several times faster than a full decode of a 360 px cell image.
    """
    with Image.open(io.BytesIO(data), formats=("JPEG", "PNG")) as img:
        full_w, full_h = img.size
        boxes = [(0, 0, full_w, full_h)] if boxes is None else boxes
        if size and boxes and img.format == "JPEG":
            scale = size / max(1, min(max(w, h) for _, _, w, h in boxes))
            if scale < 1:
                img.draft("RGB", (math.ceil(full_w * scale), math.ceil(full_h * scale)))
        rgb = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
    fx, fy = rgb.shape[1] / full_w, rgb.shape[0] / full_h
    crops = [cell_crop(rgb, _scaled(box, fx, fy), square=False) for box in boxes]
    return [square_resize(c, size) for c in crops] if size else [pad_to_square(c) for c in crops]


def thumbnails_from_image(data: bytes, boxes: Sequence[Box] | None = None) -> list[bytes]:
    """The thumbnails of the cells in one stored JPEG/PNG (boxes=None: the whole image is the cell).

    Import, detection, the demo and a cell stored without one all cut it here, from the stored bytes,
    so a cell's thumbnail is the same whichever cut it. The squares are those decode_crops gives at
    THUMBNAIL_SIDE, the pixels the classifier was benchmarked on before thumbnails existed (a large
    JPEG is decoded at a reduced DCT scale, then resized).
    """
    return [encode_thumbnail(square) for square in decode_crops(data, boxes, THUMBNAIL_SIDE)]


def encode_thumbnail(square: np.ndarray) -> bytes:
    """(THUMBNAIL_SIDE, THUMBNAIL_SIDE, 3) uint8 -> JPEG bytes, full-resolution colour."""
    buffer = io.BytesIO()
    Image.fromarray(square).save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY, subsampling="4:4:4")
    return buffer.getvalue()


def decode_thumbnail(data: bytes, size: int) -> np.ndarray:
    """A stored thumbnail -> (size, size, 3) uint8, size <= THUMBNAIL_SIDE.

    simplejpeg calls libjpeg-turbo as PIL does and gives the same pixels, without PIL's per-image
    overhead, which at this size is most of the cost (0.05 against 0.2 ms per cell, measured).
    """
    square = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False)  # (T, T, 3)
    return square if square.shape[0] == size else square_resize(square, size)


def reads_thumbnails(size: int) -> bool:
    """Whether a model with this input side reads its cells from their thumbnails."""
    return size <= THUMBNAIL_SIDE


def image_square(data: bytes, size: int) -> np.ndarray:
    """A single-cell image file -> (size, size, 3) uint8, cut the way an imported cell reaches a model of that size.

    The cell is cut around the nucleus found in it (mdsdys.imaging.geometry), as import cuts it.
    """
    with Image.open(io.BytesIO(data), formats=("JPEG", "PNG")) as img:
        box = single_cell_box(np.asarray(img.convert("RGB")))
    if reads_thumbnails(size):
        return decode_thumbnail(thumbnails_from_image(data, [box])[0], size)
    return decode_crops(data, [box], size)[0]


def _scaled(box: Box, fx: float, fy: float) -> Box:
    x, y, w, h = box
    x0, y0 = round(x * fx), round(y * fy)
    return x0, y0, max(1, round((x + w) * fx) - x0), max(1, round((y + h) * fy) - y0)
