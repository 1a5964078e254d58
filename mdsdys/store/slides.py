"""Label schemes and slides."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlite_utils import Database

from mdsdys.errors import NotFoundError, SchemeError
from mdsdys.schemes import LabelClass, LabelScheme, default_scheme, validate_scheme
from mdsdys.store.db import utcnow, write_transaction


@dataclass(frozen=True)
class Slide:
    """One bone-marrow smear (one patient case)."""

    id: int
    case_id: str
    scheme_name: str
    diagnosis_group: str | None
    notes: str
    nucleus_diameter_px: float | None
    um_per_px: float | None


def save_scheme(db: Database, scheme: LabelScheme) -> int:
    """Store a new scheme with its classes; raise SchemeError if the name is taken."""
    validate_scheme(scheme)
    if find_scheme_id(db, scheme.name) is not None:
        raise SchemeError(f"A scheme named {scheme.name!r} already exists; choose another name.")
    with write_transaction(db):
        scheme_id = db.execute(
            "INSERT INTO schemes (name, description, lineage_features) VALUES (?, ?, ?)",
            [scheme.name, scheme.description, json.dumps({k: list(v) for k, v in scheme.lineage_features.items()})],
        ).lastrowid
        for position, c in enumerate(scheme.classes):
            db.execute(
                "INSERT INTO scheme_classes (scheme_id, position, code, name, lineage, dysplastic, hotkey, color) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [scheme_id, position, c.code, c.name, c.lineage,
                 None if c.dysplastic is None else int(c.dysplastic), c.hotkey, c.color],
            )
    return scheme_id


def find_scheme_id(db: Database, name: str) -> int | None:
    """The id of the scheme with this name, or None."""
    row = db.execute("SELECT id FROM schemes WHERE name = ?", [name]).fetchone()
    return row[0] if row else None


def ensure_default_scheme(db: Database) -> int:
    """The id of the paper's eight-class scheme, stored on first use."""
    scheme = default_scheme()
    return find_scheme_id(db, scheme.name) or save_scheme(db, scheme)


def load_scheme(db: Database, name: str) -> LabelScheme:
    """Read a stored scheme; raises NotFoundError naming the stored ones."""
    rows = list(db.query("SELECT * FROM schemes WHERE name = ?", [name]))
    if not rows:
        known = ", ".join(list_scheme_names(db)) or "none yet"
        raise NotFoundError(f"No label scheme named {name!r} (stored: {known}).")
    classes = tuple(
        LabelClass(r["code"], r["name"], r["lineage"], None if r["dysplastic"] is None else bool(r["dysplastic"]),
                   r["hotkey"], r["color"])
        for r in db.query("SELECT * FROM scheme_classes WHERE scheme_id = ? ORDER BY position", [rows[0]["id"]])
    )
    features = {k: tuple(v) for k, v in json.loads(rows[0]["lineage_features"]).items()}
    return LabelScheme(name, classes, features, rows[0]["description"])


def list_scheme_names(db: Database) -> list[str]:
    """Names of every stored scheme."""
    return [r[0] for r in db.execute("SELECT name FROM schemes ORDER BY name").fetchall()]


def _slide(row: dict) -> Slide:
    return Slide(row["id"], row["case_id"], row["scheme_name"], row["diagnosis_group"], row["notes"],
                 row["nucleus_diameter_px"], row["um_per_px"])


_SLIDE_SELECT = "SELECT slides.*, schemes.name AS scheme_name FROM slides JOIN schemes ON schemes.id = slides.scheme_id"


def find_slide(db: Database, case_id: str) -> Slide | None:
    """The slide with this case id, or None."""
    rows = list(db.query(f"{_SLIDE_SELECT} WHERE case_id = ?", [case_id]))
    return _slide(rows[0]) if rows else None


def get_slide(db: Database, slide_id: int) -> Slide:
    """The slide with this id; raises NotFoundError."""
    rows = list(db.query(f"{_SLIDE_SELECT} WHERE slides.id = ?", [slide_id]))
    if not rows:
        raise NotFoundError(f"No slide with id {slide_id}.")
    return _slide(rows[0])


def list_slides(db: Database) -> list[Slide]:
    """Every slide, by case id."""
    return [_slide(r) for r in db.query(f"{_SLIDE_SELECT} ORDER BY case_id")]


def ensure_slide(db: Database, case_id: str, scheme_name: str, diagnosis_group: str | None = None,
                 notes: str = "") -> tuple[Slide, bool]:
    """The slide with this case id, created with the given scheme if new; (slide, created).

    Raises SchemeError when the slide exists with another scheme: a slide uses one scheme.
    """
    case_id = case_id.strip()
    if not case_id:
        raise SchemeError("A slide needs a non-empty name (case id).")
    existing = find_slide(db, case_id)
    if existing:
        if existing.scheme_name != scheme_name:
            raise SchemeError(
                f"Slide {case_id!r} uses scheme {existing.scheme_name!r}, not {scheme_name!r}; "
                "import into a new slide or use the slide's scheme."
            )
        return existing, False
    scheme_id = find_scheme_id(db, scheme_name)
    if scheme_id is None:
        raise NotFoundError(f"No label scheme named {scheme_name!r}; load it first with 'mdsdys load-scheme FILE'.")
    db.execute(
        "INSERT INTO slides (case_id, scheme_id, diagnosis_group, notes, created_at) VALUES (?, ?, ?, ?, ?)",
        [case_id, scheme_id, diagnosis_group, notes, utcnow()],
    )
    return find_slide(db, case_id), True


def update_slide(db: Database, slide_id: int, diagnosis_group: str | None = None, notes: str | None = None,
                 nucleus_diameter_px: float | None = None, um_per_px: float | None = None) -> None:
    """Change a slide's descriptive fields or its scale."""
    changes = {"diagnosis_group": diagnosis_group, "notes": notes,
               "nucleus_diameter_px": nucleus_diameter_px, "um_per_px": um_per_px}
    for column, value in changes.items():
        if value is not None:
            db.execute(f"UPDATE slides SET {column} = ? WHERE id = ?", [value, slide_id])
