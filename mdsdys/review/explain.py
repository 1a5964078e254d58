"""Grad-CAM for the Review and Consensus pages: where the active classifier looks on a cell.

CAMs are computed on demand and cached per (model version, cell, class); the fraction of the
CAM's mass outside the nucleus flags a cell on which the model looks at the cytoplasm or the
background (the paper saw this for ED called EN). Every CAM has much of its mass outside the
nucleus (the nucleus is a small part of the crop), so the flag is judged against the model's own
cells: the threshold is the 95th percentile over its held-out cells, stored in its checkpoint when
it was trained (issue 14). A model trained before that, or on cells without nucleus masks (imported
single cells), is judged against the 95th percentile over this slide's own cells instead.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlite_utils import Database

from mdsdys.classify.cam import (
    CAM_WARNING_PERCENTILE,
    CamCache,
    calibrate_cam_warning,
    cam_is_unusual,
    cam_outside_fraction,
    overlay,
)
from mdsdys.classify.classifier import Classifier, load_classifier, predict_proba
from mdsdys.classify.proposals import slide_colour_fit
from mdsdys.errors import MdsdysError
from mdsdys.imaging.crops import cell_crop
from mdsdys.imaging.decode import read_rgb
from mdsdys.imaging.stain import StainFit
from mdsdys.review.reads import load_cell_view
from mdsdys.store.cells import count_cells, list_cells
from mdsdys.store.models import active_model
from mdsdys.store.patches import Cell, get_patch_image
from mdsdys.store.users import User

_cams = CamCache(maxsize=512)
# The fixed threshold used before issue 14: it fired on nearly every cell (bench/cam_warning.py).
OLD_OUTSIDE_WARNING = 0.5
# A model without its own calibration is judged on this many of the slide's cells: ~1 s of Grad-CAMs on
# a CPU at 64 px, once per model version and slide.
SLIDE_CALIBRATION_CELLS = 60
_slide_warnings: dict[tuple[str | None, int], dict] = {}
# Each slide's colour fit for a model (issue 13), as propose_labels fits it: refitted when its cells change.
_slide_colours: dict[tuple[str | None, int, int], StainFit | None] = {}


@dataclass(frozen=True)
class CamView:
    """A heatmap over a cell's crop and how much of it falls outside the nucleus."""

    image: np.ndarray            # (S, S, 3) uint8, heatmap blended over the crop
    code: str                    # the class the CAM explains
    outside_fraction: float | None  # share of CAM mass outside the nucleus; None when the nucleus is unknown
    version: str
    threshold: float | None = None  # share above which the cell is unusual for this model; None: unknown
    calibrated_on: str = ""      # the cells the threshold comes from, in words
    # True: the calibration cells' Grad-CAM lay wholly outside the nucleus too often to set a threshold
    diffuse: bool = False

    @property
    def unusual(self) -> bool | None:
        """True when the model looked further outside the nucleus than on 95% of its cells; None if unknown."""
        return cam_is_unusual(self.outside_fraction, self.threshold)

    def note(self) -> str:
        """What the outside-nucleus share means, for the page to show (as a warning when `unusual`)."""
        if self.outside_fraction is None:
            return "This cell has no nucleus mask, so the share of the Grad-CAM on the nucleus is unknown."
        share = f"{self.outside_fraction:.0%} of the Grad-CAM lies outside the nucleus"
        if self.threshold is None and self.diffuse:
            return (f"{share}. On more than {100 - CAM_WARNING_PERCENTILE:.0f}% of {self.calibrated_on} this "
                    "model's Grad-CAM lay wholly outside the nucleus, so where it looks cannot single a cell "
                    "out: no cell is flagged. Retrain it on more labelled cells.")
        if self.threshold is None:
            return (f"{share}. Too few cells with nucleus masks to tell what is usual for this model, "
                    "so no cell is flagged.")
        usual = f"at most {self.threshold:.0%} on {CAM_WARNING_PERCENTILE:.0f}% of {self.calibrated_on}"
        if self.unusual:
            mostly = "mostly " if self.outside_fraction > 0.5 else ""
            return (f"The model looked {mostly}outside the nucleus, unusually for this model: {share}, "
                    f"against {usual}. Check what it based its call on.")
        return f"{share}: usual for this model ({usual})."


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
    colour = _slide_colour(db, classifier, view.cell.slide_id)
    index = classifier.codes.index(code) if code else int(predict_proba(classifier, [view.crop], colour=colour)[0].argmax())
    cam = _cams.get(classifier, cell_id, view.crop, index, colour)
    outside = cam_outside_fraction(cam, view.nucleus) if view.nucleus is not None else None
    warning, calibrated_on = warning_threshold(db, classifier, view.cell.slide_id)
    return CamView(overlay(view.crop, cam), classifier.codes[index], outside, record.version, warning["threshold"],
                   calibrated_on, bool(warning.get("diffuse")))


def _slide_colour(db: Database, classifier: Classifier, slide_id: int) -> StainFit | None:
    """The slide's colour fit for this model, as its proposals were made with; kept until its cells change."""
    key = (classifier.version, slide_id, count_cells(db, slide_id))
    if key not in _slide_colours:
        _slide_colours[key] = slide_colour_fit(db, classifier, slide_id)
    return _slide_colours[key]


def forget_slide_calibrations() -> None:
    """Drop the Grad-CAM warning calibrations made on slides' cells (warning_threshold); the next use makes them again."""
    _slide_warnings.clear()


def warning_threshold(db: Database, classifier: Classifier, slide_id: int) -> tuple[dict[str, Any], str]:
    """(calibration, the cells it comes from): the model's own, else one on this slide's cells.

    The calibration is calibrate_cam_warning's dict: "threshold" (None: no cell is flagged) and "diffuse".
    """
    if classifier.cam_warning is not None:
        return {"threshold": classifier.cam_warning, "diffuse": False}, "its own held-out cells"
    if classifier.cam_diffuse:
        return {"threshold": None, "diffuse": True}, "its own held-out cells"
    key = (classifier.version, slide_id)
    if key not in _slide_warnings:
        cells = [c for c in list_cells(db, slide_id) if c.nucleus_png]
        picks = cells[::max(1, len(cells) // SLIDE_CALIBRATION_CELLS)][:SLIDE_CALIBRATION_CELLS]
        _slide_warnings[key] = calibrate_cam_warning(classifier, *_crops_and_nuclei(db, picks))
    warning = _slide_warnings[key]
    return warning, f"{warning['n']} of this slide's cells (the model holds no calibration of its own)"


def _crops_and_nuclei(db: Database, cells: Sequence[Cell]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The cells' square crops and (h, w) nucleus masks, decoding each patch once."""
    by_patch: dict[int, list[Cell]] = defaultdict(list)
    for cell in cells:
        by_patch[cell.patch_id].append(cell)
    crops, nuclei = [], []
    for patch_id, group in by_patch.items():
        image = read_rgb(get_patch_image(db, patch_id).data)
        for cell in group:
            crops.append(cell_crop(image, cell.box))
            nuclei.append(read_rgb(cell.nucleus_png)[..., 0])
    return crops, nuclei
