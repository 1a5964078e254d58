"""Detecting the cells of a whole slide with the segmenter and writing them to the store (issue 3).

A new detection replaces a field's unread detected cells and never touches a cell that someone has
read (or a manual or imported one); running it twice with the same model changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from sqlite_utils import Database

from mdsdys.annotate.masks import MIN_MASKS
from mdsdys.annotate.scale import slide_diameter
from mdsdys.errors import MaskError, NotFoundError, ScaleEstimateError
from mdsdys.imaging.decode import encode_png, read_rgb
from mdsdys.imaging.measure import measure_cell
from mdsdys.imaging.thumbnails import thumbnails_from_image
from mdsdys.segment.field import Segmentation, segment_patch
from mdsdys.segment.postprocess import Box
from mdsdys.segment.scale import estimate_set_diameter
from mdsdys.segment.segmenter import Segmenter, load_segmenter, uncertainty_of
from mdsdys.store.cells import (
    DetectedCell,
    kept_cell_boxes,
    replace_detected_cells,
    replaceable_cells,
)
from mdsdys.store.models import ModelRecord, active_model
from mdsdys.store.patches import (
    get_patch_image,
    list_patches,
    patch_slide,
    record_uncertainty,
)
from mdsdys.store.scales import store_estimated_diameter
from mdsdys.store.slides import find_slide, get_slide

log = logging.getLogger(__name__)
# A new detection that overlaps a kept (read) cell's box this much is the same cell: not added twice.
_SAME_CELL_IOU = 0.5
Progress = Callable[[int, int, str], None]


def estimate_slide_diameter(db: Database, slide_id: int, model: Segmenter, max_fields: int = 8) -> float | None:
    """Estimate a slide's nucleus diameter from up to max_fields of its fields and store it; None if no nuclei."""
    patches = list_patches(db, slide_id, kind="field")
    picks = patches[:: max(1, len(patches) // max_fields)][:max_fields]
    images = [read_rgb(get_patch_image(db, p["id"]).data) for p in picks]
    try:
        diameter = estimate_set_diameter(model, images, max_images=max_fields)
    except ScaleEstimateError as exc:
        log.warning("slide %s: %s", slide_id, exc)
        return None
    store_estimated_diameter(db, slide_id, diameter)
    log.info("slide %s: estimated nucleus diameter %.1f px", slide_id, diameter)
    return diameter


def segment_slide(db: Database, slide_id: int, model_record: ModelRecord,
                  progress: Progress | None = None) -> dict[str, Any]:
    """Detect the cells of every field of a slide with this segmenter and store them; returns a summary."""
    get_slide(db, slide_id)  # NotFoundError for a wrong id, before any work
    model = load_segmenter(model_record.path)
    diameter, estimated = slide_diameter(db, slide_id)
    if diameter is None:
        diameter = estimate_slide_diameter(db, slide_id, model)
    patches = list_patches(db, slide_id, kind="field")
    totals = {"patches": len(patches), "cells": 0, "added": 0, "removed": 0, "unchanged_patches": 0}
    for done, patch in enumerate(patches, start=1):
        data = get_patch_image(db, patch["id"]).data
        image = read_rgb(data)
        result = segment_patch(model, image, diameter)  # None: estimated per field, as a last resort
        added, removed, unchanged = _store(db, patch["id"], data, image, result, model_record.id)
        record_uncertainty(db, patch["id"], model_record.id, uncertainty_of(result.prob))
        totals["cells"] += len(result.nuclei)
        totals["added"] += added
        totals["removed"] += removed
        totals["unchanged_patches"] += unchanged
        if progress is not None:
            progress(done, len(patches), patch["name"])
    return totals | {"diameter": diameter, "diameter_estimated": estimated, "model": model_record.version}


def active_segmenter_record(db: Database) -> ModelRecord:
    """The active segmenter's model row; NotFoundError says how to train one."""
    record = active_model(db, "segmenter")
    if record is None:
        raise NotFoundError("There is no active segmenter yet. Train one with 'mdsdys train segmenter' "
                            "(it needs at least a few nucleus masks, drawn on the Annotate page or imported).")
    return record


def segment_case(db: Database, case_id: str, progress: Progress | None = None) -> dict[str, Any]:
    """`mdsdys segment SLIDE`: detect the cells of the slide with this case id using the active segmenter."""
    slide = find_slide(db, case_id)
    if slide is None:
        raise NotFoundError(f"No slide named {case_id!r}; 'mdsdys status' lists what is stored.")
    return segment_slide(db, slide.id, active_segmenter_record(db), progress)


def _store(db: Database, patch_id: int, data: bytes, image: np.ndarray, result: Segmentation,
           model_id: int) -> tuple[int, int, bool]:
    """Write one field's detections with their thumbnails; (added, removed, unchanged).

    Skips cells that duplicate kept ones.
    """
    kept = kept_cell_boxes(db, patch_id)
    nuclei = [n for n in result.nuclei if not any(box_iou(n.box, box) >= _SAME_CELL_IOU for box in kept)]
    masks = [encode_png(n.mask) for n in nuclei]
    if sorted(replaceable_cells(db, patch_id)) == sorted(zip((n.box for n in nuclei), masks)):
        return 0, 0, True  # same cells as stored: keep their ids and classifier proposals
    thumbnails = thumbnails_from_image(data, [n.box for n in nuclei]) if nuclei else []
    sizes = [measure_cell(image, n.box, n.mask) for n in nuclei]  # px; µm with the slide's scale (issue 18)
    cells = [DetectedCell(n.box, mask, t, *size) for n, mask, t, size in zip(nuclei, masks, thumbnails, sizes)]
    added, removed = replace_detected_cells(db, patch_id, cells, model_id)
    return added, removed, False


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union else 0.0


def model_mask(db: Database, patch_id: int) -> np.ndarray:
    """The active segmenter's nuclei on a field, (H, W) uint8 255 = nucleus, to correct by hand."""
    record = active_model(db, "segmenter")
    if record is None:
        raise MaskError(f"There is no segmenter yet. Save at least {MIN_MASKS} masks and train one on the Train page.")
    model = load_segmenter(record.path)
    slide_id = patch_slide(db, patch_id)
    diameter, _ = slide_diameter(db, slide_id)
    return segment_patch(model, read_rgb(get_patch_image(db, patch_id).data), diameter).mask
