"""Grad-CAM (Selvaraju et al. 2017) with our own hooks, as the paper used it to check the nucleus.

A forward hook keeps the target layer's activation and a tensor hook on that activation keeps its
gradient; both are removed when `_CamHooks` exits, after every call (no hooks leak).

Array conventions: `crop` (h, w, 3) uint8; `cam` (h, w) float32 in [0, 1]; `nucleus_mask` (h, w)
uint8, 255 = nucleus (or bool).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from mdsdys.classify.archs import get_arch
from mdsdys.classify.classifier import Classifier
from mdsdys.classify.inputs import normalise_colour, stack_squares
from mdsdys.imaging.crops import pad_to_square
from mdsdys.imaging.stain import StainFit
from mdsdys.imaging.thumbnails import square_resize

# The deepest listed layer whose grid has at least this many cells across. A 2x2 or 3x3 map (the
# last stage of a ResNet at 64 px) can only say "this quadrant"; with >= 6 across a nucleus a
# third of the crop wide covers >= 2 cells, enough to tell nucleus from cytoplasm.
MIN_CAM_GRID = 6
_grid_choice: dict[tuple[str, int], int] = {}   # (arch, input size) -> index into ArchSpec.cam_layers
_lock = threading.Lock()  # hooks live on shared modules: one Grad-CAM at a time per process


class _CamHooks:
    """Context manager: keep `layer`'s output (forward hook) and its gradient (tensor hook), then remove both."""

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer
        self.activation: torch.Tensor | None = None
        self.gradient: torch.Tensor | None = None
        self._owner = threading.get_ident()
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> Self:
        self._handles.append(self.layer.register_forward_hook(self._keep_activation))
        return self

    def _keep_activation(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if threading.get_ident() != self._owner:  # another thread's forward through the shared model
            return
        self.activation = output
        if output.requires_grad:
            self._handles.append(output.register_hook(self._keep_gradient))

    def _keep_gradient(self, grad: torch.Tensor) -> None:
        self.gradient = grad

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.activation = self.gradient = None


def _grid_sizes(net: nn.Module, layers: list[nn.Module], input_size: int) -> list[int]:
    """Spatial side of each layer's output at this input size, from one dry run."""
    sizes: dict[int, int] = {}

    def keeper(k: int) -> Callable[[nn.Module, tuple, torch.Tensor], None]:
        def keep(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:  # returns None: output unchanged
            sizes[k] = int(output.shape[-1])
        return keep

    handles = [layer.register_forward_hook(keeper(k)) for k, layer in enumerate(layers)]
    try:
        was_training = net.training
        net.eval()
        with torch.no_grad():
            net(torch.zeros(1, 3, input_size, input_size, device=next(net.parameters()).device))
        net.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    return [sizes.get(k, 0) for k in range(len(layers))]


def cam_layer(model: nn.Module, arch: str, input_size: int | None = None) -> nn.Module:
    """The layer Grad-CAM reads: the deepest candidate of `arch` with a grid >= MIN_CAM_GRID at input_size."""
    paths = get_arch(arch).cam_layers
    layers = [model.get_submodule(path) for path in paths]
    if input_size is None:
        return layers[0]
    key = (arch, input_size)
    if key not in _grid_choice:
        sizes = _grid_sizes(model, layers, input_size)
        _grid_choice[key] = next((k for k, side in enumerate(sizes) if side >= MIN_CAM_GRID), len(layers) - 1)
    return layers[_grid_choice[key]]


def grad_cam(classifier: Classifier, crop: np.ndarray, class_index: int | None = None,
             colour: StainFit | None = None) -> np.ndarray:
    """Grad-CAM of one crop for a class (default: the predicted one): (h, w) float32 in [0, 1] at the crop's size.

    `colour` is the crop's slide's colour fit (mdsdys.classify.classifier.slide_colour); without it the
    crop alone is only white-balanced (mdsdys.imaging.stain.MIN_FIT_CELLS).
    """
    net, size = classifier.net, classifier.input_size
    square = normalise_colour(stack_squares([square_resize(crop, size)]), classifier.stain_reference, colour)
    x = classifier.normalizer(square.float().div_(255)).to(classifier.device).requires_grad_(True)
    with _lock:
        layer = cam_layer(net, classifier.arch, size)
        net.eval()
        with _CamHooks(layer) as hooks, torch.enable_grad():
            logits = net(x)                                                  # (1, C)
            k = int(logits.argmax(1)) if class_index is None else int(class_index)
            # autograd.grad runs the backward pass down to the layer without touching any
            # parameter's .grad, so a model shared with other sessions is left as it was.
            torch.autograd.grad(logits[0, k], hooks.activation)
            activation, gradient = hooks.activation.detach(), hooks.gradient.detach()
    weights = gradient.mean(dim=(2, 3), keepdim=True)                        # (1, K, 1, 1)
    cam = torch.relu((weights * activation).sum(1, keepdim=True)).float()    # (1, 1, h', w')
    return _to_crop(cam, crop.shape[:2])


def _to_crop(cam: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """Upsample a (1, 1, h', w') map to the padded square of the crop, cut the padding off, scale to [0, 1]."""
    h, w = shape
    side = max(h, w)
    full = F.interpolate(cam, size=(side, side), mode="bilinear", align_corners=False)[0, 0]
    top, left = (side - h) // 2, (side - w) // 2
    out = full[top:top + h, left:left + w].cpu().numpy().astype(np.float32)
    peak = float(out.max()) if out.size else 0.0
    return out / peak if peak > 0 else np.zeros_like(out)


def _jet(t: np.ndarray) -> np.ndarray:
    """(h, w) in [0, 1] -> (h, w, 3) float in [0, 1], the classic blue-cyan-yellow-red heat scale."""
    t = np.clip(t, 0, 1)[..., None]
    return np.clip(1.5 - np.abs(4 * t - np.array([3.0, 2.0, 1.0])), 0, 1)


def overlay(crop: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The crop with the CAM as a heatmap over it: (h, w, 3) uint8; cold regions stay visible."""
    if cam.shape != crop.shape[:2]:
        raise ValueError(f"CAM {cam.shape} does not match the crop {crop.shape[:2]}.")
    weight = (alpha * np.clip(cam, 0, 1))[..., None]                         # (h, w, 1)
    mixed = (1 - weight) * crop.astype(np.float32) + weight * 255 * _jet(cam)
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def cam_outside_fraction(cam: np.ndarray, nucleus_mask: np.ndarray) -> float:
    """Fraction of the CAM's mass outside the nucleus (0 = all on the nucleus); NaN for an empty CAM.

    A mask of another shape (the cell's unpadded box) is zero-padded to a square like the crop
    and resized to the CAM with nearest-neighbour sampling.
    """
    mask = np.asarray(nucleus_mask) > 0
    if mask.shape != cam.shape:
        square = pad_to_square(mask.astype(np.uint8) * 255)
        mask = np.asarray(Image.fromarray(square).resize(cam.shape[::-1], Image.Resampling.NEAREST)) > 0
    total = float(np.sum(cam, dtype=np.float64))
    return float(np.sum(cam[~mask], dtype=np.float64)) / total if total > 0 else float("nan")


# The warning flags the cells on which this model looks further outside the nucleus than on 95% of its
# own held-out cells: about 1 in 20 in-distribution cells, so a flag means "unusual", not "every cell".
CAM_WARNING_PERCENTILE = 95.0
MIN_CAM_CALIBRATION_CELLS = 20  # fewer cells give too rough a 95th percentile to warn on


def calibrate_cam_warning(classifier: Classifier, crops: Sequence[np.ndarray], nuclei: Sequence[np.ndarray | None],
                          percentile: float = CAM_WARNING_PERCENTILE,
                          colours: Sequence[StainFit | None] | None = None) -> dict[str, Any]:
    """The outside-nucleus share that `percentile` % of these cells stay under, with the Grad-CAM of the top class.

    Returns {"threshold", "percentile", "n", "median", "diffuse"}; threshold is None when fewer than
    MIN_CAM_CALIBRATION_CELLS cells have a nucleus mask, and when the percentile is the whole CAM
    (`diffuse`: on over 100 - percentile % of the cells the model looked wholly outside the nucleus,
    so no share could be above it and a warning would never fire).
    """
    colours = colours or [None] * len(crops)  # one slide colour fit per crop, from training; else per crop
    fractions = [cam_outside_fraction(grad_cam(classifier, crop, colour=colour), nucleus)
                 for crop, nucleus, colour in zip(crops, nuclei, colours) if nucleus is not None and np.any(nucleus)]
    fractions = [f for f in fractions if not math.isnan(f)]
    if len(fractions) < MIN_CAM_CALIBRATION_CELLS:
        return {"threshold": None, "percentile": percentile, "n": len(fractions), "median": None, "diffuse": False}
    threshold = float(np.percentile(fractions, percentile))
    diffuse = threshold >= 1.0 - 1e-6
    return {"threshold": None if diffuse else threshold, "percentile": percentile,
            "n": len(fractions), "median": float(np.median(fractions)), "diffuse": diffuse}


def cam_is_unusual(outside_fraction: float | None, threshold: float | None) -> bool | None:
    """Whether a cell's outside-nucleus share is above the model's calibrated threshold; None if either is unknown."""
    if outside_fraction is None or threshold is None or math.isnan(outside_fraction):
        return None
    return outside_fraction > threshold


class CamCache:
    """A small thread-safe LRU of CAMs keyed by (model version, cell id, class index)."""

    def __init__(self, maxsize: int = 256) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, classifier: Classifier, cell_id: int, crop: np.ndarray, class_index: int,
            colour: StainFit | None = None) -> np.ndarray:
        """The cached CAM, computing it on a miss (`colour`: the cell's slide's colour fit)."""
        key = (classifier.version or id(classifier.net), cell_id, class_index)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        cam = grad_cam(classifier, crop, class_index, colour)
        with self._lock:
            self._items[key] = cam
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
        return cam

    def __len__(self) -> int:
        return len(self._items)
