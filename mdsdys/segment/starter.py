"""The shipped starter segmenter: detection for a store that has no segmenter of its own (issue 13 item 3).

Trained on real BCCD nuclei by bench/starter_segmenter.py (model card: models/starter/MODEL_CARD.md).
When a store has its own segmenter too, each slide is detected with whichever of the two draws
nuclei where the slide's stain puts their edges, and, when both do, the more certain on its fields
(`pick_segmenter`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mdsdys.config import STARTER_SEGMENTER
from mdsdys.errors import ScaleEstimateError
from mdsdys.imaging.measure import stain_edge_error
from mdsdys.segment.field import segment_patch
from mdsdys.segment.scale import estimate_diameter
from mdsdys.segment.segmenter import Segmenter, patch_uncertainty

STARTER_DIR = STARTER_SEGMENTER.parent
STARTER_VERSION = "segmenter-starter-bccd-1"
# The store's own segmenter wins unless the starter is clearly more certain: it was trained on this
# lab's own masks, and a few fields' uncertainty is a noisy reading (0.02 is ~10% of a typical value).
OWN_MODEL_MARGIN = 0.02
# Certainty is not correctness: a model from another microscope can be sure of masks twice too big.
# A model whose median nucleus edge is this much further from the stain's than the other's (in
# |log2 area ratio|; 0.5 is ~40% of the area) loses the slide however certain it is.
EDGE_MARGIN = 0.5


@dataclass(frozen=True)
class Choice:
    """Which segmenter detects a slide, and why."""

    name: str  # "own" or "starter"
    uncertainty: dict[str, float]  # mean field uncertainty (0 sure .. 1 unsure) per candidate
    reason: str
    edge_error: dict[str, float] | None = None  # median |log2(stain area / mask area)| per candidate


def slide_uncertainty(model: Segmenter, images: Sequence[np.ndarray], diameter: float | None) -> float:
    """Mean pixel uncertainty (4 p (1 - p)) of a model over some fields, each at the slide's scale.

    Without a slide diameter each field is read at the scale this model itself estimates, so neither
    model is judged at a scale chosen for the other.
    """
    values = []
    for image in images:
        size = diameter
        if size is None:
            try:
                size = estimate_diameter(model, image)
            except ScaleEstimateError:
                values.append(1.0)  # it found no nucleus at any scale: as unsure as can be
                continue
        values.append(patch_uncertainty(model, image, size))
    return float(np.mean(values)) if values else 1.0


def slide_edge_error(model: Segmenter, images: Sequence[np.ndarray], diameter: float | None) -> float:
    """Median distance of a model's nucleus edges from the stain's over some fields (`stain_edge_error`).

    inf when it finds no nucleus whose stain has a clear edge: nothing speaks for it.
    """
    errors = []
    for image in images:
        try:
            found = segment_patch(model, image, diameter)
        except ScaleEstimateError:
            continue
        errors += [e for n in found.nuclei if (e := stain_edge_error(image, n.box, n.mask)) is not None]
    return float(np.median(errors)) if errors else float("inf")


def pick_segmenter(own: Segmenter, starter: Segmenter, images: Sequence[np.ndarray],
                   diameter: float | None) -> Choice:
    """The store's own segmenter or the starter for one slide.

    A new slide has no masks, so Dice cannot choose. Two readings can:
    - where each model puts the nucleus edges against where the slide's stain puts them: a model far
      off (masks twice too big, say) loses, however sure of itself it is;
    - otherwise their mean uncertainty on its fields: a model out of its domain (a stain or
      magnification it never saw) leaves many pixels near p = 0.5, while one that knows the slide is
      sure of nucleus and background alike (the same signal that ranks fields for annotation).
    """
    u = {"own": slide_uncertainty(own, images, diameter), "starter": slide_uncertainty(starter, images, diameter)}
    e = {"own": slide_edge_error(own, images, diameter), "starter": slide_edge_error(starter, images, diameter)}
    if e["starter"] > e["own"] + EDGE_MARGIN:
        return Choice("own", u, f"the starter's nucleus edges are off the stain's on this slide ({e['starter']:.2f} "
                      f"vs {e['own']:.2f})", e)
    if e["own"] > e["starter"] + EDGE_MARGIN:
        return Choice("starter", u, f"the store's own segmenter's nucleus edges are off the stain's on this slide "
                      f"({e['own']:.2f} vs {e['starter']:.2f})", e)
    if u["starter"] < u["own"] - OWN_MODEL_MARGIN:
        return Choice("starter", u, f"the starter is more certain on this slide ({u['starter']:.3f} vs {u['own']:.3f})",
                      e)
    return Choice("own", u, f"the store's own segmenter is as certain or more ({u['own']:.3f} vs {u['starter']:.3f})",
                  e)
