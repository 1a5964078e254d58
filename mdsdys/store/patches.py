"""Patch images (content-addressed), nucleus masks and cells."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlite_utils import Database

from mdsdys.errors import NotFoundError
from mdsdys.store.db import select_in, utcnow


@dataclass(frozen=True)
class StoredImage:
    """An image file exactly as stored: see mdsdys.imaging.decode.DecodedImage."""

    sha256: str
    width: int
    height: int
    mime: str
    data: bytes


@dataclass(frozen=True)
class Cell:
    """A nucleated cell: a box on a patch, with its nucleus mask when known."""

    id: int
    slide_id: int
    patch_id: int
    box: tuple[int, int, int, int]  # (x, y, w, h) in patch pixels
    source: str
    nucleus_png: bytes | None


def add_patch(db: Database, slide_id: int, image: StoredImage, name: str, kind: str = "field") -> tuple[int, bool]:
    """Store an image once and attach it to a slide; returns (patch id, created)."""
    db.execute(
        "INSERT OR IGNORE INTO images (sha256, width, height, mime, data) VALUES (?, ?, ?, ?, ?)",
        [image.sha256, image.width, image.height, image.mime, image.data],
    )
    row = db.execute(
        "SELECT id FROM patches WHERE slide_id = ? AND image_sha256 = ?", [slide_id, image.sha256]
    ).fetchone()
    if row:
        return row[0], False
    cursor = db.execute(
        "INSERT INTO patches (slide_id, image_sha256, name, kind, created_at) VALUES (?, ?, ?, ?, ?)",
        [slide_id, image.sha256, name, kind, utcnow()],
    )
    return cursor.lastrowid, True


def images_on_slide(db: Database, slide_id: int, hashes: Sequence[str]) -> set[str]:
    """Which of these image SHA-256 digests the slide already holds as patches."""
    rows = select_in(db, "SELECT image_sha256 FROM patches WHERE slide_id = ? AND image_sha256 IN ({})",
                     hashes, [slide_id])
    return {row[0] for row in rows}


def get_patch_image(db: Database, patch_id: int) -> StoredImage:
    """The stored image of a patch; raises NotFoundError."""
    row = db.execute(
        "SELECT i.sha256, i.width, i.height, i.mime, i.data FROM patches p "
        "JOIN images i ON i.sha256 = p.image_sha256 WHERE p.id = ?", [patch_id],
    ).fetchone()
    if row is None:
        raise NotFoundError(f"No patch with id {patch_id}.")
    return StoredImage(*row)


def list_patches(db: Database, slide_id: int, kind: str | None = "field") -> list[dict]:
    """Patches of a slide with their sizes and mask counts, in import order."""
    return list(db.query(
        "SELECT p.id, p.name, p.kind, i.width, i.height, "
        "(SELECT COUNT(*) FROM masks m WHERE m.patch_id = p.id) AS masks "
        "FROM patches p JOIN images i ON i.sha256 = p.image_sha256 "
        "WHERE p.slide_id = ? AND (? IS NULL OR p.kind = ?) ORDER BY p.id",
        [slide_id, kind, kind],
    ))


def save_mask(db: Database, patch_id: int, annotator_id: int, source: str, png: bytes, nuclei: int) -> bool:
    """Insert or replace an annotator's mask of a patch; returns True when it was new."""
    existed = db.execute(
        "SELECT 1 FROM masks WHERE patch_id = ? AND annotator_id = ?", [patch_id, annotator_id]
    ).fetchone()
    db.execute(
        "INSERT INTO masks (patch_id, annotator_id, source, png, nuclei, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (patch_id, annotator_id) DO UPDATE SET source = excluded.source, png = excluded.png, "
        "nuclei = excluded.nuclei, updated_at = excluded.updated_at",
        [patch_id, annotator_id, source, png, nuclei, utcnow()],
    )
    return existed is None


def get_masks(db: Database, patch_id: int) -> list[dict]:
    """Every stored mask of a patch, newest first."""
    return list(db.query(
        "SELECT m.*, u.username FROM masks m JOIN users u ON u.id = m.annotator_id "
        "WHERE m.patch_id = ? ORDER BY m.updated_at DESC", [patch_id],
    ))


def add_cell(db: Database, slide_id: int, patch_id: int, box: tuple[int, int, int, int], source: str,
             nucleus_png: bytes | None = None, model_id: int | None = None,
             thumbnail: bytes | None = None) -> tuple[int, bool]:
    """Insert a cell unless one with the same box exists on the patch; returns (cell id, created).

    `thumbnail` is the cell as mdsdys.imaging.thumbnails.thumbnails_from_image cuts it; without one, the
    classifier cuts it from the patch the first time it needs the cell.
    """
    x, y, w, h = (int(v) for v in box)
    row = db.execute(
        "SELECT id FROM cells WHERE patch_id = ? AND x = ? AND y = ? AND w = ? AND h = ?", [patch_id, x, y, w, h]
    ).fetchone()
    if row:
        return row[0], False
    cursor = db.execute(
        "INSERT INTO cells (slide_id, patch_id, x, y, w, h, nucleus_png, source, model_id, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [slide_id, patch_id, x, y, w, h, nucleus_png, source, model_id, utcnow()],
    )
    if thumbnail is not None:
        db.execute("INSERT INTO cell_thumbnails (cell_id, jpeg) VALUES (?, ?)", [cursor.lastrowid, thumbnail])
    return cursor.lastrowid, True


def get_cell(db: Database, cell_id: int) -> Cell:
    """One cell; raises NotFoundError."""
    row = db.execute(
        "SELECT id, slide_id, patch_id, x, y, w, h, source, nucleus_png FROM cells WHERE id = ?", [cell_id]
    ).fetchone()
    if row is None:
        raise NotFoundError(f"No cell with id {cell_id}; it may have gone when its slide was segmented again. "
                            "Pick a cell from the Review queue or the Dashboard instead.")
    return Cell(row[0], row[1], row[2], (row[3], row[4], row[5], row[6]), row[7], row[8])


def annotation_queue(db: Database) -> list[dict]:
    """Fields in annotation order: those without any mask first, then those with one.

    Within each group the fields a segmenter was least sure about come first (once one has scored
    them, see record_uncertainty), then unscored fields, oldest first. Rows carry `uncertainty`.
    """
    return list(db.query(
        "SELECT p.id, p.name, s.case_id AS slide, i.width, i.height, "
        "(SELECT COUNT(*) FROM masks m WHERE m.patch_id = p.id) AS masks, u.uncertainty "
        "FROM patches p JOIN slides s ON s.id = p.slide_id JOIN images i ON i.sha256 = p.image_sha256 "
        "LEFT JOIN field_uncertainty u ON u.patch_id = p.id "
        "WHERE p.kind = 'field' ORDER BY masks > 0, u.uncertainty IS NULL, u.uncertainty DESC, p.id"
    ))


def record_uncertainty(db: Database, patch_id: int, model_id: int, uncertainty: float) -> None:
    """Store (replace) a segmenter's uncertainty about a field."""
    db.execute(
        "INSERT INTO field_uncertainty (patch_id, model_id, uncertainty, scored_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (patch_id) DO UPDATE SET model_id = excluded.model_id, uncertainty = excluded.uncertainty, "
        "scored_at = excluded.scored_at", [patch_id, model_id, float(uncertainty), utcnow()],
    )


def newest_masks(db: Database) -> list[dict]:
    """The newest mask of every field that has one, with its image, slide case id and slide scale.

    Rows: patch_id, case_id, mask png, image data, nucleus_diameter_px (None unless a person set it).
    """
    return list(db.query(
        "SELECT p.id AS patch_id, s.case_id, m.png, i.data AS image, "
        "CASE WHEN s.diameter_estimated = 0 THEN s.nucleus_diameter_px END AS nucleus_diameter_px "
        "FROM masks m JOIN patches p ON p.id = m.patch_id JOIN images i ON i.sha256 = p.image_sha256 "
        "JOIN slides s ON s.id = p.slide_id "
        "WHERE m.id = (SELECT m2.id FROM masks m2 WHERE m2.patch_id = m.patch_id "
        "ORDER BY m2.updated_at DESC, m2.id DESC LIMIT 1) ORDER BY s.case_id, p.id"
    ))


def mask_counts_by_slide(db: Database) -> list[dict]:
    """Per slide: fields, masked fields, and masks by source (drawn, model-seeded, imported)."""
    return list(db.query(
        """
        SELECT s.case_id AS slide,
               (SELECT COUNT(*) FROM patches p WHERE p.slide_id = s.id AND p.kind = 'field') AS fields,
               COUNT(DISTINCT m.patch_id) AS masked_fields,
               SUM(m.source = 'drawn') AS drawn, SUM(m.source = 'model_seeded') AS model_seeded,
               SUM(m.source = 'imported') AS imported
        FROM slides s JOIN patches p ON p.slide_id = s.id JOIN masks m ON m.patch_id = p.id
        GROUP BY s.id ORDER BY s.case_id
        """
    ))


def patch_slide(db: Database, patch_id: int) -> int:
    """The id of the slide a patch belongs to; raises NotFoundError."""
    row = db.execute("SELECT slide_id FROM patches WHERE id = ?", [patch_id]).fetchone()
    if row is None:
        raise NotFoundError(f"No patch with id {patch_id}.")
    return row[0]
