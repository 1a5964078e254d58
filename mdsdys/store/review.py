"""Queries behind the Review page. Every one is scoped to the viewer's own reads (blinding)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlite_utils import Database

QUEUE_MODES = ("uncertain", "slide", "settle")


def next_unread_cell(db: Database, reader_id: int, slide_id: int, mode: str = "uncertain",
                     exclude: Sequence[int] = (), first_codes: Sequence[str] = (), reads_per_cell: int = 0) -> int | None:
    """The next cell of the slide this reader has not read, or None when none is left.

    'uncertain' orders by the proposal's top-1 minus top-2 margin (smallest first; cells without a
    proposal last); 'slide' orders as the cells lie on the slide; 'settle' puts first the cells the
    model proposes as one of `first_codes`, each group in slide order (issue 17). With
    `reads_per_cell` > 0, a cell leaves every queue once that many readers have read it.
    """
    full = ("AND (SELECT COUNT(*) FROM reads o WHERE o.cell_id = c.id AND o.is_current = 1 "
            "AND o.source = 'reader') < ?") if reads_per_cell > 0 else ""
    first = ",".join("?" * len(first_codes))
    order = {"uncertain": "COALESCE(p.margin, 2.0), c.id", "slide": "c.id",
             "settle": f"CASE WHEN p.top_code IN ({first}) THEN 0 ELSE 1 END, c.id" if first_codes else "c.id"}[mode]
    skip = f"AND c.id NOT IN ({','.join('?' * len(exclude))})" if exclude else ""
    row = db.execute(
        f"""
        SELECT c.id FROM cells c LEFT JOIN proposals p ON p.cell_id = c.id
        WHERE c.slide_id = ? {skip}
          AND NOT EXISTS (SELECT 1 FROM reads r WHERE r.cell_id = c.id AND r.reader_id = ? AND r.is_current = 1)
          {full}
        ORDER BY {order} LIMIT 1
        """, [slide_id, *exclude, reader_id, *([reads_per_cell] if full else []),
              *(first_codes if mode == "settle" else ())],
    ).fetchone()
    return row[0] if row else None


_GALLERY_ORDERS = {"class": "COALESCE(r.code, p.top_code, ''), c.id",
                   "cell_um": "c.cell_px IS NULL, c.cell_px DESC, c.id",
                   "nucleus_um": "c.nucleus_px IS NULL, c.nucleus_px DESC, c.id"}


def gallery_rows(db: Database, reader_id: int, slide_id: int, limit: int = 400, order: str = "class") -> list[dict]:
    """Cells of a slide with the proposed class, the viewer's OWN read (never another reader's) and sizes in µm.

    nucleus_um and cell_um are None until the cell is measured and the slide has a scale (issue 18).
    `order`: 'class' (read, else proposal), or 'cell_um' / 'nucleus_um' for the largest first.
    """
    return list(db.query(
        f"""
        SELECT c.id AS cell_id, p.top_code AS proposed, r.code AS my_read,
               c.nucleus_px * s.um_per_px AS nucleus_um, c.cell_px * s.um_per_px AS cell_um
        FROM cells c JOIN slides s ON s.id = c.slide_id LEFT JOIN proposals p ON p.cell_id = c.id
        LEFT JOIN reads r ON r.cell_id = c.id AND r.reader_id = ? AND r.is_current = 1
        WHERE c.slide_id = ? ORDER BY {_GALLERY_ORDERS[order]} LIMIT ?
        """, [reader_id, slide_id, limit],
    ))
