"""Grad-CAM for the Review and Consensus pages: where the active classifier looks on a cell.

CAMs are computed on demand and cached per (model version, cell, class); the fraction of the
CAM's mass outside the nucleus flags a model that looks at the cytoplasm or the background
(the paper saw this for ED called EN).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from sqlite_utils import Database

from mdsdys.classify.cam import CamCache, cam_outside_fraction, overlay
from mdsdys.classify.classifier import Classifier, load_classifier, predict_proba
from mdsdys.errors import MdsdysError
from mdsdys.review.reads import load_cell_view
from mdsdys.store.models import active_model
from mdsdys.store.users import User

_cams = CamCache(maxsize=512)
# A CAM far from the nucleus is worth a second look; the page flags it above this share.
OUTSIDE_WARNING = 0.5


@dataclass(frozen=True)
class CamView:
    """A heatmap over a cell's crop and how much of it falls outside the nucleus."""

    image: np.ndarray            # (S, S, 3) uint8, heatmap blended over the crop
    code: str                    # the class the CAM explains
    outside_fraction: float | None  # share of CAM mass outside the nucleus; None when the nucleus is unknown
    version: str


@functools.lru_cache(maxsize=4)
def _classifier(path: str, version: str) -> Classifier:
    classifier = load_classifier(path)
    classifier.version = version
    return classifier


def cell_grad_cam(db: Database, viewer: User, cell_id: int, code: str | None = None) -> CamView:
    """Grad-CAM of the active classifier on one cell, for `code` (default: its top class)."""
    view = load_cell_view(db, viewer, cell_id, show_proposal=False)
    record = active_model(db, "classifier", view.scheme.name)
    if record is None:
        raise MdsdysError("No classifier for this slide's scheme yet, so there is no Grad-CAM to show.")
    classifier = _classifier(record.path, record.version)
    index = classifier.codes.index(code) if code else int(predict_proba(classifier, [view.crop])[0].argmax())
    cam = _cams.get(classifier, cell_id, view.crop, index)
    outside = cam_outside_fraction(cam, view.nucleus) if view.nucleus is not None else None
    return CamView(overlay(view.crop, cam), classifier.codes[index], outside, record.version)
