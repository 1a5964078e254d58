"""Classifier inputs as tensors: stacking squares into batches, the slide's colour normalisation, the per-channel normaliser.

Array conventions: `square` (S, S, 3) uint8; `batch` (B, 3, S, S) uint8 or float tensors, float images
in [0, 1] before normalising.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mdsdys.imaging.stain import StainFit, fit_stain, normalise_squares

# A slide's colour is fitted on at most this many of its cells (evenly spread): ~1.6 M pixels at 64 px.
SLIDE_FIT_CELLS = 400


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


def fit_slide_colour(squares: torch.Tensor | np.ndarray, max_cells: int = SLIDE_FIT_CELLS) -> StainFit:
    """One slide's colour fit from its cells' squares ((N, 3, S, S) tensor or (N, S, S, 3) array), evenly sampled."""
    array = _hwc(squares)
    step = max(1, len(array) // max_cells)
    return fit_stain(array[::step][:max_cells])


def normalise_colour(squares: torch.Tensor, reference: StainFit | None, fit: StainFit | None = None) -> torch.Tensor:
    """(N, 3, S, S) uint8 of one slide -> the same in the reference's colour (mdsdys.imaging.stain).

    `fit` is the slide's (fit_slide_colour); without one the squares given are the slide. A model
    trained before issue 13 has no reference and gets its squares as they are.
    """
    if reference is None or squares.numel() == 0:
        return squares
    array = _hwc(squares)
    out = normalise_squares(array, fit or fit_stain(array), reference)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _hwc(squares: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(squares, torch.Tensor):
        return squares.permute(0, 2, 3, 1).cpu().numpy()
    return np.asarray(squares)
