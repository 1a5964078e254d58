"""Queries behind gold cells and calibration reads (issue 17). Nothing here touches `reads`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlite_utils import Database

from mdsdys.store.db import utcnow


@dataclass(frozen=True)
class CalibrationRead:
    """A gold cell served to a reader in the queue of another slide, and their answer."""

    id: int
    cell_id: int
    reader_id: int
    slide_id: int
    served_at: str
    first_code: str | None
    code: str | None
    tags: tuple[str, ...]
    seconds: float | None
    answered_at: str | None


_COLUMNS = "id, cell_id, reader_id, slide_id, served_at, first_code, code, tags, seconds, answered_at"


def _calibration(row: Sequence) -> CalibrationRead:
    return CalibrationRead(row[0], row[1], row[2], row[3], row[4], row[5], row[6], tuple(json.loads(row[7])),
                           row[8], row[9])


def put_gold(db: Database, cell_id: int, code: str, marked_by: int) -> None:
    """Mark a cell gold with the class it is scored against (replacing an earlier mark)."""
    db.execute("INSERT INTO gold_cells (cell_id, code, marked_by, created_at) VALUES (?, ?, ?, ?) "
               "ON CONFLICT (cell_id) DO UPDATE SET code = excluded.code, marked_by = excluded.marked_by, "
               "created_at = excluded.created_at", [cell_id, code, marked_by, utcnow()])


def delete_gold(db: Database, cell_id: int) -> None:
    """Take a cell out of the gold set (its calibration reads stay as history)."""
    db.execute("DELETE FROM gold_cells WHERE cell_id = ?", [cell_id])


def gold_codes(db: Database) -> dict[int, str]:
    """{cell id: gold class} of every gold cell."""
    return dict(db.execute("SELECT cell_id, code FROM gold_cells").fetchall())


def gold_candidates(db: Database, reader_id: int, slide_id: int) -> list[tuple[int, int]]:
    """Gold cells of OTHER slides not yet served to this reader on this slide and not read by them:
    (cell id, times served to this reader before), least served first."""
    return db.execute(
        """
        SELECT g.cell_id, (SELECT COUNT(*) FROM calibration_reads k WHERE k.cell_id = g.cell_id AND k.reader_id = ?)
        FROM gold_cells g CROSS JOIN cells c ON c.id = g.cell_id  -- CROSS: walk the few gold cells, not cells
        WHERE c.slide_id != ?
          AND NOT EXISTS (SELECT 1 FROM calibration_reads k WHERE k.cell_id = g.cell_id AND k.reader_id = ?
                          AND k.slide_id = ?)
          AND NOT EXISTS (SELECT 1 FROM reads r WHERE r.cell_id = g.cell_id AND r.reader_id = ? AND r.is_current = 1)
        ORDER BY 2, g.cell_id
        """, [reader_id, slide_id, reader_id, slide_id, reader_id]).fetchall()


def count_gold_elsewhere(db: Database, slide_id: int) -> int:
    """Gold cells on slides other than this one."""
    # CROSS JOIN keeps the few gold cells as the outer loop; a plain JOIN lets SQLite scan every cell.
    return db.execute("SELECT COUNT(*) FROM gold_cells g CROSS JOIN cells c ON c.id = g.cell_id WHERE c.slide_id != ?",
                      [slide_id]).fetchone()[0]


def serve_calibration(db: Database, cell_id: int, reader_id: int, slide_id: int) -> None:
    """Record that a gold cell was put in this reader's queue for this slide."""
    db.execute("INSERT OR IGNORE INTO calibration_reads (cell_id, reader_id, slide_id, served_at) VALUES (?, ?, ?, ?)",
               [cell_id, reader_id, slide_id, utcnow()])


def calibration_for(db: Database, reader_id: int, slide_id: int, cell_id: int) -> CalibrationRead | None:
    """The serve of this gold cell to this reader on this slide, if any."""
    row = db.execute(f"SELECT {_COLUMNS} FROM calibration_reads WHERE reader_id = ? AND slide_id = ? AND cell_id = ?",
                     [reader_id, slide_id, cell_id]).fetchone()
    return _calibration(row) if row else None


def open_calibrations(db: Database, reader_id: int, slide_id: int) -> list[int]:
    """Gold cells served to this reader on this slide and not answered (or undone), oldest first."""
    return [r[0] for r in db.execute(
        "SELECT cell_id FROM calibration_reads WHERE reader_id = ? AND slide_id = ? AND code IS NULL ORDER BY id",
        [reader_id, slide_id]).fetchall()]


def answered_calibrations(db: Database, reader_id: int, slide_id: int) -> int:
    """How many gold cells this reader has answered in this slide's queue."""
    return db.execute("SELECT COUNT(*) FROM calibration_reads WHERE reader_id = ? AND slide_id = ? "
                      "AND code IS NOT NULL", [reader_id, slide_id]).fetchone()[0]


def answer_calibration(db: Database, calibration_id: int, code: str | None, tags: Sequence[str],
                       seconds: float | None) -> None:
    """Set the reader's answer (None = undo); the first answer is kept for scoring."""
    db.execute("UPDATE calibration_reads SET code = ?, tags = ?, seconds = COALESCE(?, seconds), "
               "first_code = COALESCE(first_code, ?), answered_at = COALESCE(answered_at, ?) WHERE id = ?",
               [code, json.dumps(list(tags)), seconds, code, utcnow() if code else None, calibration_id])


def scored_calibrations(db: Database) -> list[tuple[int, str, str, str, str, str]]:
    """(reader id, reader name, first answer, gold class, gold cell's scheme, answered at) of every
    answered calibration read, by reader then time."""
    return db.execute(
        "SELECT k.reader_id, u.username, k.first_code, g.code, sc.name, k.answered_at FROM calibration_reads k "
        "JOIN gold_cells g ON g.cell_id = k.cell_id JOIN users u ON u.id = k.reader_id "
        "JOIN cells c ON c.id = k.cell_id JOIN slides s ON s.id = c.slide_id JOIN schemes sc ON sc.id = s.scheme_id "
        "WHERE k.first_code IS NOT NULL ORDER BY k.reader_id, k.answered_at, k.id").fetchall()


def settled_cells(db: Database, limit: int = 2000) -> list[tuple[int, str, str]]:
    """(cell id, slide case id, consensus class) of cells settled by consensus, newest first."""
    return db.execute(
        "SELECT k.cell_id, s.case_id, k.code FROM consensus k JOIN cells c ON c.id = k.cell_id "
        "JOIN slides s ON s.id = c.slide_id ORDER BY k.created_at DESC LIMIT ?", [limit]).fetchall()
