"""Queries behind the Review page. Every one is scoped to the viewer's own reads (blinding)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlite_utils import Database

QUEUE_MODES = ("uncertain", "slide")


def next_unread_cell(db: Database, reader_id: int, slide_id: int, mode: str = "uncertain",
                     exclude: Sequence[int] = ()) -> int | None:
    """The next cell of the slide this reader has not read, or None when none is left.

    'uncertain' orders by the proposal's top-1 minus top-2 margin (smallest first; cells without a
    proposal last); 'slide' orders as the cells lie on the slide.
    """
    order = "COALESCE(p.margin, 2.0), c.id" if mode == "uncertain" else "c.id"
    skip = f"AND c.id NOT IN ({','.join('?' * len(exclude))})" if exclude else ""
    row = db.execute(
        f"""
        SELECT c.id FROM cells c LEFT JOIN proposals p ON p.cell_id = c.id
        WHERE c.slide_id = ? {skip}
          AND NOT EXISTS (SELECT 1 FROM reads r WHERE r.cell_id = c.id AND r.reader_id = ? AND r.is_current = 1)
        ORDER BY {order} LIMIT 1
        """, [slide_id, *exclude, reader_id],
    ).fetchone()
    return row[0] if row else None


def gallery_rows(db: Database, reader_id: int, slide_id: int, limit: int = 400) -> list[dict]:
    """Cells of a slide with the proposed class and the viewer's OWN read (never another reader's)."""
    return list(db.query(
        """
        SELECT c.id AS cell_id, p.top_code AS proposed, r.code AS my_read
        FROM cells c LEFT JOIN proposals p ON p.cell_id = c.id
        LEFT JOIN reads r ON r.cell_id = c.id AND r.reader_id = ? AND r.is_current = 1
        WHERE c.slide_id = ? ORDER BY COALESCE(r.code, p.top_code, ''), c.id LIMIT ?
        """, [reader_id, slide_id, limit],
    ))
