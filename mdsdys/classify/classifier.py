"""Using a trained cell classifier: the Classifier bundle, checkpoints back to models, batched prediction.

Training lives in mdsdys.classify.train. Array conventions: `crop` (h, w, 3) uint8 RGB of any size;
`squares` (N, 3, S, S) uint8 at the classifier's input side S; probabilities (N, C) in scheme order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mdsdys.checkpoints import load_checkpoint
from mdsdys.classify.archs import create_model
from mdsdys.classify.inputs import Normalizer, fit_slide_colour, normalise_colour, stack_squares
from mdsdys.compute import inference_autocast, inference_batch, memory_format, pick_device
from mdsdys.errors import SchemeError
from mdsdys.imaging.stain import StainFit
from mdsdys.imaging.thumbnails import square_resize
from mdsdys.schemes import LabelScheme, scheme_from_mapping


class CellSample(NamedTuple):
    """One labelled cell for training: a plain (crop, code, group) tuple works too."""

    crop: np.ndarray        # (h, w, 3) uint8 RGB, any size; padded to a square and resized in training
    code: str               # class code of the scheme
    group: str              # slide case id: one patient's cells stay on one side of every split
    cell_id: int | None = None
    # (h', w') uint8 nucleus mask (255 = nucleus) over the crop's cell, any size: padded to a square and
    # resized like the crop; None when unknown. Used only to calibrate the Grad-CAM warning (issue 14).
    nucleus: np.ndarray | None = None


@dataclass
class Classifier:
    """A trained network with everything needed to use it on crops."""

    net: nn.Module
    arch: str
    scheme: LabelScheme
    input_size: int
    normalizer: Normalizer
    temperature: float = 1.0
    version: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # Share of Grad-CAM mass outside the nucleus above which a cell is unusual for this model: a high
    # percentile over its own held-out cells (classify.cam.calibrate_cam_warning); None for a model
    # trained before issue 14 or without nucleus masks.
    cam_warning: float | None = None
    # True when that calibration found the model's Grad-CAM wholly outside the nucleus on too many of its
    # own cells to set a threshold (classify.cam.calibrate_cam_warning): no cell is flagged, and no
    # other cells' calibration replaces it.
    cam_diffuse: bool = False
    # The stain every cell is normalised to before the network (issue 13), with each slide's own fit
    # (mdsdys.classify.inputs.normalise_colour); None for a model trained before it, which reads raw colour.
    stain_reference: StainFit | None = None
    # The training set's colour statistics and embeddings that slides are compared with (classify.ood,
    # issue 13); None for a model trained before it: its slides' OOD score is "unknown".
    ood: dict[str, Any] | None = None
    # How many orientations of each cell its prediction averages (dihedral_view); 1 for a model trained
    # before test-time views (issue 13), whose predictions stay as they were.
    views: int = 1
    # At what shares of the square's side it reads each orientation (central_view): (1.0,) reads the
    # square as given, as every model from before the crops did.
    crops: tuple[float, ...] = (1.0,)

    @property
    def passes(self) -> int:
        """Forward passes per cell: every orientation at every crop."""
        return self.views * len(self.crops)

    @property
    def codes(self) -> tuple[str, ...]:
        """Class codes in output order."""
        return self.scheme.codes


# Cells whose colour is normalised together (its float working copies bound the memory of a large set).
COLOUR_CHUNK = 256
# A cell on a smear has no up or down: the first MAX_VIEWS orientations of the square's dihedral group.
MAX_VIEWS = 8
# Test-time crops: at most this many, each a share of the side in [MIN_CROP, 1].
MAX_CROPS = 4
MIN_CROP = 0.5


def dihedral_view(x: torch.Tensor, view: int) -> torch.Tensor:
    """(..., S, S) -> the same squares in orientation `view` (0 = as given; 1-3 mirrored or turned; 4-7 transposed)."""
    if not 0 <= view < MAX_VIEWS:
        raise ValueError(f"view must be 0..{MAX_VIEWS - 1}, got {view}")
    if view >= 4:
        x, view = x.transpose(-2, -1), view - 4
    return {0: x, 1: x.flip(-1), 2: x.flip(-2), 3: x.flip(-2, -1)}[view]


def central_view(x: torch.Tensor, share: float) -> torch.Tensor:
    """(B, C, S, S) float -> the central `share` of each square's side, enlarged back to S (1.0: as given)."""
    side = x.shape[-1]
    inner = round(side * share)
    if inner >= side:
        return x
    start = (side - inner) // 2
    return F.interpolate(x[..., start:start + inner, start:start + inner], size=(side, side), mode="bilinear",
                         align_corners=False)


def check_crops(crops: Sequence[float]) -> tuple[float, ...]:
    """Test-time crops as a tuple, or ValueError: 1 to MAX_CROPS shares of the side in [MIN_CROP, 1]."""
    values = tuple(crops) if isinstance(crops, (list, tuple)) else ()
    if not 1 <= len(values) <= MAX_CROPS or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and MIN_CROP <= v <= 1.0 for v in values):
        raise ValueError(f"test_crops must be 1 to {MAX_CROPS} shares of the side in [{MIN_CROP}, 1]; got {crops!r}.")
    return tuple(float(v) for v in values)


@torch.inference_mode()
def forward_logits(net: nn.Module, images: torch.Tensor, normalizer: Normalizer, device: torch.device,
                   batch_size: int | None = None, views: int = 1, crops: Sequence[float] = (1.0,)) -> torch.Tensor:
    """(N, 3, S, S) uint8 images -> (N, C) float32 logits on the CPU, the network in eval mode.

    `batch_size` images go through the network at a time (None: the device's, compute.inference_batch),
    in the device's inference precision (compute.inference_autocast). Each image's logits are the mean
    over its first `views` orientations (dihedral_view), each read at every share of the side in
    `crops` (central_view), one view of a chunk after another: a forward hook on the network sees
    views x len(crops) consecutive calls per chunk (classify.ood averages its embeddings the same way).
    """
    net.eval()
    out = []
    fmt = memory_format(device)
    for chunk in torch.split(images, batch_size or inference_batch(device)):
        x = normalizer.from_uint8(chunk.to(device).contiguous(memory_format=fmt))
        with inference_autocast(device):
            logits = [net(dihedral_view(cropped, v).contiguous(memory_format=fmt)).float()
                      for cropped in (central_view(x, share) for share in crops) for v in range(views)]
        out.append(torch.stack(logits).mean(0).cpu())
    return torch.cat(out) if out else torch.zeros((0, 0))


def classifier_from_checkpoint(checkpoint: dict[str, Any], device: torch.device | None = None) -> Classifier:
    """Rebuild a Classifier (eval mode) from a checkpoint dict written by train_classifier."""
    if checkpoint.get("kind") != "classifier":
        raise SchemeError(f"This checkpoint holds a {checkpoint.get('kind')!r} model, not a classifier.")
    scheme = scheme_from_mapping(checkpoint["scheme"])
    device = device or pick_device()
    net = create_model(checkpoint["arch"], len(scheme.codes))
    net.load_state_dict(checkpoint["state_dict"])
    net.to(device, memory_format=memory_format(device)).eval()
    norm = checkpoint["normalizer"]
    views = checkpoint.get("test_views", 1)
    if not isinstance(views, int) or not 1 <= views <= MAX_VIEWS:
        raise SchemeError(f"This classifier checkpoint asks for {views!r} test-time views; 1 to {MAX_VIEWS} can be read.")
    try:
        crops = check_crops(checkpoint.get("test_crops", (1.0,)))
    except ValueError as error:
        raise SchemeError(f"This classifier checkpoint's test-time crops cannot be read: {error}") from None
    colour = checkpoint.get("colour")
    reference = StainFit.from_dict(colour["reference"]) if isinstance(colour, dict) and colour.get("reference") else None
    cam_warning, cam_diffuse = _cam_calibration(checkpoint)
    return Classifier(net, checkpoint["arch"], scheme, int(checkpoint["input_size"]),
                      Normalizer(tuple(norm["mean"]), tuple(norm["std"])), float(checkpoint["temperature"]),
                      checkpoint.get("version"), device, cam_warning=cam_warning, cam_diffuse=cam_diffuse,
                      stain_reference=reference,
                      ood=checkpoint.get("ood") if isinstance(checkpoint.get("ood"), dict) else None, views=views,
                      crops=crops)


def _cam_calibration(checkpoint: dict[str, Any]) -> tuple[float | None, bool]:
    """(threshold, diffuse) of the checkpoint's Grad-CAM calibration (see Classifier.cam_warning and cam_diffuse).

    A threshold of 1.0 from before `diffuse` was kept is one no share can exceed: read as diffuse.
    """
    warning = checkpoint.get("cam_warning")
    if not isinstance(warning, dict):
        return None, False
    threshold = None if warning.get("threshold") is None else float(warning["threshold"])
    if threshold is not None and threshold >= 1.0 - 1e-6:
        return None, True
    return threshold, bool(warning.get("diffuse"))


def load_classifier(path: Path | str, device: torch.device | None = None) -> Classifier:
    """Load a classifier checkpoint file (see mdsdys.registry.versions)."""
    return classifier_from_checkpoint(load_checkpoint(path), device)


def calibrated(logits: torch.Tensor, temperature: float) -> np.ndarray:
    """(N, C) logits -> (N, C) float64 probabilities, softmax(logits / T)."""
    return torch.softmax(logits.double() / temperature, dim=1).numpy()


def slide_colour(classifier: Classifier, squares: torch.Tensor) -> StainFit | None:
    """The colour fit of one slide's cells ((N, 3, S, S) uint8) for this model; None if it reads raw colour."""
    return fit_slide_colour(squares) if classifier.stain_reference is not None else None


def predict_squares(classifier: Classifier, squares: torch.Tensor, batch_size: int | None = None,
                    colour: StainFit | None = None) -> np.ndarray:
    """(N, 3, S, S) uint8 of one slide at the classifier's input size -> (N, C) calibrated probabilities.

    `colour` is the slide's fit (slide_colour); without it the squares given are taken as the slide.
    `batch_size` images go through the network at a time (None: the device's).
    """
    squares = normalise_colour(squares, classifier.stain_reference, colour)
    logits = forward_logits(classifier.net, squares, classifier.normalizer, classifier.device, batch_size,
                            classifier.views, classifier.crops)
    return calibrated(logits, classifier.temperature).astype(np.float32)


def predict_proba(classifier: Classifier, crops: Sequence[np.ndarray], batch_size: int | None = None,
                  colour: StainFit | None = None) -> np.ndarray:
    """Crops of one slide, any size, (h, w, 3) uint8 each -> (N, C) calibrated probabilities, in scheme order.

    Without `colour` (the slide's fit) the colour is fitted on the crops given together.
    """
    if len(crops) == 0:
        return np.zeros((0, len(classifier.codes)), dtype=np.float32)
    squares = stack_squares([square_resize(c, classifier.input_size) for c in crops])
    colour = colour or slide_colour(classifier, squares)
    return np.concatenate([predict_squares(classifier, chunk, batch_size, colour)
                           for chunk in torch.split(squares, COLOUR_CHUNK)])


def check_scheme(classifier: Classifier, scheme: LabelScheme, slide: str) -> None:
    """Raise SchemeError when the classifier was trained for another scheme than the slide's."""
    if classifier.scheme.name != scheme.name or classifier.codes != scheme.codes:
        raise SchemeError(
            f"Model {classifier.version or '(unsaved)'} was trained for scheme {classifier.scheme.name!r} "
            f"({', '.join(classifier.codes)}), but slide {slide!r} uses {scheme.name!r} ({', '.join(scheme.codes)}). "
            f"Train a classifier for it: mdsdys train classifier --scheme {scheme.name}"
        )


def predict_by_slide(classifier: Classifier, samples: Sequence[CellSample]) -> np.ndarray:
    """(N, C) calibrated probabilities of labelled cells from several slides, each slide's colour fitted on its cells here."""
    out = np.zeros((len(samples), len(classifier.codes)), dtype=np.float32)
    groups: dict[str, list[int]] = {}
    for i, sample in enumerate(samples):
        groups.setdefault(sample.group, []).append(i)
    for idx in groups.values():
        out[idx] = predict_proba(classifier, [samples[i].crop for i in idx])
    return out
