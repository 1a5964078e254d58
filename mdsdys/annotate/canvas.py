"""Drawing nucleus masks: the annotation queue, canvas views and turning strokes into masks.

The canvas shows one view (a tile of the field, scaled to fit); strokes come back as an
RGBA image at canvas size and are mapped back to the view's exact pixel size before they
are merged into the field's mask, so a saved mask always has the field's size (issue 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage
from sqlite_utils import Database

from mdsdys.accounts import auth

from mdsdys.jobs import queue as jobs
from mdsdys.config import Settings
from mdsdys.segment.detect import slide_diameter
from mdsdys.errors import MaskError, MdsdysError
from mdsdys.imaging.decode import encode_png, read_rgb
from mdsdys.segment.segmenter import load_segmenter, segment_patch
from mdsdys.segment.train import MIN_MASKS
from mdsdys.store import connect, write_transaction
from mdsdys.store.audit import log_action
from mdsdys.store.models import active_model
from mdsdys.store.patches import get_masks, get_patch_image, patch_slide, save_mask
from mdsdys.store.scales import slide_scale
from mdsdys.store.slides import update_slide
from mdsdys.store.users import User, system_user

MIN_MASKS_FIRST_MODEL = MIN_MASKS
NUCLEUS_RGBA = (255, 0, 255, 110)   # translucent magenta: the nucleus stays visible under the brush
ERASE_RGB = (0, 255, 0)             # opaque green marks erased pixels
MASK_SOURCES = ("drawn", "model_seeded")
# Nucleus diameters a person may set, px: below 4 the U-Net would enlarge a field absurdly,
# above 400 a field holds only a nucleus or two.
DIAMETER_RANGE = (4.0, 400.0)



@dataclass(frozen=True)
class View:
    """A rectangle of a field shown on the canvas, in field pixels."""

    x: int
    y: int
    w: int
    h: int


def plan_views(width: int, height: int, max_side: int = 512) -> list[View]:
    """Split a field into near-equal tiles no larger than max_side on each side, row by row."""
    cols, rows = math.ceil(width / max_side), math.ceil(height / max_side)
    xs = np.linspace(0, width, cols + 1).round().astype(int)
    ys = np.linspace(0, height, rows + 1).round().astype(int)
    return [View(int(xs[i]), int(ys[j]), int(xs[i + 1] - xs[i]), int(ys[j + 1] - ys[j]))
            for j in range(rows) for i in range(cols)]


def canvas_size(view: View, max_canvas: int = 720, max_zoom: float = 3.0) -> tuple[int, int]:
    """Canvas (width, height) showing the view as large as fits, zoomed at most max_zoom."""
    scale = min(max_canvas / view.w, max_canvas / view.h, max_zoom)
    return max(round(view.w * scale), 1), max(round(view.h * scale), 1)


def strokes_to_masks(strokes: np.ndarray, view: View) -> tuple[np.ndarray, np.ndarray]:
    """Canvas RGBA (h', w', 4) → (add, erase) boolean masks of the view's size (view.h, view.w)."""
    alpha = strokes[..., 3] > 0
    erase = alpha & (np.abs(strokes[..., :3].astype(int) - ERASE_RGB).sum(axis=-1) < 60)
    add = alpha & ~erase
    return _resize_bool(add, view), _resize_bool(erase, view)


def _resize_bool(mask: np.ndarray, view: View) -> np.ndarray:
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(image.resize((view.w, view.h), Image.NEAREST)) > 127


def merge_view(base: np.ndarray, view: View, add: np.ndarray, erase: np.ndarray) -> np.ndarray:
    """The field mask (H, W) uint8 255 = nucleus with one view's additions and erasures applied."""
    merged = base.copy()
    region = merged[view.y:view.y + view.h, view.x:view.x + view.w]
    region[add] = 255
    region[erase] = 0
    return merged


def overlay(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 0, 255),
            alpha: float = 0.45) -> np.ndarray:
    """The image (H, W, 3) with the mask tinted over it, for showing a base mask under the canvas."""
    tinted = image.astype(np.float32)
    on = mask > 0
    tinted[on] = (1 - alpha) * tinted[on] + alpha * np.array(color, np.float32)
    return tinted.clip(0, 255).astype(np.uint8)


def view_background(image: np.ndarray, mask: np.ndarray, view: View, size: tuple[int, int]) -> Image.Image:
    """The canvas background: the view's pixels with the current mask tinted, scaled to the canvas."""
    crop = image[view.y:view.y + view.h, view.x:view.x + view.w]
    crop_mask = mask[view.y:view.y + view.h, view.x:view.x + view.w]
    return Image.fromarray(overlay(crop, crop_mask)).resize(size, Image.NEAREST)


def validate_mask(mask: np.ndarray, width: int, height: int) -> int:
    """Check a mask can be saved for a field of this size; returns its number of nuclei."""
    if mask.shape != (height, width):
        raise MaskError(f"The mask is {mask.shape[1]}x{mask.shape[0]} but the field is {width}x{height}; "
                        "draw it again on this field.")
    nuclei = int(ndimage.label(mask > 0)[1])
    if nuclei == 0:
        raise MaskError("The mask is empty. Draw at least one nucleus, or press Next to skip this field.")
    return nuclei


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
    if source not in MASK_SOURCES:
        raise MaskError(f"Unknown mask source {source!r}.")
    image = get_patch_image(db, patch_id)
    nuclei = validate_mask(mask, image.width, image.height)
    binary = np.where(mask > 0, 255, 0).astype(np.uint8)
    with write_transaction(db):
        created = save_mask(db, patch_id, user.id, source, encode_png(binary), nuclei)
        log_action(db, user, "mask_save", "patch", patch_id,
                   after={"source": source, "nuclei": nuclei, "new": created})
    return nuclei


def model_mask(db: Database, patch_id: int) -> np.ndarray:
    """The active segmenter's nuclei on a field, (H, W) uint8 255 = nucleus, to correct by hand."""
    record = active_model(db, "segmenter")
    if record is None:
        raise MaskError(f"There is no segmenter yet. Save at least {MIN_MASKS} masks and train one on the Train page.")
    model = load_segmenter(record.path)
    slide_id = patch_slide(db, patch_id)
    diameter, _ = slide_diameter(db, slide_id)
    return segment_patch(model, field_image(db, patch_id), diameter).mask


@dataclass(frozen=True)
class SlideScale:
    """What the app knows of a slide's scale, for showing and correcting it."""

    diameter_px: float | None   # the nucleus diameter detection uses; None until one is set or estimated
    source: str                 # 'person', 'um_per_px', 'estimate' or 'none'
    um_per_px: float | None

    @property
    def estimated(self) -> bool:
        return self.source == "estimate"

    def describe(self) -> str:
        """One line for the page."""
        if self.diameter_px is None:
            return "not known yet: the segmenter estimates it the first time it detects cells on this slide"
        if self.source == "um_per_px":
            how = f"from the slide's {self.um_per_px:g} µm per pixel"
        elif self.source == "estimate":
            how = "estimated by the segmenter; correct it if this slide's nuclei look larger or smaller"
        else:
            how = "set by a person"
        return f"{self.diameter_px:.1f} px ({how})"


def slide_scale_of(db: Database, slide_id: int) -> SlideScale:
    """The nucleus diameter detection uses on a slide (detect.slide_diameter), and where it came from."""
    stored, um_per_px, stored_is_estimate = slide_scale(db, slide_id)
    diameter, _ = slide_diameter(db, slide_id)
    if stored and not stored_is_estimate:
        source = "person"
    elif um_per_px:
        source = "um_per_px"
    else:
        source = "estimate" if diameter else "none"
    return SlideScale(diameter, source, um_per_px)


def set_slide_diameter(settings: Settings, user: User, slide_id: int, diameter_px: float,
                       start_worker: bool = True) -> int | None:
    """A person's nucleus diameter for a slide, audited; re-detects its unread cells when a segmenter exists.

    Returns the id of the queued detection job, or None when there is no segmenter yet.
    """
    auth.require_role(user, "reader", "adjudicator")  # any logged-in person who annotates
    low, high = DIAMETER_RANGE
    if not low <= float(diameter_px) <= high:
        raise MdsdysError(f"A nucleus diameter of {diameter_px:g} px is out of range; use {low:g} to {high:g} px "
                          "(measure a typical nucleus on one field of the slide).")
    with connect(settings.db_path) as db:
        before = slide_scale_of(db, slide_id)
        with write_transaction(db):
            update_slide(db, slide_id, nucleus_diameter_px=float(diameter_px))
            log_action(db, user, "slide_scale", "slide", slide_id,
                       before={"diameter_px": before.diameter_px, "source": before.source},
                       after={"diameter_px": float(diameter_px)})
        has_segmenter = active_model(db, "segmenter") is not None
        system = system_user(db)
    if not has_segmenter:
        return None
    # Detection only ever replaces cells nobody has read, so any annotator may trigger it: the job
    # runs as the system account, and the slide_scale audit row names the person.
    return jobs.enqueue(settings, "segment_slides", {"slide_ids": [slide_id], "after_scale_change": diameter_px},
                        system, start_worker)
