"""Whole-slide scans and where each field cut from one lies on it (issue 18)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from mdsdys.store.db import select_in, utcnow


@dataclass(frozen=True)
class ScanRecord:
    """What the store keeps of a slide's scan."""

    slide_id: int
    file_name: str
    format: str
    width: int                 # level-0 px
    height: int
    mpp_x: float | None        # µm per level-0 px, None when the scan did not say
    mpp_y: float | None
    metadata: dict[str, Any]
    overview_jpeg: bytes
    overview_scale: float      # overview px per level-0 px


@dataclass(frozen=True)
class FieldPosition:
    """A field's box on its scan, in level-0 px."""

    patch_id: int
    box: tuple[int, int, int, int]  # (x, y, w, h)
    zone_score: float | None


def save_scan(db: Database, scan: ScanRecord) -> None:
    """Store (or replace) the scan record of a slide; the caller holds the write transaction."""
    db.execute(
        "INSERT OR REPLACE INTO slide_scans (slide_id, file_name, format, width, height, mpp_x, mpp_y, metadata, "
        "overview_jpeg, overview_scale, imported_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [scan.slide_id, scan.file_name, scan.format, scan.width, scan.height, scan.mpp_x, scan.mpp_y,
         json.dumps(scan.metadata, sort_keys=True), scan.overview_jpeg, scan.overview_scale, utcnow()],
    )


def get_scan(db: Database, slide_id: int) -> ScanRecord | None:
    """The scan a slide came from, or None for slides of plain fields."""
    row = db.execute(
        "SELECT slide_id, file_name, format, width, height, mpp_x, mpp_y, metadata, overview_jpeg, overview_scale "
        "FROM slide_scans WHERE slide_id = ?", [slide_id]).fetchone()
    if row is None:
        return None
    return ScanRecord(*row[:7], json.loads(row[7]), row[8], row[9])


def save_field_position(db: Database, patch_id: int, box: tuple[int, int, int, int], zone_score: float | None) -> bool:
    """Record where a field lies on its scan unless already known; True when stored now."""
    cursor = db.execute("INSERT OR IGNORE INTO field_positions (patch_id, x, y, w, h, zone_score) VALUES (?, ?, ?, ?, ?, ?)",
                        [patch_id, *(int(v) for v in box), zone_score])
    return cursor.rowcount > 0


def field_positions(db: Database, patch_ids: Sequence[int]) -> dict[int, FieldPosition]:
    """{patch id: position} for the given fields that came from a scan."""
    rows = select_in(db, "SELECT patch_id, x, y, w, h, zone_score FROM field_positions WHERE patch_id IN ({})",
                     [int(p) for p in patch_ids])
    return {r[0]: FieldPosition(r[0], (r[1], r[2], r[3], r[4]), r[5]) for r in rows}


def positions_on_slide(db: Database, slide_id: int) -> list[FieldPosition]:
    """Every field of a slide that has a position on its scan, in import order."""
    rows = db.execute("SELECT f.patch_id, f.x, f.y, f.w, f.h, f.zone_score FROM field_positions f "
                      "JOIN patches p ON p.id = f.patch_id WHERE p.slide_id = ? ORDER BY p.id", [slide_id]).fetchall()
    return [FieldPosition(r[0], (r[1], r[2], r[3], r[4]), r[5]) for r in rows]


def cell_sizes_um(db: Database, cell_id: int) -> tuple[float | None, float | None]:
    """(nucleus, cell) diameters of a cell in µm; None until measured and the slide has a scale."""
    row = db.execute("SELECT c.nucleus_px * s.um_per_px, c.cell_px * s.um_per_px FROM cells c "
                     "JOIN slides s ON s.id = c.slide_id WHERE c.id = ?", [cell_id]).fetchone()
    return (row[0], row[1]) if row else (None, None)
