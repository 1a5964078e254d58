"""Blinded review: what a reader sees of a cell, and recording their read.

Every function takes the viewer and touches only the viewer's own reads; another reader's
read of a cell is never returned here (issue 4). Consensus (issue 5) is where reads unblind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlite_utils import Database

from mdsdys.accounts import policy
from mdsdys.errors import MdsdysError, ReadFrozenError
from mdsdys.imaging.crops import cell_crop, context_view
from mdsdys.imaging.decode import read_rgb
from mdsdys.schemes import UNASSESSABLE, UNASSESSABLE_REASONS, LabelScheme
from mdsdys.review import counting, gold
from mdsdys.store import write_transaction
from mdsdys.store.audit import log_action
from mdsdys.store.cells import Proposal, get_proposal
from mdsdys.store.patches import Cell, get_cell, get_patch_image
from mdsdys.store.reads import Read, own_read, put_read, read_history, reader_progress, retire_read
from mdsdys.store.review import QUEUE_MODES, next_unread_cell
from mdsdys.store.sessions import has_seen_other_reads
from mdsdys.store.settings import reads_per_cell
from mdsdys.store.slides import get_slide, load_scheme
from mdsdys.store.users import User

@dataclass(frozen=True)
class CellView:
    """Everything the Review page shows for one cell, for one viewer."""

    cell: Cell
    slide: str
    scheme: LabelScheme
    crop: np.ndarray             # (S, S, 3) uint8, padded to a square
    context: np.ndarray          # (H', W', 3) uint8, the patch around the cell with its box drawn
    nucleus: np.ndarray | None   # (h, w) uint8 inside the box, 255 = nucleus, when known
    proposal: Proposal | None    # None when the viewer hides proposals or none exists
    my_read: Read | None
    label: int = 0               # what the page calls the cell (gold.cell_label): not its id, which would tell


def load_cell_view(db: Database, viewer: User, cell_id: int, show_proposal: bool = True,
                   reading_slide_id: int | None = None) -> CellView:
    """The viewer's view of a cell: crop, context, proposal and their own read only.

    `reading_slide_id`: the slide whose queue the viewer is in. A gold cell served there shows
    under that slide, with the viewer's calibration answer as their read (blinding, issue 17).
    """
    policy.require(viewer, "review")
    cell = get_cell(db, cell_id)
    slide = get_slide(db, cell.slide_id)
    image = read_rgb(get_patch_image(db, cell.patch_id).data)
    nucleus = read_rgb(cell.nucleus_png)[..., 0] if cell.nucleus_png else None
    calibration = gold.calibration_in(db, viewer.id, reading_slide_id, cell_id)
    shown_slide = get_slide(db, reading_slide_id).case_id if calibration else slide.case_id
    mine = _calibration_read(calibration) if calibration else own_read(db, viewer.id, cell_id)
    return CellView(
        cell, shown_slide, load_scheme(db, slide.scheme_name), cell_crop(image, cell.box),
        context_view(image, cell.box), nucleus,
        get_proposal(db, cell_id) if show_proposal else None, mine, gold.cell_label(db, cell_id),
    )


def _calibration_read(calibration: gold.CalibrationRead) -> Read | None:
    """A calibration answer in the shape of a read, so the page shows it like any other."""
    if calibration.code is None:
        return None
    return Read(calibration.id, calibration.cell_id, calibration.reader_id, calibration.code, calibration.tags,
                "reader", calibration.seconds, False, calibration.answered_at or "")


def record_read(db: Database, viewer: User, cell_id: int, code: str, tags: Sequence[str] = (),
                seconds: float | None = None, proposal_hidden: bool = False,
                reading_slide_id: int | None = None) -> Read:
    """Save the viewer's read of a cell (earlier versions are kept) and audit it.

    A gold cell served in the queue of `reading_slide_id` gets a calibration read instead, which
    no slide's numbers ever count (issue 17).
    """
    policy.require(viewer, "review")
    scheme = load_scheme(db, get_slide(db, get_cell(db, cell_id).slide_id).scheme_name)
    allowed = scheme.features_for(code)  # raises SchemeError for an unknown code
    unknown = [t for t in tags if t not in allowed]
    if unknown:
        raise MdsdysError(f"Feature tags {unknown} do not apply to {code}; choose from {list(allowed) or 'none'}.")
    if calibration := gold.calibration_in(db, viewer.id, reading_slide_id, cell_id):
        gold.answer(db, viewer, calibration, code, tags, seconds)
        return _calibration_read(gold.calibration_in(db, viewer.id, reading_slide_id, cell_id))
    require_blind(db, viewer, cell_id)
    with write_transaction(db):
        previous = put_read(db, cell_id, viewer.id, code, tags, "reader", seconds, proposal_hidden)
        log_action(db, viewer, "read_change" if previous else "read", "cell", cell_id,
                   before=_summary(previous), after={"code": code, "tags": list(tags)})
    return own_read(db, viewer.id, cell_id)


def require_blind(db: Database, viewer: User, cell_id: int) -> None:
    """Refuse a read or its change once the viewer has seen another reader's read of the cell (issue 15 item 8).

    The blind read stays as it was, so agreement is measured on blind reads; a change of mind is
    a consensus decision, which keeps the reads beside it.
    """
    if has_seen_other_reads(db, viewer.id, cell_id):
        raise ReadFrozenError(
            f"You have seen the other read of cell {cell_id}, so your blind read stays as it was. "
            "To change its label, settle it on the Consensus page: your read and the decision are both kept.")


def record_unassessable(db: Database, viewer: User, cell_id: int, reason: str, seconds: float | None = None,
                        proposal_hidden: bool = False, reading_slide_id: int | None = None) -> Read:
    """Save the viewer's read that the cell cannot be assessed, with its reason (issue 17).

    The read is the code UNASSESSABLE with the reason as its one tag: the cell then leaves the
    viewer's counts and the training sets; against another reader's class it goes to consensus.
    """
    policy.require(viewer, "review")
    if reason not in UNASSESSABLE_REASONS:
        raise MdsdysError(f"Say why the cell cannot be assessed: one of {', '.join(UNASSESSABLE_REASONS.values())}.")
    get_cell(db, cell_id)  # raises NotFoundError for a cell that does not exist
    if calibration := gold.calibration_in(db, viewer.id, reading_slide_id, cell_id):
        gold.answer(db, viewer, calibration, UNASSESSABLE, [reason], seconds)
        return _calibration_read(gold.calibration_in(db, viewer.id, reading_slide_id, cell_id))
    require_blind(db, viewer, cell_id)
    with write_transaction(db):
        previous = put_read(db, cell_id, viewer.id, UNASSESSABLE, [reason], "reader", seconds, proposal_hidden)
        log_action(db, viewer, "read_change" if previous else "read", "cell", cell_id,
                   before=_summary(previous), after={"code": UNASSESSABLE, "tags": [reason]})
    return own_read(db, viewer.id, cell_id)


def describe_read(read: Read) -> str:
    """A read in words: 'ED (nuclear budding)' or "can't assess: out of focus"."""
    if read.code == UNASSESSABLE:
        return "can't assess: " + ", ".join(UNASSESSABLE_REASONS.get(t, t) for t in read.tags)
    return read.code + (f" ({', '.join(read.tags)})" if read.tags else "")


def _summary(read: Read | None) -> dict | None:
    return {"code": read.code, "tags": list(read.tags)} if read else None


def accept_proposal(db: Database, viewer: User, cell_id: int, seconds: float | None = None,
                    reading_slide_id: int | None = None) -> Read:
    """Record the model's top class as the viewer's read."""
    policy.require(viewer, "review")
    proposal = get_proposal(db, cell_id)
    if proposal is None:
        raise MdsdysError("This cell has no model proposal to accept; choose a class with its key.")
    return record_read(db, viewer, cell_id, proposal.ranked[0][0], seconds=seconds, reading_slide_id=reading_slide_id)


def undo_read(db: Database, viewer: User, cell_id: int, reading_slide_id: int | None = None) -> Read | None:
    """Take back the viewer's latest read of a cell: the version before it (if any) becomes current again."""
    policy.require(viewer, "review")
    if (calibration := gold.calibration_in(db, viewer.id, reading_slide_id, cell_id)) and calibration.code:
        gold.take_back(db, viewer, calibration)
        return None
    require_blind(db, viewer, cell_id)
    history = read_history(db, viewer.id, cell_id)
    current = own_read(db, viewer.id, cell_id)
    if current is None:
        raise MdsdysError("There is no read of this cell to undo.")
    earlier = [r for r in history if r.id < current.id]
    with write_transaction(db):
        if earlier:
            put_read(db, cell_id, viewer.id, earlier[-1].code, earlier[-1].tags, "reader",
                     earlier[-1].seconds, earlier[-1].proposal_hidden)
        else:
            retire_read(db, current.id)
        log_action(db, viewer, "read_undo", "cell", cell_id, before=_summary(current),
                   after=_summary(earlier[-1]) if earlier else None)
    return own_read(db, viewer.id, cell_id)


def next_cell(db: Database, viewer: User, slide_id: int, mode: str = "uncertain",
              skipped: Sequence[int] = ()) -> int | None:
    """The next cell this viewer has not read, skipping the ones they skipped this session.

    Mode 'settle' reads first the cells the model puts in lineages the viewer's own count has not
    settled yet. Within the lineage the order stays slide order, which does not depend on whether a
    cell is dysplastic, so the counting rule's guarantee holds for the lineages; the blast band, a
    share of all cells, wants a count in slide order (see mdsdys.sequential).
    """
    policy.require(viewer, "review")
    if mode not in QUEUE_MODES:
        raise MdsdysError(f"Unknown queue {mode!r}; use one of {', '.join(QUEUE_MODES)}.")
    first: list[str] = []
    if mode == "settle":
        scheme = load_scheme(db, get_slide(db, slide_id).scheme_name)
        first = counting.unsettled_codes(scheme, counting.reader_states(db, viewer, slide_id))
    normal = next_unread_cell(db, viewer.id, slide_id, mode, skipped, first, reads_per_cell(db))
    progress = reader_progress(db, viewer.id, slide_id)
    calibration = gold.next_calibration(db, viewer.id, slide_id, progress["cells"], progress["reviewed"],
                                        normal, skipped)
    return calibration if calibration is not None else normal


def review_progress(db: Database, viewer: User, slide_id: int) -> dict[str, int]:
    """The viewer's progress through a slide's queue, its gold cells included from the start (blinding)."""
    policy.require(viewer, "review")
    progress = reader_progress(db, viewer.id, slide_id)
    planned = gold.planned_gold(db, viewer.id, slide_id, progress["cells"])
    answered = gold.answered_calibrations(db, viewer.id, slide_id)
    cells, reviewed = progress["cells"] + planned, progress["reviewed"] + min(answered, planned)
    return {"cells": cells, "reviewed": reviewed, "remaining": max(cells - reviewed, 0)}


@dataclass
class ReviewCursor:
    """Where a reader is in a slide's queue this session: cells shown so far, and skipped ones."""

    history: list[int]
    position: int = -1
    skipped: list[int] | None = None

    @property
    def current(self) -> int | None:
        """The cell on screen, or None before the first."""
        return self.history[self.position] if 0 <= self.position < len(self.history) else None

    def show(self, cell_id: int | None) -> None:
        """Put a new cell on screen after the current one (dropping any 'forward' history)."""
        if cell_id is None:
            self.position = len(self.history)
            return
        self.history = self.history[: self.position + 1] + [cell_id]
        self.position = len(self.history) - 1

    def back(self) -> None:
        """Step to the previously shown cell."""
        self.position = max(self.position - 1, 0)

    def forward(self) -> bool:
        """Step to the next shown cell; False when at the newest (the caller then fetches a new one)."""
        if self.position + 1 < len(self.history):
            self.position += 1
            return True
        return False

    def skip(self) -> None:
        """Leave the current cell unread for this session."""
        if self.current is not None:
            self.skipped = [*(self.skipped or []), self.current]


def misfit_tags(scheme: LabelScheme, code: str, selected: Sequence[str]) -> list[str]:
    """The selected feature tags that do not belong to the chosen class's lineage (never dropped silently)."""
    allowed = set(scheme.features_for(code))
    return [tag for tag in selected if tag not in allowed]


def tag_options(scheme: LabelScheme, lineage: str | None) -> list[str]:
    """The feature tags offered for a cell: those of one lineage's classes, else every lineage's."""
    classes = [c for c in scheme.classes if lineage is None or c.lineage == lineage]
    return sorted({f for c in classes for f in scheme.features_for(c.code)})


def tags_for_code(scheme: LabelScheme, code: str, selected: Sequence[str]) -> list[str]:
    """The selected feature tags that apply to the class chosen (others are dropped)."""
    allowed = set(scheme.features_for(code))
    return [tag for tag in selected if tag in allowed]


def load_crops(db: Database, viewer: User, cell_ids: Sequence[int]) -> dict[int, np.ndarray]:
    """Square crops of several cells, decoding each patch image once: {cell id: (S, S, 3) uint8}."""
    policy.require(viewer, "review")
    cells = [get_cell(db, cell_id) for cell_id in cell_ids]
    images: dict[int, np.ndarray] = {}
    crops = {}
    for cell in cells:
        if cell.patch_id not in images:
            images[cell.patch_id] = read_rgb(get_patch_image(db, cell.patch_id).data)
        crops[cell.id] = cell_crop(images[cell.patch_id], cell.box)
    return crops


def cell_labels(db: Database, viewer: User, cell_ids: Sequence[int]) -> dict[int, int]:
    """{cell id: the label the Review page shows for it} (see gold.cell_label)."""
    policy.require(viewer, "review")
    return {cell_id: gold.cell_label(db, cell_id) for cell_id in cell_ids}
