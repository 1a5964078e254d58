"""A slide's scale: the nucleus diameter detection uses, where it came from, and a person correcting it.

Each slide has its own scale: a person's value, else one derived from the scan's µm per pixel,
else the segmenter's estimate for that slide (issue 3), never another slide's.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlite_utils import Database

from mdsdys.accounts import policy
from mdsdys.config import Settings
from mdsdys.errors import MdsdysError
from mdsdys.ingest.importer import enqueue_detection
from mdsdys.store import connect, write_transaction
from mdsdys.store.audit import log_action
from mdsdys.store.scales import slide_scale
from mdsdys.store.slides import update_slide
from mdsdys.store.users import User

# A typical marrow nucleus is ~9 µm across (a lymphocyte's ~7 µm, a myelocyte's ~10 µm); used
# only to turn a slide's µm-per-pixel into a nucleus diameter when no diameter is set.
TYPICAL_NUCLEUS_UM = 9.0
# Nucleus diameters a person may set, px: below 4 the U-Net would enlarge a field absurdly,
# above 400 a field holds only a nucleus or two.
DIAMETER_RANGE = (4.0, 400.0)


def slide_diameter(db: Database, slide_id: int) -> tuple[float | None, bool]:
    """(nucleus diameter px or None, estimated?): a person's value, else µm/px, else an earlier estimate."""
    diameter, um_per_px, estimated = slide_scale(db, slide_id)
    if diameter and not estimated:
        return float(diameter), False
    if um_per_px:
        return TYPICAL_NUCLEUS_UM / um_per_px, False
    return (float(diameter), True) if diameter else (None, True)


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
    """The nucleus diameter detection uses on a slide , and where it came from."""
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
    policy.require(user, "annotate")
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
        # Any annotator may trigger it: detection only replaces unread cells, and the audit row names them.
        return enqueue_detection(db, settings, [slide_id], start_worker, after_scale_change=diameter_px)


UM_PER_PX_RANGE = (0.05, 5.0)  # 100x oil cameras give ~0.05-0.1; a 10x scan ~1; beyond is a typo


def set_slide_um_per_px(settings: Settings, user: User, slide_id: int, um_per_px: float,
                        start_worker: bool = True) -> int | None:
    """A person's µm per pixel for a slide of plain fields, audited (issue 18); cell sizes in µm follow it.

    Unless a person set a nucleus diameter, detection's diameter prior follows too, so unread cells are
    re-detected when a segmenter exists; returns that job's id, or None.
    """
    policy.require(user, "annotate")
    low, high = UM_PER_PX_RANGE
    if not low <= float(um_per_px) <= high:
        raise MdsdysError(f"{um_per_px:g} µm per pixel is out of range; use {low:g} to {high:g} "
                          "(the camera's pixel size divided by the objective's magnification).")
    with connect(settings.db_path) as db:
        before = slide_scale_of(db, slide_id)
        with write_transaction(db):
            update_slide(db, slide_id, um_per_px=float(um_per_px))
            log_action(db, user, "slide_um_per_px", "slide", slide_id,
                       before={"um_per_px": before.um_per_px}, after={"um_per_px": float(um_per_px)})
        if before.source == "person":  # a person's diameter stays; only the µm sizes change
            return None
        return enqueue_detection(db, settings, [slide_id], start_worker, after_scale_change=um_per_px)
