"""The classifier meets the store: training samples from human labels, and proposals for a slide's cells."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch
from sqlite_utils import Database

from mdsdys.classify.classifier import (
    CellSample,
    Classifier,
    check_scheme,
    load_classifier,
    slide_colour,
)
from mdsdys.classify.inputs import SLIDE_FIT_CELLS, stack_squares
from mdsdys.classify.ood import SlideOOD, colour_features, predict_and_score, slide_ood
from mdsdys.errors import NoCellsError, NotFoundError
from mdsdys.imaging.decode import read_rgb
from mdsdys.imaging.stain import StainFit
from mdsdys.imaging.thumbnails import (
    Box,
    decode_crops,
    decode_thumbnail,
    reads_thumbnails,
    thumbnails_from_image,
)
from mdsdys.schemes import UNASSESSABLE
from mdsdys.store.cells import (
    cell_nuclei,
    cell_thumbnails,
    list_cells,
    patch_image_data,
    save_proposals,
    save_thumbnails,
)
from mdsdys.store.labels import final_labels
from mdsdys.store.models import ModelRecord, active_model
from mdsdys.store.ood import proposal_ood_scores, save_slide_ood
from mdsdys.store.patches import Cell
from mdsdys.store.slides import get_slide, load_scheme

log = logging.getLogger(__name__)
CELLS_PER_READ = 1000  # cells whose images are fetched per query while collecting training crops
ProgressFn = Callable[[int, int], None]  # (cells done, cells total)


class CellRef(NamedTuple):
    """What it takes to find a cell's pixels."""

    cell_id: int
    patch_id: int
    box: Box


class Source(NamedTuple):
    """Bytes to decode once, and the cells in them: a cell's thumbnail (boxes None), or a patch with boxes."""

    data: bytes
    boxes: list[Box] | None
    cell_ids: list[int]


def cell_sources(db: Database, cells: Sequence[CellRef], size: int) -> list[Source]:
    """What to decode for a model of input side `size`, reading the store on the calling thread.

    Models up to THUMBNAIL_SIDE read each cell's stored thumbnail. A cell stored without one (before
    thumbnails existed, or added by hand) gets it here, cut from its patch and saved, once. Larger
    models cut their cells from the patches, each patch decoded once.
    """
    if not reads_thumbnails(size):
        return _patch_sources(db, cells)
    thumbnails = cell_thumbnails(db, [c.cell_id for c in cells])
    missing = [c for c in cells if c.cell_id not in thumbnails]
    if missing:
        made = {cell_id: thumbnail for source in _patch_sources(db, missing)
                for cell_id, thumbnail in zip(source.cell_ids, thumbnails_from_image(source.data, source.boxes))}
        save_thumbnails(db, made)
        thumbnails |= made
        log.info("cut thumbnails for %d cells", len(made))
    return [Source(thumbnails[c.cell_id], None, [c.cell_id]) for c in cells]


def _patch_sources(db: Database, cells: Sequence[CellRef]) -> list[Source]:
    by_patch = defaultdict(list)
    for cell in cells:
        by_patch[cell.patch_id].append(cell)
    data = patch_image_data(db, list(by_patch))
    return [Source(data[patch_id], [c.box for c in group], [c.cell_id for c in group])
            for patch_id, group in by_patch.items()]


def decode_sources(sources: Sequence[Source], size: int | None) -> tuple[list[int], list[np.ndarray]]:
    """(cell ids, (size, size, 3) uint8 squares; full-size squares without `size`).

    Touches no store, so it may run on a helper thread.
    """
    ids, squares = [], []
    for source in sources:
        if source.boxes is None and size is not None:
            squares.append(decode_thumbnail(source.data, size))
        else:
            squares.extend(decode_crops(source.data, source.boxes, size))
        ids.extend(source.cell_ids)
    return ids, squares


def _decode_batch(sources: Sequence[Source], size: int,
                  with_colour: bool) -> tuple[list[int], torch.Tensor, np.ndarray | None]:
    """(cell ids, (B, 3, S, S) uint8, (B, 10) their ood.colour_features if asked) for one chunk of proposals.

    Runs on the helper thread while the network reads the chunk before (PIL and most of numpy release the GIL).
    """
    ids, squares = decode_sources(sources, size)
    batch = stack_squares(squares)
    return ids, batch, colour_features(batch) if with_colour else None


def training_samples(db: Database, scheme_name: str, size: int | None = None,
                     cell_ids: Collection[int] | None = None) -> list[CellSample]:
    """Every cell of the scheme with a human final label (consensus, then reads incl. imported; never proposals).

    Crops are (size, size, 3) squares as the model of that input side reads them (see cell_sources);
    without `size`, the zero-padded crops at full resolution. `cell_ids`: only these cells, so a caller
    that needs a model's test cells does not decode every labelled crop of the scheme.
    """
    wanted = None if cell_ids is None else {int(i) for i in cell_ids}
    # A cell a reader could not assess is no example of any class (issue 17).
    labelled = [c for c in final_labels(db, scheme_name, human_only=True) if c.label.code != UNASSESSABLE
                and (wanted is None or c.cell_id in wanted)]
    by_id = {cell.cell_id: cell for cell in labelled}
    refs = sorted((CellRef(c.cell_id, c.patch_id, c.box) for c in labelled), key=lambda r: (r.patch_id, r.cell_id))
    samples = []
    for start in range(0, len(refs), CELLS_PER_READ):
        chunk = refs[start:start + CELLS_PER_READ]
        sources = cell_sources(db, chunk, size) if size else _patch_sources(db, chunk)
        ids, crops = decode_sources(sources, size)
        nuclei = {i: read_rgb(png)[..., 0] for i, png in cell_nuclei(db, ids).items()}  # calibrates the CAM warning
        samples.extend(CellSample(crop, by_id[i].label.code, by_id[i].slide, i, nuclei.get(i))
                       for i, crop in zip(ids, crops))
    samples.sort(key=lambda s: s.cell_id)
    log.info("%d labelled cells of scheme %s for training", len(samples), scheme_name)
    return samples


def slide_colour_fit(db: Database, classifier: Classifier, slide_id: int,
                     cells: Sequence[Cell] | None = None) -> StainFit | None:
    """The colour fit of a slide for this model (issue 13): on up to SLIDE_FIT_CELLS of its cells, evenly spread.

    None for a model that reads raw colour. All the slide's cells, unread or not, share it, so a
    slide's proposals do not depend on which of its cells were asked for. `cells`: all of them, when
    the caller has them already.
    """
    if classifier.stain_reference is None:
        return None
    cells = sorted(list_cells(db, slide_id) if cells is None else cells, key=lambda c: (c.patch_id, c.id))
    picks = cells[::max(1, len(cells) // SLIDE_FIT_CELLS)][:SLIDE_FIT_CELLS]
    refs = [CellRef(c.id, c.patch_id, c.box) for c in picks]
    if not refs:
        return None
    _, squares = decode_sources(cell_sources(db, refs, classifier.input_size), classifier.input_size)
    return slide_colour(classifier, stack_squares(squares))


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
    `batch_size` cells are read, decoded and stored together (the network reads each chunk in the
    device's own batches, compute.inference_batch); while one chunk runs through the network, the next
    one is decoded on a helper thread.
    """
    slide = get_slide(db, slide_id)
    cells = _cells_to_propose(db, slide_id, unread_only)
    record = resolve_classifier(db, slide.scheme_name, model_record)
    classifier = classifier or load_classifier(record.path)
    check_scheme(classifier, load_scheme(db, slide.scheme_name), slide.case_id)
    refs = [CellRef(c.id, c.patch_id, c.box) for c in cells]
    chunks = [refs[i:i + batch_size] for i in range(0, len(refs), batch_size)]
    size, done = classifier.input_size, 0
    colour = slide_colour_fit(db, classifier, slide_id, None if unread_only else cells)
    scored = bool(classifier.ood)  # the model has an OOD reference: each cell's colour statistics are needed
    with ThreadPoolExecutor(max_workers=1) as pool:
        # Store reads stay on this thread; the helper decodes the next chunk while this one runs.
        pending = pool.submit(_decode_batch, cell_sources(db, chunks[0], size), size, scored) if chunks else None
        for k in range(len(chunks)):
            ids, squares, colour_stats = pending.result()
            if k + 1 < len(chunks):
                pending = pool.submit(_decode_batch, cell_sources(db, chunks[k + 1], size), size, scored)
            probs, ood = predict_and_score(classifier, squares, colour=colour,  # (B, C), (B,) NaN: no reference
                                           colour_stats=colour_stats)
            done += save_proposals(db, record.id, {cid: dict(zip(classifier.codes, p.tolist()))
                                                   for cid, p in zip(ids, probs)}, dict(zip(ids, ood.tolist())))
            if progress is not None:
                progress(done, len(cells))
    result = score_slide_ood(db, slide_id, record.id, classifier)
    log.info("proposed labels for %d cells of slide %s with %s (OOD score %s%s)", done, slide.case_id,
             record.version, "unknown" if result.score is None else f"{result.score:.2f}",
             ", flagged" if result.flagged else "")
    return done


def score_slide_ood(db: Database, slide_id: int, model_id: int, classifier: Classifier) -> SlideOOD:
    """Aggregate the slide's stored per-cell scores by this model (all of them, also from earlier runs) and store it."""
    result = slide_ood(proposal_ood_scores(db, slide_id, model_id), classifier.ood)
    save_slide_ood(db, slide_id, model_id, result.score, result.threshold, result.flagged, result.n_cells)
    return result
