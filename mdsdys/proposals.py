"""The classifier meets the store: training samples from human labels, and proposals for a slide's cells."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from sqlite_utils import Database

from mdsdys.classify import (
    CellSample,
    Classifier,
    check_scheme,
    load_classifier,
    predict_squares,
)
from mdsdys.errors import MdsdysError, NotFoundError
from mdsdys.preprocess import decode_crops, stack_squares
from mdsdys.store.cells import list_cells, patch_image_data, save_proposals
from mdsdys.store.labels import final_labels
from mdsdys.store.models import ModelRecord, active_model
from mdsdys.store.patches import Cell
from mdsdys.store.slides import get_slide, load_scheme

log = logging.getLogger(__name__)
PATCHES_PER_READ = 200  # image blobs fetched per query while collecting training crops
ProgressFn = Callable[[int, int], None]  # (cells done, cells total)


class NoCellsError(MdsdysError):
    """A slide with no cells to classify."""


def training_samples(db: Database, scheme_name: str, size: int | None = None) -> list[CellSample]:
    """Every cell of the scheme with a human final label (consensus, then reads incl. imported; never proposals).

    Crops are zero-padded squares, resized to (size, size, 3) when `size` is given (use the
    training config's input_size: faster, and a fraction of the memory). Each patch is decoded once.
    """
    labelled = final_labels(db, scheme_name, human_only=True)
    by_patch = defaultdict(list)
    for cell in labelled:
        by_patch[cell.patch_id].append(cell)
    patch_ids = sorted(by_patch)
    samples = []
    for start in range(0, len(patch_ids), PATCHES_PER_READ):
        data = patch_image_data(db, patch_ids[start:start + PATCHES_PER_READ])
        for patch_id, blob in data.items():
            cells = by_patch[patch_id]
            crops = decode_crops(blob, [c.box for c in cells], size)
            samples.extend(CellSample(crop, c.label.code, c.slide, c.cell_id) for crop, c in zip(crops, cells))
    samples.sort(key=lambda s: s.cell_id)
    log.info("%d labelled cells of scheme %s for training", len(samples), scheme_name)
    return samples


def _read_chunk(db: Database, cells: Sequence[Cell]) -> list[tuple[bytes, list[Cell]]]:
    """The image bytes of each patch in the chunk with its cells (store reads stay on this thread)."""
    by_patch = defaultdict(list)
    for cell in cells:
        by_patch[cell.patch_id].append(cell)
    data = patch_image_data(db, list(by_patch))
    return [(data[patch_id], group) for patch_id, group in by_patch.items()]


def _decode_chunk(patches: list[tuple[bytes, list[Cell]]], size: int) -> tuple[list[int], torch.Tensor]:
    """(cell ids, (B, 3, S, S) uint8) for a chunk; runs on a helper thread (PIL releases the GIL)."""
    ids, squares = [], []
    for blob, cells in patches:
        squares.extend(decode_crops(blob, [c.box for c in cells], size))
        ids.extend(c.id for c in cells)
    return ids, stack_squares(squares)


def _cells_to_propose(db: Database, slide_id: int, unread_only: bool) -> list[Cell]:
    slide = get_slide(db, slide_id)
    cells = list_cells(db, slide_id, unread_only=unread_only)
    if not cells and (not unread_only or not list_cells(db, slide_id)):
        raise NoCellsError(
            f"Slide {slide.case_id!r} has no cells yet. Detect cells on its fields (or import labelled "
            "cells) first, then propose labels."
        )
    return sorted(cells, key=lambda c: (c.patch_id, c.id))  # a patch's cells share one decode


def resolve_classifier(db: Database, scheme_name: str, model_record: ModelRecord | None = None) -> ModelRecord:
    """The given model record, else the scheme's active classifier; raises NotFoundError when there is none."""
    record = model_record or active_model(db, "classifier", scheme_name)
    if record is None:
        raise NotFoundError(
            f"No active classifier for scheme {scheme_name!r}. Train one: mdsdys train classifier --scheme {scheme_name}"
        )
    return record


def propose_labels(db: Database, slide_id: int, model_record: ModelRecord | None = None, batch_size: int = 256,
                   unread_only: bool = False, classifier: Classifier | None = None,
                   progress: ProgressFn | None = None) -> int:
    """Store per-class probabilities, top class and model version for a slide's cells; returns how many.

    Uses the active classifier of the slide's scheme unless `model_record` is given (`classifier`
    may pass that model already loaded). unread_only touches only cells no one has read (issue 6).
    While one chunk runs through the network, the next one is decoded on a helper thread.
    """
    slide = get_slide(db, slide_id)
    cells = _cells_to_propose(db, slide_id, unread_only)
    record = resolve_classifier(db, slide.scheme_name, model_record)
    classifier = classifier or load_classifier(record.path)
    check_scheme(classifier, load_scheme(db, slide.scheme_name), slide.case_id)
    chunks = [cells[i:i + batch_size] for i in range(0, len(cells), batch_size)]
    done = 0
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_decode_chunk, _read_chunk(db, chunks[0]), classifier.input_size) if chunks else None
        for k in range(len(chunks)):
            ids, squares = pending.result()
            if k + 1 < len(chunks):
                pending = pool.submit(_decode_chunk, _read_chunk(db, chunks[k + 1]), classifier.input_size)
            probs = predict_squares(classifier, squares, batch_size)          # (B, C)
            done += save_proposals(db, record.id, {cid: dict(zip(classifier.codes, p.tolist()))
                                                   for cid, p in zip(ids, probs)})
            if progress is not None:
                progress(done, len(cells))
    log.info("proposed labels for %d cells of slide %s with %s", done, slide.case_id, record.version)
    return done
