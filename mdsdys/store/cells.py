"""Cells on patches: listing, detection results, thumbnails and model proposals."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlite_utils import Database

from mdsdys.store.db import select_in, utcnow, write_transaction
from mdsdys.store.patches import Cell


@dataclass(frozen=True)
class DetectedCell:
    """A cell found by the segmenter, ready to store."""

    box: tuple[int, int, int, int]  # (x, y, w, h) in patch pixels
    nucleus_png: bytes              # (h, w) uint8 PNG inside the box, 255 = nucleus
    thumbnail: bytes | None = None  # as mdsdys.imaging.thumbnails.thumbnails_from_image cuts it
    nucleus_px: float | None = None  # equivalent-circle diameters (mdsdys.imaging.measure), px
    cell_px: float | None = None


@dataclass(frozen=True)
class Proposal:
    """A model's per-class probabilities for one cell."""

    cell_id: int
    model_id: int
    probs: Mapping[str, float]

    @property
    def ranked(self) -> list[tuple[str, float]]:
        """Classes by decreasing probability."""
        return sorted(self.probs.items(), key=lambda kv: -kv[1])


_CELL_COLUMNS = "c.id, c.slide_id, c.patch_id, c.x, c.y, c.w, c.h, c.source, c.nucleus_png"


def _cell(row: Sequence) -> Cell:
    return Cell(row[0], row[1], row[2], (row[3], row[4], row[5], row[6]), row[7], row[8])


def list_cells(db: Database, slide_id: int, unread_only: bool = False) -> list[Cell]:
    """Cells of a slide in order; with unread_only, only cells that no reader (nor an import) has labelled."""
    unread = "AND NOT EXISTS (SELECT 1 FROM reads r WHERE r.cell_id = c.id)" if unread_only else ""
    rows = db.execute(f"SELECT {_CELL_COLUMNS} FROM cells c WHERE c.slide_id = ? {unread} ORDER BY c.id", [slide_id])
    return [_cell(r) for r in rows.fetchall()]


def count_cells(db: Database, slide_id: int) -> int:
    """How many cells a slide has (an index count, not a listing)."""
    return int(db.execute("SELECT COUNT(*) FROM cells WHERE slide_id = ?", [slide_id]).fetchone()[0])


def replace_detected_cells(db: Database, patch_id: int, cells: Sequence[DetectedCell],
                           model_id: int | None) -> tuple[int, int]:
    """Swap a patch's unread detected cells for a new detection; returns (added, removed).

    Cells that any reader has labelled are never removed or changed (issue 3); an unread cell
    whose box the new detection finds again is kept as it is, so a re-run changes nothing.
    """
    with write_transaction(db):
        slide_id = db.execute("SELECT slide_id FROM patches WHERE id = ?", [patch_id]).fetchone()[0]
        wanted = {tuple(int(v) for v in cell.box) for cell in cells}
        stale = [r[0] for r in db.execute(
            "SELECT c.id, c.x, c.y, c.w, c.h FROM cells c WHERE c.patch_id = ? AND c.source = 'detected' "
            "AND NOT EXISTS (SELECT 1 FROM reads r WHERE r.cell_id = c.id) "
            "AND NOT EXISTS (SELECT 1 FROM consensus k WHERE k.cell_id = c.id)", [patch_id]).fetchall()
            if tuple(r[1:]) not in wanted]
        for cell_id in stale:
            db.execute("DELETE FROM proposals WHERE cell_id = ?", [cell_id])
            db.execute("DELETE FROM cell_thumbnails WHERE cell_id = ?", [cell_id])
            db.execute("DELETE FROM cells WHERE id = ?", [cell_id])
        by_box = {tuple(int(v) for v in c.box): c for c in cells}
        added = 0
        for x, y, w, h in sorted(wanted):
            cell = by_box[(x, y, w, h)]
            cursor = db.execute(
                "INSERT OR IGNORE INTO cells (slide_id, patch_id, x, y, w, h, nucleus_png, source, model_id, "
                "created_at, nucleus_px, cell_px) VALUES (?, ?, ?, ?, ?, ?, ?, 'detected', ?, ?, ?, ?)",
                [slide_id, patch_id, x, y, w, h, cell.nucleus_png, model_id, utcnow(), cell.nucleus_px, cell.cell_px],
            )
            if cursor.rowcount and cell.thumbnail is not None:
                save_thumbnails(db, {cursor.lastrowid: cell.thumbnail})
            added += cursor.rowcount
    return added, len(stale)


def save_proposals(db: Database, model_id: int, probs_by_cell: Mapping[int, Mapping[str, float]],
                   ood_by_cell: Mapping[int, float | None] | None = None) -> int:
    """Store (replacing) the current proposal of each cell: probabilities, top class, margin and OOD score."""
    now, ood_by_cell = utcnow(), ood_by_cell or {}
    rows = []
    for cell_id, probs in probs_by_cell.items():
        ranked = sorted(probs.values(), reverse=True)
        margin = ranked[0] - (ranked[1] if len(ranked) > 1 else 0.0)
        top = max(probs, key=probs.get)
        ood = ood_by_cell.get(cell_id)
        rows.append((cell_id, model_id, json.dumps({k: round(float(v), 6) for k, v in probs.items()}), top,
                     float(margin), now, None if ood is None or not math.isfinite(ood) else float(ood)))
    with write_transaction(db):
        db.conn.executemany(
            "INSERT INTO proposals (cell_id, model_id, probs, top_code, margin, created_at, ood, slide_id) "
            "SELECT ?, ?, ?, ?, ?, ?, ?, slide_id FROM cells WHERE id = ?1 "
            "ON CONFLICT (cell_id) DO UPDATE SET model_id = excluded.model_id, probs = excluded.probs, "
            "top_code = excluded.top_code, margin = excluded.margin, created_at = excluded.created_at, "
            "ood = excluded.ood", rows,
        )
    return len(rows)


def get_proposal(db: Database, cell_id: int) -> Proposal | None:
    """The current model proposal for a cell, or None."""
    row = db.execute("SELECT cell_id, model_id, probs FROM proposals WHERE cell_id = ?", [cell_id]).fetchone()
    return Proposal(row[0], row[1], json.loads(row[2])) if row else None


def cells_on_patch(db: Database, patch_id: int) -> list[Cell]:
    """Every cell on one patch."""
    rows = db.execute(f"SELECT {_CELL_COLUMNS} FROM cells c WHERE c.patch_id = ? ORDER BY c.id", [patch_id])
    return [_cell(r) for r in rows.fetchall()]


def model_labels(db: Database, slide_id: int) -> dict[int, str]:
    """{cell id: the model's proposed class} for a slide's cells that have a proposal."""
    rows = db.execute("SELECT p.cell_id, p.top_code FROM proposals p JOIN cells c ON c.id = p.cell_id "
                      "WHERE c.slide_id = ?", [slide_id]).fetchall()
    return dict(rows)


def kept_cell_boxes(db: Database, patch_id: int) -> list[tuple[int, int, int, int]]:
    """Boxes of a patch's cells that a new detection never replaces: read, decided, manual or imported."""
    rows = db.execute(
        "SELECT c.x, c.y, c.w, c.h FROM cells c WHERE c.patch_id = ? AND (c.source != 'detected' "
        "OR EXISTS (SELECT 1 FROM reads r WHERE r.cell_id = c.id) "
        "OR EXISTS (SELECT 1 FROM consensus k WHERE k.cell_id = c.id))", [patch_id]).fetchall()
    return [tuple(r) for r in rows]


def replaceable_cells(db: Database, patch_id: int) -> list[tuple[tuple[int, int, int, int], bytes | None]]:
    """(box, nucleus PNG) of a patch's detected cells that nobody has read: what a new detection replaces."""
    rows = db.execute(
        "SELECT c.x, c.y, c.w, c.h, c.nucleus_png FROM cells c WHERE c.patch_id = ? AND c.source = 'detected' "
        "AND NOT EXISTS (SELECT 1 FROM reads r WHERE r.cell_id = c.id) "
        "AND NOT EXISTS (SELECT 1 FROM consensus k WHERE k.cell_id = c.id)", [patch_id]).fetchall()
    return [((r[0], r[1], r[2], r[3]), r[4]) for r in rows]


def patch_image_data(db: Database, patch_ids: Sequence[int]) -> dict[int, bytes]:
    """The stored image bytes of several patches in one query: {patch id: JPEG/PNG bytes}."""
    return dict(select_in(db, "SELECT p.id, i.data FROM patches p JOIN images i ON i.sha256 = p.image_sha256 "
                              "WHERE p.id IN ({})", [int(p) for p in patch_ids]))


def cell_thumbnails(db: Database, cell_ids: Sequence[int]) -> dict[int, bytes]:
    """The stored thumbnails of several cells: {cell id: JPEG bytes}; cells without one are absent."""
    return dict(select_in(db, "SELECT cell_id, jpeg FROM cell_thumbnails WHERE cell_id IN ({})",
                          [int(c) for c in cell_ids]))


def slides_of_cells(db: Database, cell_ids: Sequence[int]) -> set[str]:
    """The case ids of the slides these cells are on (cells no longer in the store are skipped)."""
    return {row[0] for row in select_in(db, "SELECT DISTINCT s.case_id FROM cells c JOIN slides s ON s.id = c.slide_id "
                                            "WHERE c.id IN ({})", [int(c) for c in cell_ids])}


def cell_nuclei(db: Database, cell_ids: Sequence[int]) -> dict[int, bytes]:
    """The stored nucleus masks of several cells: {cell id: PNG bytes}; cells without one are absent."""
    return dict(select_in(db, "SELECT id, nucleus_png FROM cells WHERE id IN ({}) AND nucleus_png IS NOT NULL",
                          [int(c) for c in cell_ids]))


def save_thumbnails(db: Database, thumbnails: Mapping[int, bytes]) -> None:
    """Store (or replace) cells' thumbnails: {cell id: JPEG bytes}."""
    with write_transaction(db):
        db.conn.executemany("INSERT OR REPLACE INTO cell_thumbnails (cell_id, jpeg) VALUES (?, ?)",
                            [(int(k), v) for k, v in thumbnails.items()])
