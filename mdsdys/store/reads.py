"""Readers' labels of cells, with every earlier version kept.

Blinding (issue 4) is enforced here: every function a reader's pages call takes the
viewer and returns only that viewer's own reads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlite_utils import Database

from mdsdys.store.db import utcnow, write_transaction


@dataclass(frozen=True)
class Read:
    """One reader's current label of one cell."""

    id: int
    cell_id: int
    reader_id: int
    code: str
    tags: tuple[str, ...]
    source: str
    seconds: float | None
    proposal_hidden: bool
    created_at: str


def _read(row: dict) -> Read:
    return Read(row["id"], row["cell_id"], row["reader_id"], row["code"], tuple(json.loads(row["tags"])),
                row["source"], row["seconds"], bool(row["proposal_hidden"]), row["created_at"])


def put_read(db: Database, cell_id: int, reader_id: int, code: str, tags: Sequence[str] = (),
             source: str = "reader", seconds: float | None = None, proposal_hidden: bool = False) -> Read | None:
    """Make this the reader's current read of the cell; returns the read it replaced, if any.

    Earlier versions stay in the table with is_current = 0.
    """
    with write_transaction(db):
        previous = own_read(db, reader_id, cell_id)
        if previous:
            db.execute("UPDATE reads SET is_current = 0 WHERE id = ?", [previous.id])
        db.execute(
            "INSERT INTO reads (cell_id, reader_id, code, tags, source, seconds, proposal_hidden, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [cell_id, reader_id, code, json.dumps(list(tags)), source, seconds, int(proposal_hidden), utcnow()],
        )
    return previous


def own_read(db: Database, reader_id: int, cell_id: int) -> Read | None:
    """The viewer's own current read of a cell, or None. Never another reader's."""
    rows = list(db.query(
        "SELECT * FROM reads WHERE cell_id = ? AND reader_id = ? AND is_current = 1", [cell_id, reader_id]
    ))
    return _read(rows[0]) if rows else None


def imported_read(db: Database, cell_id: int) -> Read | None:
    """The label a cell came with from an import (from a labelled data set, not a reader)."""
    rows = list(db.query(
        "SELECT * FROM reads WHERE cell_id = ? AND source = 'imported' AND is_current = 1", [cell_id]
    ))
    return _read(rows[0]) if rows else None


def read_history(db: Database, reader_id: int, cell_id: int) -> list[Read]:
    """Every version of the viewer's own read of a cell, oldest first."""
    rows = db.query("SELECT * FROM reads WHERE cell_id = ? AND reader_id = ? ORDER BY id", [cell_id, reader_id])
    return [_read(r) for r in rows]


def reader_progress(db: Database, reader_id: int, slide_id: int) -> dict[str, int]:
    """One slide's cells, how many this reader has read, and how many remain."""
    cells = db.execute("SELECT COUNT(*) FROM cells WHERE slide_id = ?", [slide_id]).fetchone()[0]
    reviewed = db.execute(
        "SELECT COUNT(*) FROM reads r JOIN cells c ON c.id = r.cell_id "
        "WHERE r.reader_id = ? AND r.is_current = 1 AND c.slide_id = ?", [reader_id, slide_id],
    ).fetchone()[0]
    return {"cells": cells, "reviewed": reviewed, "remaining": cells - reviewed}


def slides_with_cells(db: Database) -> list[int]:
    """Ids of the slides that have at least one cell."""
    return [r[0] for r in db.execute(
        "SELECT s.id FROM slides s WHERE EXISTS (SELECT 1 FROM cells c WHERE c.slide_id = s.id) ORDER BY s.case_id"
    ).fetchall()]


def retire_read(db: Database, read_id: int) -> None:
    """Mark a read as no longer current (the row is kept as history)."""
    db.execute("UPDATE reads SET is_current = 0 WHERE id = ?", [read_id])


def blind_params(db: Database, viewer_id: int | None) -> dict:
    """Named parameters for `visible_read`: the viewer and the slides on which they read as a reader."""
    if viewer_id is None:
        return {"viewer": None, "viewer_slides": "[]"}
    slides = [r[0] for r in db.execute(
        "SELECT DISTINCT c.slide_id FROM reads r JOIN cells c ON c.id = r.cell_id "
        "WHERE r.reader_id = ? AND r.is_current = 1 AND r.source = 'reader'", [viewer_id]).fetchall()]
    return {"viewer": viewer_id, "viewer_slides": json.dumps(slides)}


def visible_read(read: str, slide: str) -> str:
    """SQL that is true when read `read` (on a cell of slide `slide`) may be shown to :viewer.

    Someone who reads a slide as a reader (adjudicators too) sees other readers' reads of its cells
    only on cells they have read themselves (issue 15 item 7): the rule consensus applies. Imported
    labels, their own reads, and slides they do not read are not hidden. :viewer NULL hides nothing.
    """
    return f"""(:viewer IS NULL OR {read}.source != 'reader' OR {read}.reader_id = :viewer
        OR {slide} NOT IN (SELECT value FROM json_each(:viewer_slides))
        OR EXISTS (SELECT 1 FROM reads mine WHERE mine.cell_id = {read}.cell_id AND mine.reader_id = :viewer
                   AND mine.is_current = 1))"""


def own_code_counts(db: Database, reader_id: int, slide_id: int) -> dict[str, int]:
    """{code: cells} of this reader's own current reads on a slide (the counting rule's input; blind)."""
    return dict(db.execute(
        "SELECT r.code, COUNT(*) FROM reads r JOIN cells c ON c.id = r.cell_id "
        "WHERE r.reader_id = ? AND r.is_current = 1 AND r.source = 'reader' AND c.slide_id = ? GROUP BY r.code",
        [reader_id, slide_id]).fetchall())


def reader_codes_by_cell(db: Database, slide_ids: Sequence[int]) -> dict[int, list[str]]:
    """{cell id: every reader's current code} on these slides, imports left out (agreement only: this unblinds)."""
    if not slide_ids:
        return {}
    marks = ",".join("?" * len(slide_ids))
    rows = db.execute(
        f"SELECT r.cell_id, r.code FROM reads r JOIN cells c ON c.id = r.cell_id WHERE r.is_current = 1 "
        f"AND r.source = 'reader' AND c.slide_id IN ({marks}) ORDER BY r.cell_id, r.reader_id", list(slide_ids),
    ).fetchall()
    result: dict[int, list[str]] = {}
    for cell_id, code in rows:
        result.setdefault(cell_id, []).append(code)
    return result
