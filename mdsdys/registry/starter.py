"""Which segmenter detects a slide: the store's own, the shipped starter, or the better of the two.

The starter checkpoint (models/starter/segmenter.pt, see its MODEL_CARD.md) is registered once as
a candidate version, so its detections are traced to a model row like any other; it never becomes
active by itself, so a store's first own segmenter still becomes active as before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlite_utils import Database

from mdsdys.config import Settings
from mdsdys.errors import NotFoundError
from mdsdys.imaging.decode import read_rgb
from mdsdys.checkpoints import load_checkpoint, save_checkpoint
from mdsdys.annotate.scale import slide_diameter
from mdsdys.segment.segmenter import load_segmenter
from mdsdys.segment.starter import STARTER_VERSION, pick_segmenter
from mdsdys.store import write_transaction
from mdsdys.store.audit import log_action
from mdsdys.store.models import ModelRecord, active_model, find_model, insert_model
from mdsdys.store.patches import get_patch_image, list_patches
from mdsdys.store.users import system_user

log = logging.getLogger(__name__)
# Fields compared per slide: three spread over the slide cost ~1 s per model on a CPU and already
# separate a model that knows the stain from one that does not (uncertainty differs several-fold).
PICK_FIELDS = 3


@dataclass(frozen=True)
class SlideSegmenter:
    """The model that detects a slide's cells, and why it was chosen."""

    record: ModelRecord
    reason: str
    uncertainty: dict[str, float] | None = None  # per candidate, when two were compared


def starter_record(db: Database, settings: Settings) -> ModelRecord | None:
    """The starter segmenter's model row, registered on first use; None when it is off or missing."""
    existing = find_model(db, STARTER_VERSION)
    if existing is not None:
        return existing
    source = settings.starter_segmenter
    if source is None or not source.is_file():
        return None
    checkpoint = load_checkpoint(source)
    path = settings.models_dir / f"{STARTER_VERSION}.pt"
    save_checkpoint(checkpoint | {"version": STARTER_VERSION}, path)
    actor = system_user(db)
    with write_transaction(db):
        if find_model(db, STARTER_VERSION) is None:  # another process may have registered it meanwhile
            model_id = insert_model(db, "segmenter", STARTER_VERSION, None, checkpoint["arch"], str(path),
                                    checkpoint["config"], checkpoint["metrics"] | {"starter": True}, actor.id)
            log_action(db, actor, "model_register", "model", model_id, after={"version": STARTER_VERSION,
                                                                              "starter": True})
    return find_model(db, STARTER_VERSION)


def segmenter_for_slide(db: Database, settings: Settings, slide_id: int) -> SlideSegmenter:
    """The store's active segmenter, else the starter; with both, the one more certain on this slide."""
    own, starter = active_model(db, "segmenter"), starter_record(db, settings)
    if own is None and starter is None:
        raise NotFoundError("There is no segmenter yet. Train one with 'mdsdys train segmenter' (it needs a few "
                            "nucleus masks, drawn on the Annotate page or imported), or reinstall the shipped "
                            "starter model in models/starter/.")
    if own is None or starter is None or own.id == starter.id:
        record = own or starter
        return SlideSegmenter(record, "the starter segmenter (the store has none of its own)"
                              if record.version == STARTER_VERSION else "the store's active segmenter")
    images = _sample_fields(db, slide_id)
    diameter, _ = slide_diameter(db, slide_id)
    choice = pick_segmenter(load_segmenter(own.path), load_segmenter(starter.path), images, diameter)
    log.info("slide %s: %s", slide_id, choice.reason)
    return SlideSegmenter(own if choice.name == "own" else starter, choice.reason, choice.uncertainty)


def _sample_fields(db: Database, slide_id: int) -> list:
    """Up to PICK_FIELDS of the slide's fields, spread over it, as RGB arrays."""
    patches = list_patches(db, slide_id, kind="field")
    picks = patches[:: max(1, len(patches) // PICK_FIELDS)][:PICK_FIELDS]
    return [read_rgb(get_patch_image(db, p["id"]).data) for p in picks]

