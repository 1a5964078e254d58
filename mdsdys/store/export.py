"""Bulk reads for exports: every cell with every read, consensus and proposal."""

from __future__ import annotations

from sqlite_utils import Database

from mdsdys.store.reads import blind_params, visible_read


def cell_records(db: Database, slide_id: int | None = None) -> list[dict]:
    """One row per cell: slide, field, box, sizes in µm, place on the scan, source, the proposal and the consensus."""
    return list(db.query(
        """
        SELECT c.id AS cell_id, s.case_id AS slide, p.name AS field, c.patch_id, c.x, c.y, c.w, c.h,
               ROUND(c.nucleus_px * s.um_per_px, 2) AS nucleus_um, ROUND(c.cell_px * s.um_per_px, 2) AS cell_um,
               f.x + c.x AS scan_x, f.y + c.y AS scan_y,
               c.source AS cell_source, pr.top_code AS model_class, pr.margin AS model_margin, pr.probs AS model_probs,
               m.version AS model_version, k.code AS consensus, k.reason_code AS consensus_reason,
               k.reason_text AS consensus_text, u.username AS consensus_by
        FROM cells c JOIN slides s ON s.id = c.slide_id JOIN patches p ON p.id = c.patch_id
        LEFT JOIN field_positions f ON f.patch_id = c.patch_id LEFT JOIN proposals pr ON pr.cell_id = c.id LEFT JOIN models m ON m.id = pr.model_id
        LEFT JOIN consensus k ON k.cell_id = c.id LEFT JOIN users u ON u.id = k.decided_by
        WHERE (? IS NULL OR c.slide_id = ?) ORDER BY c.id
        """, [slide_id, slide_id],
    ))


def all_reads(db: Database, slide_id: int | None = None, blind_to: int | None = None) -> list[dict]:
    """Every current read (reader and imported) of the cells, with reader names; `blind_to` as in visible_read."""
    return list(db.query(
        f"""
        SELECT r.cell_id, u.username AS reader, r.code, r.tags, r.source, r.seconds, r.proposal_hidden, r.created_at
        FROM reads r JOIN users u ON u.id = r.reader_id JOIN cells c ON c.id = r.cell_id
        WHERE r.is_current = 1 AND (:slide IS NULL OR c.slide_id = :slide) AND {visible_read("r", "c.slide_id")}
        ORDER BY r.cell_id, u.username
        """, {"slide": slide_id, **blind_params(db, blind_to)},
    ))


def slide_model_versions(db: Database, slide_id: int) -> dict[str, list[str]]:
    """Which segmenter and classifier versions produced the slide's cells and proposals."""
    segmenters = [r[0] for r in db.execute(
        "SELECT DISTINCT m.version FROM cells c JOIN models m ON m.id = c.model_id WHERE c.slide_id = ?",
        [slide_id]).fetchall()]
    classifiers = [r[0] for r in db.execute(
        "SELECT DISTINCT m.version FROM proposals p JOIN cells c ON c.id = p.cell_id JOIN models m ON m.id = p.model_id "
        "WHERE c.slide_id = ?", [slide_id]).fetchall()]
    return {"segmenter": segmenters, "classifier": classifiers}


def slide_readers(db: Database, slide_id: int) -> list[str]:
    """Names of everyone who read or settled cells of the slide."""
    rows = db.execute(
        "SELECT DISTINCT u.username FROM reads r JOIN users u ON u.id = r.reader_id JOIN cells c ON c.id = r.cell_id "
        "WHERE c.slide_id = ? AND r.source = 'reader' UNION SELECT DISTINCT u.username FROM consensus k "
        "JOIN users u ON u.id = k.decided_by JOIN cells c ON c.id = k.cell_id WHERE c.slide_id = ?",
        [slide_id, slide_id]).fetchall()
    return sorted(r[0] for r in rows)
