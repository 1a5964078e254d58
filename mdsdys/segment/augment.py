"""Colour and geometry augmentation for segmenter training, on torch batches.

Stain colour varies between labs, stains (Wright, Giemsa, May-Grünwald-Giemsa), scanners and
cameras far more than one training set shows, so the colour augmentation is deliberately strong:
HED stain jitter after Tellez et al. 2018, with random stain vectors, white balance,
gamma, contrast, blur and noise. Every image is then reduced to optical density relative to its own
background (`to_density`), which removes exposure and white balance exactly.

Array conventions: `rgb` (B, 3, H, W) float32 in [0, 1]; `mask` (B, 1, H, W) float32 in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

# Ruifrok & Johnston 2001 stain vectors (rows: haematoxylin, eosin, DAB), as skimage.color.rgb2hed uses.
RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)
_MIN_RGB = 1.0 / 255.0  # the darkest 8-bit value: keeps log() finite


@dataclass(frozen=True)
class AugmentConfig:
    """How hard to perturb each training crop; stored in the checkpoint with the training config."""

    # Multiply each stain's density by up to x1.5 or /1.5: HED jitter after Tellez et al. (2018), with
    # a wide range because a new lab's Giemsa can be much paler or darker than the training slides.
    stain_scale: float = 0.5
    stain_shift: float = 0.08  # add up to ±0.08 OD per stain: background tint of another stain batch
    # Random per-element noise on the stain vectors: hue shifts (bluer or redder nuclei) that scaling
    # the three stains alone cannot make.
    stain_vector_noise: float = 0.12
    white_balance: float = 0.15  # per-channel gain ±15%: another camera's white point
    gamma: float = 1.6  # gamma drawn log-uniform in [1/1.6, 1.6]: another camera's response curve
    contrast: float = 0.3  # contrast x[0.7, 1.3] about the mean
    desaturate: float = 0.5  # blend up to 50% towards grey: faded or over-washed stain
    blur_p: float = 0.3  # share of crops blurred: out-of-focus fields are common in smears
    blur_sigma: float = 0.06  # blur sigma up to 6% of the nucleus diameter (~2 px at 32 px)
    noise: float = 0.03  # Gaussian pixel noise up to 3% of full scale: a noisier camera
    # Scale jitter, log-uniform x[1/1.5, 1.5]: nuclei vary ~2x within a slide, and an estimated
    # slide scale can be off by 20-30%.
    scale: float = 1.5


def to_density(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> optical density relative to each image's own bright background.

    The per-image, per-channel 99th percentile counts as white, so a dim lamp, another exposure or
    white balance gives the same input; on a smear the brightest pixels are the glass between cells.
    """
    flat = rgb.flatten(2)  # (B, 3, H*W)
    k = max(1, round(0.99 * flat.shape[-1]))
    white = flat.kthvalue(k, dim=-1).values.clamp_min(0.05)[..., None, None]  # (B, 3, 1, 1)
    return -torch.log((rgb / white).clamp(_MIN_RGB, 1.0))


def _uniform(shape: tuple[int, ...], low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    """Uniform random tensor in [low, high)."""
    return low + (high - low) * torch.rand(shape, generator=gen)


def jitter_stain(rgb: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Unmix into H, E, D densities, scale and shift each, remix with perturbed stain vectors."""
    b, _, h, w = rgb.shape
    od = -torch.log(rgb.clamp_min(_MIN_RGB)).permute(0, 2, 3, 1).reshape(b, h * w, 3)  # (B, HW, 3)
    scale = torch.exp(_uniform((b, 3), -math.log1p(cfg.stain_scale), math.log1p(cfg.stain_scale), gen))
    shift = _uniform((b, 1, 3), -cfg.stain_shift, cfg.stain_shift, gen)
    vectors = (RGB_FROM_HED + cfg.stain_vector_noise * torch.randn((b, 3, 3), generator=gen)).clamp_min(0.01)
    vectors = vectors / vectors.norm(dim=-1, keepdim=True)  # (B, 3 stains, 3 channels), unit rows
    # od -> hed (HED_FROM_RGB), scale each stain, remix (vectors): one (3, 3) matrix per image.
    mix = HED_FROM_RGB[None] @ torch.diag_embed(scale) @ vectors  # (B, 3, 3)
    od = torch.baddbmm(shift @ vectors, od, mix)  # (B, HW, 3)
    return torch.exp(-od.clamp_min(0)).reshape(b, h, w, 3).permute(0, 3, 1, 2).clamp(0, 1).contiguous()


def jitter_camera(rgb: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """White balance, gamma, contrast and saturation changes of another camera and its settings."""
    b = rgb.shape[0]
    rgb = rgb * _uniform((b, 3, 1, 1), 1 - cfg.white_balance, 1 + cfg.white_balance, gen)
    gamma = torch.exp(_uniform((b, 1, 1, 1), -math.log(cfg.gamma), math.log(cfg.gamma), gen))
    rgb = rgb.clamp(0, 1) ** gamma
    mean = rgb.mean(dim=(1, 2, 3), keepdim=True)
    rgb = mean + (rgb - mean) * _uniform((b, 1, 1, 1), 1 - cfg.contrast, 1 + cfg.contrast, gen)
    grey = rgb.mean(dim=1, keepdim=True)
    rgb = rgb + (grey - rgb) * _uniform((b, 1, 1, 1), 0.0, cfg.desaturate, gen)
    return rgb.clamp(0, 1)


def jitter_optics(rgb: torch.Tensor, cfg: AugmentConfig, diameter: float, gen: torch.Generator) -> torch.Tensor:
    """Blur a share of the crops (defocus) and add pixel noise; `diameter` is the nucleus size in px."""
    out = []
    for image in rgb:  # (3, H, W); blur sigma differs per crop
        if float(torch.rand((), generator=gen)) < cfg.blur_p:
            image = gaussian_blur(image[None], float(_uniform((), 0.3, cfg.blur_sigma * diameter, gen)))[0]
        out.append(image)
    noise = cfg.noise * torch.rand((rgb.shape[0], 1, 1, 1), generator=gen)
    return (torch.stack(out) + noise * torch.randn(rgb.shape, generator=gen)).clamp(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with reflected borders."""
    radius = max(1, math.ceil(2.5 * sigma))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype) / sigma) ** 2)
    taps = taps / taps.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(), groups=c)
    return F.conv2d(x, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(), groups=c)


def random_views(images: list[torch.Tensor], masks: list[torch.Tensor], crop: int, cfg: AugmentConfig,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One random crop per source: scale jitter, any rotation, a flip; -> (B, 3, crop, crop), (B, 1, crop, crop).

    Sources are (3, H, W) images and (1, H, W) masks already at the training scale; rotation by any
    angle includes the 90-degree turns, and reflected borders keep image and mask aligned.
    """
    views, targets = [], []
    for image, mask in zip(images, masks):
        theta = _random_affine(image.shape[-2:], crop, cfg.scale, gen)
        grid = F.affine_grid(theta[None], [1, 1, crop, crop], align_corners=False)
        both = torch.cat([image, mask], dim=0)[None]  # (1, 4, H, W)
        sampled = F.grid_sample(both, grid, mode="bilinear", padding_mode="reflection", align_corners=False)[0]
        views.append(sampled[:3])
        targets.append(sampled[3:])
    return torch.stack(views), torch.stack(targets)


def _random_affine(size: torch.Size, crop: int, max_scale: float, gen: torch.Generator) -> torch.Tensor:
    """(2, 3) affine_grid matrix: a crop x crop window of an (H, W) source, zoomed, rotated, flipped."""
    h, w = int(size[0]), int(size[1])
    zoom = math.exp(float(_uniform((), -math.log(max_scale), math.log(max_scale), gen)))
    angle = float(_uniform((), 0.0, 2 * math.pi, gen))
    flip = -1.0 if float(torch.rand((), generator=gen)) < 0.5 else 1.0
    # Normalised coordinates: the window spans crop/zoom source pixels of the source's [-1, 1] range.
    sx, sy = crop / zoom / w, crop / zoom / h
    cos, sin = math.cos(angle), math.sin(angle)
    cx = float(_uniform((), -1.0, 1.0, gen)) * max(0.0, 1 - sx)
    cy = float(_uniform((), -1.0, 1.0, gen)) * max(0.0, 1 - sy)
    return torch.tensor([[sx * cos * flip, -sx * sin, cx], [sy * sin * flip, sy * cos, cy]], dtype=torch.float32)


def augment_batch(images: list[torch.Tensor], masks: list[torch.Tensor], crop: int, diameter: float,
                  cfg: AugmentConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random views of the sources with stain, camera and optics jitter -> network input and target."""
    rgb, target = random_views(images, masks, crop, cfg, gen)
    rgb = jitter_optics(jitter_camera(jitter_stain(rgb, cfg, gen), cfg, gen), cfg, diameter, gen)
    return to_density(rgb), target
