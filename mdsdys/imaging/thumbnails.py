"""Classifier inputs: decode and crop cells fast, pad to a square, resize, normalise, and augment.

Array conventions:
- `crop`: (h, w, 3) uint8 RGB; `square`: (S, S, 3) uint8, the crop zero-padded to a square
  (as the paper's code pads) and resized to the model's input side S.
- `batch`: (B, 3, S, S) uint8 or float tensors; float images are in [0, 1] before normalising.
- `thumbnail`: a cell's square at THUMBNAIL_SIDE, stored as a JPEG when the cell is stored. Models
  whose input is at most that side read their cells from it (decoding ~4.7 KB instead of a whole cell
  image or field), and so does every other way into such a model (training, evaluation), so all
  of them see the same pixels.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import simplejpeg
import torch
import torch.nn.functional as F
from PIL import Image

from mdsdys.imaging.crops import cell_crop, pad_to_square

Box = tuple[int, int, int, int]  # (x, y, w, h) in patch pixels

# Ruifrok & Johnston (2001) stain vectors as scikit-image's rgb2hed uses them: rows are the
# optical densities of haematoxylin, eosin and DAB. Romanowsky stains (May-Grunwald-Giemsa,
# Wright-Giemsa) are not H&E, but these three directions still span how stain batches differ:
# a bluer or pinker smear, a darker or paler one (Tellez et al. 2018, "HED jitter").
_RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float32)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)
_OD_FLOOR = 1.0 / 255  # transmittance floor: log(0) would make a black pixel infinitely dense

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
    """A single-cell image file -> (size, size, 3) uint8, cut the way a stored cell reaches a model of that size."""
    if reads_thumbnails(size):
        return decode_thumbnail(thumbnails_from_image(data)[0], size)
    return decode_crops(data, None, size)[0]


def _scaled(box: Box, fx: float, fy: float) -> Box:
    x, y, w, h = box
    x0, y0 = round(x * fx), round(y * fy)
    return x0, y0, max(1, round((x + w) * fx) - x0), max(1, round((y + h) * fy) - y0)


def stack_squares(squares: Sequence[np.ndarray]) -> torch.Tensor:
    """List of (S, S, 3) uint8 -> (B, 3, S, S) uint8 tensor."""
    return torch.from_numpy(np.stack(squares)).permute(0, 3, 1, 2).contiguous()


@dataclass(frozen=True)
class Normalizer:
    """Per-channel mean and std of the training crops, stored in the checkpoint with the model."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def fit(cls, batch: torch.Tensor) -> Normalizer:
        """Statistics of a (B, 3, S, S) uint8 batch."""
        x = batch.float().div_(255)
        mean = x.mean(dim=(0, 2, 3))
        std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
        return cls(tuple(float(v) for v in mean), tuple(float(v) for v in std))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) float in [0, 1] -> normalised float."""
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def from_uint8(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) uint8 -> normalised float in the same memory layout, one new tensor (inference)."""
        x = images.float()
        scale = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1) * 255
        return x.sub_(torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1) * 255).div_(scale)


@dataclass(frozen=True)
class AugmentConfig:
    """Random changes a cell crop can undergo without changing its class."""

    # A cell on a smear has no up or down: any rotation and a mirror image are the same cell.
    rotate: bool = True
    flip: bool = True
    # +-10% zoom: nucleus size matters (megaloblastic change, micromegakaryocytes), so keep it mild.
    scale: float = 0.10
    shift: float = 0.04        # fraction of the side; detected boxes are not perfectly centred
    # Per-stain HED scale and bias (Tellez et al. 2018 "HED-light" uses 0.05/0.05; stains vary
    # more between labs than within one, so a little wider).
    hed_scale: float = 0.08
    hed_bias: float = 0.03
    brightness: float = 0.10   # +-10% illumination, as between microscopes and camera settings


def augment(batch: torch.Tensor, generator: torch.Generator, config: AugmentConfig) -> torch.Tensor:
    """(B, 3, S, S) uint8 -> (B, 3, S, S) float in [0, 1], each image jittered independently."""
    x = batch.float().div_(255)
    x = stain_jitter(x, generator, config.hed_scale, config.hed_bias, config.brightness)
    return random_affine(x, generator, config)


def _uniform(generator: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
    return torch.rand(shape, generator=generator) * (high - low) + low


def stain_jitter(x: torch.Tensor, generator: torch.Generator, scale: float, bias: float,
                 brightness: float) -> torch.Tensor:
    """Scale and shift each image's haematoxylin, eosin and DAB optical densities, then its brightness."""
    b = x.shape[0]
    alpha = _uniform(generator, (b, 1, 3), 1 - scale, 1 + scale).to(x.device)
    beta = _uniform(generator, (b, 1, 3), -bias, bias).to(x.device)
    od = -torch.log(x.clamp_min(_OD_FLOOR)).permute(0, 2, 3, 1).reshape(b, -1, 3)  # (B, S*S, 3)
    hed = od @ _HED_FROM_RGB.to(x.device)
    od = (hed * alpha + beta) @ _RGB_FROM_HED.to(x.device)
    out = torch.exp(-od.clamp_min(0)).reshape(b, x.shape[2], x.shape[3], 3).permute(0, 3, 1, 2)
    gain = _uniform(generator, (b, 1, 1, 1), 1 - brightness, 1 + brightness).to(x.device)
    return (out * gain).clamp_(0, 1).contiguous()


def random_affine(x: torch.Tensor, generator: torch.Generator, config: AugmentConfig) -> torch.Tensor:
    """Rotate by any angle, mirror, zoom and shift each image; borders are reflected, not blank."""
    b = x.shape[0]
    angle = _uniform(generator, (b,), 0, 2 * math.pi) if config.rotate else torch.zeros(b)
    mirror = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0) if config.flip else torch.ones(b)
    zoom = _uniform(generator, (b,), 1 - config.scale, 1 + config.scale)
    shift = _uniform(generator, (b, 2), -2 * config.shift, 2 * config.shift)  # grid units span 2
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([
        torch.stack([cos * mirror, -sin, shift[:, 0]], 1),
        torch.stack([sin * mirror, cos, shift[:, 1]], 1),
    ], 1).to(x.device, x.dtype)                                              # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)         # (B, S, S, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
