"""Counts for `mdsdys status`, the home page and the slide list."""

from __future__ import annotations

from sqlite_utils import Database

# status key -> table; reads count only current versions, as a user thinks of them.
_COUNTS = {
    "slides": "SELECT COUNT(*) FROM slides",
    "patches": "SELECT COUNT(*) FROM patches WHERE kind = 'field'",
    "masks": "SELECT COUNT(*) FROM masks",
    "cells": "SELECT COUNT(*) FROM cells",
    "reads": "SELECT COUNT(*) FROM reads WHERE is_current = 1",
    "consensus": "SELECT COUNT(*) FROM consensus",
    "models": "SELECT COUNT(*) FROM models",
    "jobs": "SELECT COUNT(*) FROM jobs",
}


def store_counts(db: Database) -> dict[str, int]:
    """How many slides, patches, masks, cells, reads, consensus decisions, models and jobs are stored."""
    return {key: int(db.execute(sql).fetchone()[0]) for key, sql in _COUNTS.items()}


def slide_overview(db: Database, reader_id: int | None = None) -> list[dict]:
    """One row per slide: scheme, patch, mask and cell counts, how many cells have any human read,
    and how many this reader has read (my_reads)."""
    return list(db.query(
        """
        SELECT s.id, s.case_id, sc.name AS scheme, s.diagnosis_group,
               (SELECT COUNT(*) FROM patches p WHERE p.slide_id = s.id AND p.kind = 'field') AS patches,
               (SELECT COUNT(*) FROM masks m JOIN patches p ON p.id = m.patch_id WHERE p.slide_id = s.id) AS masks,
               (SELECT COUNT(*) FROM cells c WHERE c.slide_id = s.id) AS cells,
               (SELECT COUNT(DISTINCT r.cell_id) FROM reads r JOIN cells c ON c.id = r.cell_id
                 WHERE c.slide_id = s.id AND r.is_current = 1) AS labelled_cells,
               (SELECT COUNT(*) FROM reads r JOIN cells c ON c.id = r.cell_id
                 WHERE c.slide_id = s.id AND r.is_current = 1 AND r.reader_id = ?) AS my_reads
        FROM slides s JOIN schemes sc ON sc.id = s.scheme_id ORDER BY s.case_id
        """, [reader_id]
    ))


def own_read_count(db: Database, reader_id: int) -> int:
    """How many cells this reader has a current read of."""
    return int(db.execute("SELECT COUNT(*) FROM reads WHERE reader_id = ? AND is_current = 1", [reader_id]).fetchone()[0])
