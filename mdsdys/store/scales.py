"""A slide's scale: the nucleus diameter a person set, or one the segmenter estimated (issue 3)."""

from __future__ import annotations

from sqlite_utils import Database

from mdsdys.errors import NotFoundError


def slide_scale(db: Database, slide_id: int) -> tuple[float | None, float | None, bool]:
    """(nucleus diameter px, µm per px, whether the diameter is an estimate) of a slide."""
    row = db.execute(
        "SELECT nucleus_diameter_px, um_per_px, diameter_estimated FROM slides WHERE id = ?", [slide_id]
    ).fetchone()
    if row is None:
        raise NotFoundError(f"No slide with id {slide_id}.")
    return row[0], row[1], bool(row[2])


def store_estimated_diameter(db: Database, slide_id: int, diameter_px: float) -> bool:
    """Record an estimated nucleus diameter unless the slide already has one; True when stored."""
    cursor = db.execute(
        "UPDATE slides SET nucleus_diameter_px = ?, diameter_estimated = 1 "
        "WHERE id = ? AND nucleus_diameter_px IS NULL", [float(diameter_px), slide_id],
    )
    return cursor.rowcount > 0
