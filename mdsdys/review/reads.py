"""Blinded review: what a reader sees of a cell, and recording their read.

Every function takes the viewer and touches only the viewer's own reads; another reader's
read of a cell is never returned here (issue 4). Consensus (issue 5) is where reads unblind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlite_utils import Database

from mdsdys.accounts import auth
from mdsdys.errors import MdsdysError
from mdsdys.imaging.crops import cell_crop, context_view
from mdsdys.imaging.decode import read_rgb
from mdsdys.schemes import LabelScheme
from mdsdys.store import write_transaction
from mdsdys.store.audit import log_action
from mdsdys.store.cells import Proposal, get_proposal
from mdsdys.store.patches import Cell, get_cell, get_patch_image
from mdsdys.store.reads import Read, own_read, put_read, read_history, retire_read
from mdsdys.store.review import next_unread_cell
from mdsdys.store.slides import get_slide, load_scheme
from mdsdys.store.users import User

REVIEW_ROLES = ("reader", "adjudicator")


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


def load_cell_view(db: Database, viewer: User, cell_id: int, show_proposal: bool = True) -> CellView:
    """The viewer's view of a cell: crop, context, proposal and their own read only."""
    auth.require_role(viewer, *REVIEW_ROLES)
    cell = get_cell(db, cell_id)
    slide = get_slide(db, cell.slide_id)
    image = read_rgb(get_patch_image(db, cell.patch_id).data)
    nucleus = read_rgb(cell.nucleus_png)[..., 0] if cell.nucleus_png else None
    return CellView(
        cell, slide.case_id, load_scheme(db, slide.scheme_name), cell_crop(image, cell.box),
        context_view(image, cell.box), nucleus,
        get_proposal(db, cell_id) if show_proposal else None, own_read(db, viewer.id, cell_id),
    )


def record_read(db: Database, viewer: User, cell_id: int, code: str, tags: Sequence[str] = (),
                seconds: float | None = None, proposal_hidden: bool = False) -> Read:
    """Save the viewer's read of a cell (earlier versions are kept) and audit it."""
    auth.require_role(viewer, *REVIEW_ROLES)
    scheme = load_scheme(db, get_slide(db, get_cell(db, cell_id).slide_id).scheme_name)
    allowed = scheme.features_for(code)  # raises SchemeError for an unknown code
    unknown = [t for t in tags if t not in allowed]
    if unknown:
        raise MdsdysError(f"Feature tags {unknown} do not apply to {code}; choose from {list(allowed) or 'none'}.")
    with write_transaction(db):
        previous = put_read(db, cell_id, viewer.id, code, tags, "reader", seconds, proposal_hidden)
        log_action(db, viewer, "read_change" if previous else "read", "cell", cell_id,
                   before=_summary(previous), after={"code": code, "tags": list(tags)})
    return own_read(db, viewer.id, cell_id)


def _summary(read: Read | None) -> dict | None:
    return {"code": read.code, "tags": list(read.tags)} if read else None


def accept_proposal(db: Database, viewer: User, cell_id: int, seconds: float | None = None) -> Read:
    """Record the model's top class as the viewer's read."""
    proposal = get_proposal(db, cell_id)
    if proposal is None:
        raise MdsdysError("This cell has no model proposal to accept; choose a class with its key.")
    return record_read(db, viewer, cell_id, proposal.ranked[0][0], seconds=seconds)


def undo_read(db: Database, viewer: User, cell_id: int) -> Read | None:
    """Take back the viewer's latest read of a cell: the version before it (if any) becomes current again."""
    auth.require_role(viewer, *REVIEW_ROLES)
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
    """The next cell this viewer has not read, skipping the ones they skipped this session."""
    auth.require_role(viewer, *REVIEW_ROLES)
    return next_unread_cell(db, viewer.id, slide_id, mode, skipped)


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


def tags_for_code(scheme: LabelScheme, code: str, selected: Sequence[str]) -> list[str]:
    """The selected feature tags that apply to the class chosen (others are dropped)."""
    allowed = set(scheme.features_for(code))
    return [tag for tag in selected if tag in allowed]


def load_crops(db: Database, viewer: User, cell_ids: Sequence[int]) -> dict[int, np.ndarray]:
    """Square crops of several cells, decoding each patch image once: {cell id: (S, S, 3) uint8}."""
    auth.require_role(viewer, *REVIEW_ROLES)
    cells = [get_cell(db, cell_id) for cell_id in cell_ids]
    images: dict[int, np.ndarray] = {}
    crops = {}
    for cell in cells:
        if cell.patch_id not in images:
            images[cell.patch_id] = read_rgb(get_patch_image(db, cell.patch_id).data)
        crops[cell.id] = cell_crop(images[cell.patch_id], cell.box)
    return crops
