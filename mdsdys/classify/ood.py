"""Is a slide unlike the images a model trained on? An out-of-distribution score per cell and per slide (issue 13).

Two parts, each a distance from the model's training cells, kept in the checkpoint as checkpoint["ood"]:
  - colour: statistics of the RAW uint8 square (optical density, background white point, sharpness),
    which catch yellow/blue casts, faint or dark stain and blur or magnification changes;
  - embedding: the network's penultimate features (the input of its final nn.Linear), read through
    forward_logits so they see exactly what its predictions see (each cell's mean over the model's test-time
    views), PCA-whitened plus the PCA residual.
Each distance is divided by its 95th percentile over the model's validation cells, a cell scores the
larger of the two, and that is divided again by the validation 95th percentile: a score of 1 means "as
unusual as the 5% most unusual of this model's own held-out cells", whatever the model. A slide scores
the median of its cells; it is flagged above a threshold set so that validation cells resampled into
slide-sized groups (and each validation slide, when groups are known) are not flagged. What the app
says about a flagged slide lives in mdsdys.report.shift.

Array conventions: `squares` (N, 3, S, S) uint8 torch tensor at the classifier's input side.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mdsdys.classify.archs import embedding_head
from mdsdys.classify.classifier import (
    Classifier,
    calibrated,
    forward_logits,
    predict_squares,
)
from mdsdys.classify.inputs import normalise_colour
from mdsdys.imaging.stain import StainFit

OOD_VERSION = 1
PERCENTILE = 95.0         # validation percentile that each distance and the cell score are divided by
SLIDE_CELLS = 20          # cells per resampled in-domain "slide" when calibrating the threshold (few cells: noisy)
RESAMPLES = 2000          # resampled in-domain slides; the threshold sits above their 99.5th percentile
MAX_FIT_CELLS = 4000      # training cells the reference is fitted on (a random subset beyond that)
PCA_DIM = 16              # embedding directions kept; the rest counts through the residual
SHRINK = 0.1              # covariance shrinkage towards the identity, on standardised features
MIN_CALIBRATION = 10      # fewer validation cells than this: calibrate on training cells as well


@dataclass(frozen=True)
class SlideOOD:
    """A slide's score against one model; score and flagged are None when the model has no reference."""

    score: float | None
    threshold: float | None
    flagged: bool | None
    n_cells: int


def colour_features(squares: torch.Tensor, chunk: int = 512) -> np.ndarray:
    """(N, 3, S, S) uint8 -> (N, 10) float64: foreground OD per channel, OD std per channel,
    background white point (log r/g, log b/g, brightness) and log sharpness (mean |Laplacian| of grey).

    The foreground is each image's darkest 30% of pixels by grey level, the background its brightest
    20%; pixels tied at the edge of either share in it equally.
    """
    if squares.dtype != torch.uint8:
        raise ValueError(f"colour_features reads uint8 squares, got {squares.dtype}.")
    out = [_colour_chunk(squares[i:i + chunk].numpy()) for i in range(0, len(squares), chunk)]
    return np.concatenate(out) if out else np.zeros((0, 10))


_LEVELS = 3 * 255 + 1                                   # grey levels as r + g + b of a uint8 pixel
_DENSITY = -np.log((np.arange(256) + 1.0) / 256.0)      # optical density of each uint8 intensity


def _colour_chunk(x: np.ndarray) -> np.ndarray:
    n, _, height, width = x.shape
    flat = x.reshape(n, 3, height * width)
    od = _DENSITY[flat]                                            # (n, 3, P)
    levels = flat.sum(axis=1, dtype=np.int64)                      # (n, P) grey x 3
    p = levels.shape[1]
    fg = _lowest_means(levels, od, max(1, p * 3 // 10))            # (n, 3)
    white = _lowest_means(_LEVELS - 1 - levels, flat.astype(np.float64), max(1, p // 5)) + 1.0  # (n, 3)
    grey = levels.reshape(n, height, width) / 3.0
    lap = 4 * grey[:, 1:-1, 1:-1] - grey[:, :-2, 1:-1] - grey[:, 2:, 1:-1] - grey[:, 1:-1, :-2] - grey[:, 1:-1, 2:]
    sharp = np.log(np.abs(lap).mean(axis=(1, 2)) + 1.0)
    return np.column_stack([fg, od.std(axis=2), np.log(white[:, 0] / white[:, 1]), np.log(white[:, 2] / white[:, 1]),
                            np.log(white.mean(axis=1)), sharp])


def _lowest_means(levels: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """(n, P) int levels in [0, _LEVELS), (n, C, P) values -> (n, C): each image's mean value over its k lowest levels.

    Counted per level (a histogram, no sort): the pixels of the level that crosses k each count by the
    share of them that fits, so the result does not depend on an order among ties.
    """
    n = len(levels)
    counts = np.bincount((levels + _LEVELS * np.arange(n)[:, None]).ravel(), minlength=n * _LEVELS).reshape(n, _LEVELS)
    below = counts.cumsum(axis=1)
    edge = (below >= k).argmax(axis=1)[:, None]                    # (n, 1) the level that crosses k
    crossing = np.take_along_axis(counts, edge, axis=1)
    share = (k - (np.take_along_axis(below, edge, axis=1) - crossing)) / crossing
    weights = (levels < edge) + share * (levels == edge)           # (n, P): 1 below the edge, the share on it
    return np.matmul(values, weights[:, :, None])[:, :, 0] / k


@contextmanager
def _capture_embeddings(classifier: Classifier) -> Iterator[list[torch.Tensor]]:
    """Keep the input of the classifier's final linear layer on every forward; the hook is removed on exit."""
    kept: list[torch.Tensor] = []
    handle = embedding_head(classifier.net, classifier.arch).register_forward_pre_hook(
        lambda _module, inputs: kept.append(inputs[0].detach().float().cpu()))
    try:
        yield kept
    finally:
        handle.remove()


def embeddings(classifier: Classifier, squares: torch.Tensor, batch_size: int | None = None) -> np.ndarray:
    """(N, 3, S, S) uint8 -> (N, D) float64 penultimate features, through the model's own prediction path."""
    if len(squares) == 0:
        return np.zeros((0, embedding_head(classifier.net, classifier.arch).in_features))
    with _capture_embeddings(classifier) as kept:
        forward_logits(classifier.net, squares, classifier.normalizer, classifier.device, batch_size,
                       classifier.views, classifier.crops)
    return _view_means(kept, classifier.passes)


def _view_means(kept: list[torch.Tensor], passes: int) -> np.ndarray:
    """The hook's per-call features, `passes` consecutive calls per chunk -> (N, D) float64, each cell's mean over its views."""
    chunks = [torch.stack(kept[i:i + passes]).mean(0) for i in range(0, len(kept), passes)]
    return torch.cat(chunks).flatten(1).double().numpy()


def _fit_gaussian(features: np.ndarray) -> dict[str, Any]:
    """Standardise, then a shrunk correlation matrix's inverse: a Mahalanobis distance that a few cells can fit."""
    mean, std = features.mean(axis=0), np.maximum(features.std(axis=0), 1e-6)
    z = (features - mean) / std
    corr = np.cov(z, rowvar=False) if len(z) > 1 else np.eye(z.shape[1])
    corr = np.atleast_2d(corr)
    precision = np.linalg.pinv((1 - SHRINK) * corr + SHRINK * np.eye(len(corr)))
    return {"mean": mean.tolist(), "std": std.tolist(), "precision": precision.tolist()}


def _mahalanobis(part: dict[str, Any], features: np.ndarray) -> np.ndarray:
    z = (features - np.asarray(part["mean"])) / np.asarray(part["std"])
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", z, np.asarray(part["precision"]), z), 0.0))


def _fit_embedding(emb: np.ndarray) -> dict[str, Any]:
    """PCA to PCA_DIM directions, a Gaussian there, and the mean squared residual off them."""
    mean = emb.mean(axis=0)
    _, _, vt = np.linalg.svd(emb - mean, full_matrices=False)
    basis = vt[: min(PCA_DIM, len(vt))]                           # (k, D)
    projected = (emb - mean) @ basis.T
    residual = ((emb - mean - projected @ basis) ** 2).sum(axis=1)
    return {"center": mean.tolist(), "basis": basis.tolist(), "gauss": _fit_gaussian(projected),
            "residual": float(max(residual.mean(), 1e-9))}


def _embedding_distance(part: dict[str, Any], emb: np.ndarray) -> np.ndarray:
    centred, basis = emb - np.asarray(part["center"]), np.asarray(part["basis"])
    projected = centred @ basis.T
    residual = ((centred - projected @ basis) ** 2).sum(axis=1) / part["residual"]
    return np.sqrt(_mahalanobis(part["gauss"], projected) ** 2 + residual)


def _distances(reference: dict[str, Any], colour: np.ndarray, emb: np.ndarray) -> np.ndarray:
    """(N,) the larger of the two distances, each over its validation percentile."""
    d_colour = _mahalanobis(reference["colour"], colour) / reference["colour_scale"]
    d_emb = _embedding_distance(reference["embedding"], emb) / reference["embedding_scale"]
    return np.maximum(d_colour, d_emb)


def _subset(n_all: int, n: int, rng: np.random.Generator) -> torch.Tensor:
    """Indices of at most n of n_all cells, a sorted random subset when there are more."""
    if n_all <= n:
        return torch.arange(n_all)
    return torch.from_numpy(np.sort(rng.choice(n_all, n, replace=False)))


def fit_ood_reference(classifier: Classifier, squares_train: torch.Tensor, squares_val: torch.Tensor,
                      groups_val: Sequence[str] | None = None, seed: int = 0,
                      inputs_train: torch.Tensor | None = None, inputs_val: torch.Tensor | None = None) -> dict[str, Any]:
    """The reference a checkpoint keeps as checkpoint["ood"]: fitted on training cells, calibrated on validation.

    `squares_*` are the raw squares (their colour is compared); `inputs_*` the same cells as the
    network reads them, each slide in the reference stain (their embeddings are compared); without
    them the squares are the inputs. `groups_val`: each validation cell's slide, so that no validation
    slide would be flagged. Plain JSON-able types only.
    """
    rng = np.random.default_rng(seed)
    inputs_train = squares_train if inputs_train is None else inputs_train
    inputs_val = squares_val if inputs_val is None else inputs_val
    pick = _subset(len(squares_train), MAX_FIT_CELLS, rng)
    train, train_in = squares_train[pick], inputs_train[pick]
    if len(train) < 2:
        raise ValueError(f"An OOD reference needs at least 2 training cells, got {len(train)}.")
    enough = len(squares_val) >= MIN_CALIBRATION
    calib = squares_val if enough else torch.cat([squares_val, train])
    calib_in = inputs_val if enough else torch.cat([inputs_val, train_in])
    calib_groups = list(groups_val) if groups_val is not None and enough else None
    reference: dict[str, Any] = {"version": OOD_VERSION, "colour": _fit_gaussian(colour_features(train)),
                                 "embedding": _fit_embedding(embeddings(classifier, train_in))}
    c_colour, c_emb = colour_features(calib), embeddings(classifier, calib_in)
    reference["colour_scale"] = float(max(np.percentile(_mahalanobis(reference["colour"], c_colour), PERCENTILE), 1e-9))
    reference["embedding_scale"] = float(max(np.percentile(
        _embedding_distance(reference["embedding"], c_emb), PERCENTILE), 1e-9))
    combined = _distances(reference | {"cell_scale": 1.0}, c_colour, c_emb)
    reference["cell_scale"] = float(max(np.percentile(combined, PERCENTILE), 1e-9))
    scores = combined / reference["cell_scale"]
    reference["threshold"], reference["calibration"] = _slide_threshold(scores, calib_groups, rng)
    reference["n_train"], reference["n_calibration"] = int(len(train)), int(len(calib))
    return reference


def _slide_threshold(scores: np.ndarray, groups: Sequence[str] | None,
                     rng: np.random.Generator) -> tuple[float, dict[str, Any]]:
    """Above in-domain slides: resampled groups of validation cells (99.5th percentile), each validation
    slide's own median, and never below 1 (half a slide's cells beyond the validation 95th percentile)."""
    size = min(SLIDE_CELLS, len(scores))
    resampled = np.median(scores[rng.integers(0, len(scores), (RESAMPLES, size))], axis=1)
    by_group: dict[str, float] = {}
    if groups is not None:
        labels = np.asarray(list(groups))
        by_group = {str(g): float(np.median(scores[labels == g])) for g in np.unique(labels)}
    resampled_top = float(np.percentile(resampled, 99.5))
    threshold = max(1.0, resampled_top, max(by_group.values(), default=0.0))
    return float(threshold), {"resampled_99_5": resampled_top, "slide_cells": size,
                              "validation_slides": by_group, "validation_median": float(np.median(scores))}


def score_cells(classifier: Classifier, squares: torch.Tensor, batch_size: int | None = None,
                colour: StainFit | None = None) -> np.ndarray:
    """(N,) float64 per-cell scores (1 = the validation 95th percentile); NaN when the model has no reference.

    `squares` are one slide's raw squares; `colour` its colour fit, with which the network reads them
    (without it the squares given are taken as the slide, as predict_squares does).
    """
    if not classifier.ood or len(squares) == 0:
        return np.full(len(squares), np.nan)
    return predict_and_score(classifier, squares, batch_size, colour)[1]


def predict_and_score(classifier: Classifier, squares: torch.Tensor, batch_size: int | None = None,
                      colour: StainFit | None = None, colour_stats: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """((N, C) calibrated probabilities, (N,) OOD scores) of one slide's raw squares, in one pass through the network.

    What predict_squares and score_cells give, with the colour normalised once and each cell read
    once: the proposals' hot path (propose_labels). `colour_stats` are the squares' colour_features when
    they are at hand already (propose_labels computes them on its decoding thread).
    """
    reference = classifier.ood
    if not reference or len(squares) == 0:
        return predict_squares(classifier, squares, batch_size, colour), np.full(len(squares), np.nan)
    inputs = normalise_colour(squares, classifier.stain_reference, colour)
    with _capture_embeddings(classifier) as kept:
        logits = forward_logits(classifier.net, inputs, classifier.normalizer, classifier.device, batch_size,
                                classifier.views, classifier.crops)
    features = _view_means(kept, classifier.passes)
    stats = colour_features(squares) if colour_stats is None else colour_stats
    scores = _distances(reference, stats, features) / reference["cell_scale"]
    return calibrated(logits, classifier.temperature).astype(np.float32), scores


def slide_ood(scores: Sequence[float] | np.ndarray, reference: dict[str, Any] | None) -> SlideOOD:
    """A slide's score (median of its cells' finite scores) and whether it is flagged; unknown without a reference."""
    values = np.asarray([s for s in scores if s is not None], dtype=np.float64)
    values = values[np.isfinite(values)]
    if not reference or values.size == 0:
        return SlideOOD(None, None, None, int(values.size))
    score, threshold = float(np.median(values)), float(reference["threshold"])
    return SlideOOD(score, threshold, score > threshold, int(values.size))
