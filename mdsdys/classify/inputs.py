"""Classifier inputs as tensors: stacking squares into batches and the per-channel normaliser.

Array conventions: `square` (S, S, 3) uint8; `batch` (B, 3, S, S) uint8 or float tensors, float images
in [0, 1] before normalising.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


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
