"""Where a cell lies on its whole-slide scan, and how large it is in µm, for the Review page (issue 18)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlite_utils import Database

from mdsdys.accounts import policy
from mdsdys.imaging.crops import draw_box
from mdsdys.imaging.decode import read_rgb
from mdsdys.store.patches import get_cell
from mdsdys.store.scans import cell_sizes_um, field_positions, get_scan
from mdsdys.store.users import User

_FIELD_COLOUR = (0, 200, 255)
_CELL_COLOUR = (255, 40, 40)
# The Review page shows the overview 320 px wide: a full 1024 px overview cost ~45 ms to decode and
# mark and ~115 ms for Streamlit to encode (1.9 MB to the browser) on every key press.
OVERVIEW_SIDE = 320


@dataclass(frozen=True)
class CellPlace:
    """A cell's sizes and, for fields cut from a scan, the scan's overview with the field and cell marked."""

    nucleus_um: float | None
    cell_um: float | None
    overview: np.ndarray | None  # (H, W, 3) uint8, None for plain fields

    def size_text(self) -> str:
        """'nucleus 9.1 µm · cell 14.2 µm', or why sizes are missing."""
        if self.nucleus_um is None:
            return "Size in µm unknown (the slide has no scale yet, or the cell was not measured)"
        return f"Nucleus {self.nucleus_um:.1f} µm · cell {self.cell_um:.1f} µm"


def cell_place(db: Database, viewer: User, cell_id: int) -> CellPlace:
    """The cell's sizes in µm and its place on the slide's overview."""
    policy.require(viewer, "review")
    cell = get_cell(db, cell_id)
    row = cell_sizes_um(db, cell_id)
    position = field_positions(db, [cell.patch_id]).get(cell.patch_id)
    scan = get_scan(db, cell.slide_id) if position else None
    if scan is None:
        return CellPlace(row[0], row[1], None)
    overview = read_rgb(scan.overview_jpeg, OVERVIEW_SIDE).copy()
    s = overview.shape[1] / scan.width  # overview px per level-0 px, as shown
    fx, fy, fw, fh = position.box
    draw_box(overview, (round(fx * s), round(fy * s), max(3, round(fw * s)), max(3, round(fh * s))), _FIELD_COLOUR)
    x, y, w, h = cell.box
    cx, cy = round((fx + x + w / 2) * s), round((fy + y + h / 2) * s)
    draw_box(overview, (cx - 6, cy - 6, 13, 13), _CELL_COLOUR)
    return CellPlace(row[0], row[1], overview)
