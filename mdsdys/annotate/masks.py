"""Nucleus masks: the one validator, a user's current mask of a field, and saving it (audited).

Array conventions: `mask` (H, W) uint8, 255 = nucleus, the field's own size.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sqlite_utils import Database

from mdsdys.accounts import policy
from mdsdys.errors import MaskError
from mdsdys.imaging.decode import encode_png, read_rgb
from mdsdys.store import write_transaction
from mdsdys.store.audit import log_action
from mdsdys.store.patches import (
    annotation_queue,
    get_masks,
    get_patch_image,
    patch_slide,
    save_mask,
)
from mdsdys.store.users import User

MASK_SOURCES = ("drawn", "model_seeded")
MIN_MASKS = 5  # masked fields a first segmenter needs (issue 3); more, from several slides, make it better


def validate_mask(mask: np.ndarray, width: int, height: int) -> tuple[np.ndarray, int]:
    """Check a mask against its field's size; -> ((H, W) uint8 0/255 mask, number of nuclei).

    The one check every saved mask passes (drawn, seeded from the model, imported). Raises
    MaskError for a mask of another size or one without any nucleus pixel.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.shape != (height, width):
        got = f"{mask.shape[1]}x{mask.shape[0]}" if mask.ndim == 2 else f"an array of shape {mask.shape}"
        raise MaskError(f"The mask is {got} but the field is {width}x{height} pixels; it was not saved. "
                        "Draw it again on this field.")
    binary = np.where(mask > 0, 255, 0).astype(np.uint8)
    nuclei = int(ndimage.label(binary > 0)[1])
    if nuclei == 0:
        raise MaskError("The mask is empty. Draw at least one nucleus, or press Next to skip this field "
                        "(a field without nucleated cells needs no mask).")
    return binary, nuclei


def current_mask(db: Database, user: User, patch_id: int) -> tuple[np.ndarray, str | None]:
    """The user's own saved mask of a field (else the newest anyone saved), and its source; zeros if none."""
    image = get_patch_image(db, patch_id)
    masks = get_masks(db, patch_id)
    own = [m for m in masks if m["annotator_id"] == user.id]
    chosen = (own or masks or [None])[0]
    if chosen is None:
        return np.zeros((image.height, image.width), np.uint8), None
    return read_rgb(chosen["png"])[..., 0], chosen["source"]


def field_image(db: Database, patch_id: int) -> np.ndarray:
    """The field's pixels, (H, W, 3) uint8."""
    return read_rgb(get_patch_image(db, patch_id).data)


def save_annotation(db: Database, user: User, patch_id: int, mask: np.ndarray, source: str = "drawn") -> int:
    """Save the user's mask of a field (replacing their earlier one) and audit it; returns the nucleus count."""
    policy.require(user, "annotate")
    if source not in MASK_SOURCES:
        raise MaskError(f"Unknown mask source {source!r}.")
    image = get_patch_image(db, patch_id)
    binary, nuclei = validate_mask(mask, image.width, image.height)
    with write_transaction(db):
        created = save_mask(db, patch_id, user.id, source, encode_png(binary), nuclei)
        log_action(db, user, "mask_save", "patch", patch_id,
                   after={"source": source, "nuclei": nuclei, "new": created})
    return nuclei


def fields_to_annotate(db: Database) -> list[dict]:
    """Every field in annotation order: those without a mask first, then the segmenter's least sure."""
    return annotation_queue(db)


def field_slide(db: Database, patch_id: int) -> int:
    """The id of the slide a field belongs to."""
    return patch_slide(db, patch_id)
