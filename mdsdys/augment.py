"""Training augmentation for both models, on torch batches: one config, one stain model.

Stain colour varies between labs, stains (Wright, Giemsa, May-Grünwald-Giemsa), scanners and
cameras far more than one training set shows. Each image's stains are unmixed into haematoxylin,
eosin and DAB densities (the HED matrix of `mdsdys.imaging.colour`), scaled, shifted and remixed with
perturbed stain vectors (Tellez et al. 2018), then the camera (white balance, gamma, contrast,
saturation, brightness) and optics (blur, noise) are varied. The segmenter trains with the strong
`SEGMENTER_AUGMENT`; the classifier with the milder `CLASSIFIER_AUGMENT`, because colour and size
carry part of a cell's class.

Array conventions: `rgb` (B, 3, H, W) float32 in [0, 1]; `mask` (B, 1, H, W) float32 in [0, 1];
`batch` (B, 3, S, S) uint8.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from mdsdys.imaging.colour import HED_FROM_RGB, OD_FLOOR, RGB_FROM_HED

_RGB_FROM_HED = torch.from_numpy(RGB_FROM_HED)
_HED_FROM_RGB = torch.from_numpy(HED_FROM_RGB)


@dataclass(frozen=True)
class AugmentConfig:
    """How hard to perturb each training image; stored in the checkpoint with the training config.

    The defaults are the segmenter's (strong); `CLASSIFIER_AUGMENT` is the classifier's.
    """

    # Geometry. A cell on a smear has no up or down: any rotation and a mirror image are the same cell.
    rotate: bool = True
    flip: bool = True
    # Zoom drawn log-uniform in x[1/zoom, zoom]: nuclei vary ~2x within a slide, and an estimated
    # slide scale can be off by 20-30%.
    zoom: float = 1.5
    shift: float = 0.0  # centre offset as a fraction of the side (detected boxes are not perfectly centred)
    # Stain. Each stain's density is multiplied log-uniformly by up to x(1 + stain_scale): HED jitter
    # after Tellez et al. (2018), wide because a new lab's Giemsa can be much paler or darker.
    stain_scale: float = 0.5
    stain_shift: float = 0.08  # add up to ±0.08 OD per stain: background tint of another stain batch
    # Random per-element noise on the stain vectors: hue shifts (bluer or redder nuclei) that scaling
    # the three stains alone cannot make.
    stain_vector_noise: float = 0.12
    # Camera.
    white_balance: float = 0.15  # per-channel gain ±15%: another camera's white point
    brightness: float = 0.0  # one gain per image, ±: the lamp or the exposure
    gamma: float = 1.6  # gamma drawn log-uniform in [1/1.6, 1.6]: another camera's response curve
    contrast: float = 0.3  # contrast x[0.7, 1.3] about the mean
    desaturate: float = 0.5  # blend up to 50% towards grey: faded or over-washed stain
    # Optics.
    blur_p: float = 0.3  # share of images blurred: out-of-focus fields are common in smears
    blur_sigma: float = 0.06  # blur sigma up to 6% of the nucleus diameter (~2 px at 32 px)
    noise: float = 0.03  # Gaussian pixel noise up to 3% of full scale: a noisier camera

    @classmethod
    def from_dict(cls, data: dict) -> AugmentConfig:
        """Rebuild from a checkpoint's dict, including a classifier's from before the configs were one."""
        values = dict(data)
        if "hed_scale" in values:  # the classifier's own config (issue 16 made the two one)
            renamed = {"stain_scale": values.pop("hed_scale"), "stain_shift": values.pop("hed_bias", 0.0),
                       "zoom": 1.0 + values.pop("scale", 0.0)}
            return dataclasses.replace(ISSUE4_CLASSIFIER_AUGMENT, **values, **renamed)
        if "scale" in values:  # the segmenter's: a largest zoom factor
            values["zoom"] = values.pop("scale")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


SEGMENTER_AUGMENT = AugmentConfig()
# The classifier's (issue 13): wider in colour than the segmenter's, so that training spans yellow
# and blue casts, faint and dark stains (each stain x[1/2, 2]), another dye mix's hue, blur and another
# camera's response, on top of the stain normalisation every cell gets first (mdsdys.imaging.stain);
# +-25% zoom for magnification and the nucleus rule's cut. Trained on PBC and scored on BCCD with no
# retraining (25 epochs, normalised): issue 4's light preset called 0.17 of BCCD's white cells right, a
# medium one 0.33, the segmenter's colour ranges 0.43. At 60 epochs under the 99th-percentile colour
# anchor, these ranges against the segmenter's: BCCD 0.724 against 0.597, PBC held-out 0.914 against
# 0.941 (4 test-time views, one run each; docs/notes/issue13-classifier.md).
CLASSIFIER_AUGMENT = AugmentConfig(zoom=1.25, shift=0.05, stain_scale=1.0, stain_shift=0.08, stain_vector_noise=0.15,
                                   white_balance=0.2, brightness=0.15, gamma=1.5, contrast=0.3, desaturate=0.5,
                                   blur_p=0.4, blur_sigma=0.06, noise=0.03)
# The classifier's before issue 13 (+-10% zoom, light HED jitter, +-10% illumination): what a
# checkpoint of that time, which stored only the keys it had, was trained with.
ISSUE4_CLASSIFIER_AUGMENT = AugmentConfig(zoom=1.1, shift=0.04, stain_scale=0.08, stain_shift=0.03,
                                          stain_vector_noise=0.0, white_balance=0.0, brightness=0.10, gamma=1.0,
                                          contrast=0.0, desaturate=0.0, blur_p=0.0, noise=0.0)
NO_AUGMENT = AugmentConfig(rotate=False, flip=False, zoom=1.0, stain_scale=0.0, stain_shift=0.0,
                           stain_vector_noise=0.0, white_balance=0.0, gamma=1.0, contrast=0.0, desaturate=0.0,
                           blur_p=0.0, noise=0.0)


def to_density(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> optical density relative to each image's own bright background.

    The per-image, per-channel 99th percentile counts as white, so a dim lamp, another exposure or
    white balance gives the same input; on a smear the brightest pixels are the glass between cells.
    """
    flat = rgb.flatten(2)  # (B, 3, H*W)
    k = max(1, round(0.99 * flat.shape[-1]))
    white = flat.kthvalue(k, dim=-1).values.clamp_min(0.05)[..., None, None]  # (B, 3, 1, 1)
    return -torch.log((rgb / white).clamp(OD_FLOOR, 1.0))


def _uniform(shape: tuple[int, ...], low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    """Uniform random tensor in [low, high)."""
    return low + (high - low) * torch.rand(shape, generator=gen)


def _log_uniform(shape: tuple[int, ...], largest: float, gen: torch.Generator) -> torch.Tensor:
    """Random factors drawn log-uniform in [1/largest, largest]."""
    return torch.exp(_uniform(shape, -math.log(largest), math.log(largest), gen))


def jitter_stain(rgb: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Unmix into H, E, D densities, scale and shift each, remix with perturbed stain vectors."""
    b, _, h, w = rgb.shape
    od = -torch.log(rgb.clamp_min(OD_FLOOR)).permute(0, 2, 3, 1).reshape(b, h * w, 3)  # (B, HW, 3)
    scale = _log_uniform((b, 3), 1 + cfg.stain_scale, gen)
    shift = _uniform((b, 1, 3), -cfg.stain_shift, cfg.stain_shift, gen)
    vectors = _RGB_FROM_HED.expand(b, 3, 3)
    if cfg.stain_vector_noise:
        vectors = (vectors + cfg.stain_vector_noise * torch.randn((b, 3, 3), generator=gen)).clamp_min(0.01)
        vectors = vectors / vectors.norm(dim=-1, keepdim=True)  # (B, 3 stains, 3 channels), unit rows
    # od -> hed (HED_FROM_RGB), scale each stain, remix (vectors): one (3, 3) matrix per image.
    mix = _HED_FROM_RGB[None] @ torch.diag_embed(scale) @ vectors  # (B, 3, 3)
    od = torch.baddbmm(shift @ vectors, od, mix)  # (B, HW, 3)
    return torch.exp(-od.clamp_min(0)).reshape(b, h, w, 3).permute(0, 3, 1, 2).clamp(0, 1).contiguous()


def jitter_camera(rgb: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """White balance, brightness, gamma, contrast and saturation of another camera and its settings."""
    b = rgb.shape[0]
    rgb = rgb * _uniform((b, 3, 1, 1), 1 - cfg.white_balance, 1 + cfg.white_balance, gen)
    rgb = rgb * _uniform((b, 1, 1, 1), 1 - cfg.brightness, 1 + cfg.brightness, gen)
    rgb = rgb.clamp(0, 1) ** _log_uniform((b, 1, 1, 1), cfg.gamma, gen)
    mean = rgb.mean(dim=(1, 2, 3), keepdim=True)
    rgb = mean + (rgb - mean) * _uniform((b, 1, 1, 1), 1 - cfg.contrast, 1 + cfg.contrast, gen)
    grey = rgb.mean(dim=1, keepdim=True)
    rgb = rgb + (grey - rgb) * _uniform((b, 1, 1, 1), 0.0, cfg.desaturate, gen)
    return rgb.clamp(0, 1)


def jitter_optics(rgb: torch.Tensor, cfg: AugmentConfig, diameter: float, gen: torch.Generator) -> torch.Tensor:
    """Blur a share of the images (defocus) and add pixel noise; `diameter` is the nucleus size in px."""
    if not (cfg.blur_p or cfg.noise):
        return rgb
    out = []
    for image in rgb:  # (3, H, W); blur sigma differs per image
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


def _affine(zoom: float, angle: float, flip: float, sx: float, sy: float, cx: float, cy: float) -> torch.Tensor:
    """(2, 3) affine_grid matrix: a window of sx by sy of the source's [-1, 1] range, centred at (cx, cy)."""
    cos, sin = math.cos(angle), math.sin(angle)
    return torch.tensor([[sx * cos * flip / zoom, -sx * sin / zoom, cx],
                         [sy * sin * flip / zoom, sy * cos / zoom, cy]], dtype=torch.float32)


def _random_pose(cfg: AugmentConfig, gen: torch.Generator) -> tuple[float, float, float]:
    """(zoom, angle, flip) of one random view."""
    zoom = float(_log_uniform((), cfg.zoom, gen)) if cfg.zoom > 1 else 1.0
    angle = float(_uniform((), 0.0, 2 * math.pi, gen)) if cfg.rotate else 0.0
    flip = -1.0 if cfg.flip and float(torch.rand((), generator=gen)) < 0.5 else 1.0
    return zoom, angle, flip


def random_views(images: list[torch.Tensor], masks: list[torch.Tensor], crop: int, cfg: AugmentConfig,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One random crop per source: zoom, any rotation, a flip; -> (B, 3, crop, crop), (B, 1, crop, crop).

    Sources are (3, H, W) images and (1, H, W) masks already at the training scale; rotation by any
    angle includes the 90-degree turns, and reflected borders keep image and mask aligned.
    """
    views, targets = [], []
    for image, mask in zip(images, masks):
        h, w = image.shape[-2:]
        zoom, angle, flip = _random_pose(cfg, gen)
        sx, sy = crop / w, crop / h  # the window spans crop / zoom source pixels
        cx = float(_uniform((), -1.0, 1.0, gen)) * max(0.0, 1 - sx / zoom)
        cy = float(_uniform((), -1.0, 1.0, gen)) * max(0.0, 1 - sy / zoom)
        grid = F.affine_grid(_affine(zoom, angle, flip, sx, sy, cx, cy)[None], [1, 1, crop, crop], align_corners=False)
        both = torch.cat([image, mask], dim=0)[None]  # (1, 4, H, W)
        sampled = F.grid_sample(both, grid, mode="bilinear", padding_mode="reflection", align_corners=False)[0]
        views.append(sampled[:3])
        targets.append(sampled[3:])
    return torch.stack(views), torch.stack(targets)


def augment_batch(images: list[torch.Tensor], masks: list[torch.Tensor], crop: int, diameter: float,
                  cfg: AugmentConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Segmenter: random views with stain, camera and optics jitter -> network input and target."""
    rgb, target = random_views(images, masks, crop, cfg, gen)
    rgb = jitter_optics(jitter_camera(jitter_stain(rgb, cfg, gen), cfg, gen), cfg, diameter, gen)
    return to_density(rgb), target


def augment(batch: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig, diameter: float = 16.0) -> torch.Tensor:
    """Classifier: (B, 3, S, S) uint8 -> (B, 3, S, S) float in [0, 1], each image jittered independently.

    `diameter` is a typical nucleus size in px at this input side, for the blur's scale.
    """
    rgb = batch.float().div_(255)
    rgb = jitter_optics(jitter_camera(jitter_stain(rgb, cfg, gen), cfg, gen), cfg, diameter, gen)
    return _random_pose_batch(rgb, cfg, gen)


def _random_pose_batch(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Rotate, mirror, zoom and shift each whole image; borders are reflected, not blank."""
    thetas = []
    for _ in range(x.shape[0]):
        zoom, angle, flip = _random_pose(cfg, gen)
        cx, cy = (float(v) for v in _uniform((2,), -2 * cfg.shift, 2 * cfg.shift, gen))  # grid units span 2
        thetas.append(_affine(zoom, angle, flip, 1.0, 1.0, cx, cy))
    grid = F.affine_grid(torch.stack(thetas).to(x.device, x.dtype), list(x.shape), align_corners=False)  # (B, S, S, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
