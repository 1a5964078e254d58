"""How unlike a model's training images a slide is (issue 13): per-cell scores sit with the proposals,
one record per slide and model here. The scores themselves come from mdsdys.classify.ood."""

from __future__ import annotations

from dataclasses import dataclass

from sqlite_utils import Database

from mdsdys.store.db import utcnow, write_transaction


@dataclass(frozen=True)
class SlideOODRecord:
    """A slide's stored score against one model; score and flagged are None when it is not known."""

    slide_id: int
    model_id: int
    model_version: str
    score: float | None
    threshold: float | None
    flagged: bool | None
    n_cells: int
    scored_at: str


def proposal_ood_scores(db: Database, slide_id: int, model_id: int) -> list[float | None]:
    """Every stored per-cell score of a slide's proposals by one model (None where unknown)."""
    rows = db.execute("SELECT ood FROM proposals WHERE slide_id = ? AND model_id = ?", [slide_id, model_id])
    return [r[0] for r in rows.fetchall()]


def save_slide_ood(db: Database, slide_id: int, model_id: int, score: float | None, threshold: float | None,
                   flagged: bool | None, n_cells: int) -> None:
    """Store (replacing) a slide's score against a model."""
    with write_transaction(db):
        db.execute(
            "INSERT INTO slide_ood (slide_id, model_id, score, threshold, flagged, n_cells, scored_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (slide_id, model_id) DO UPDATE SET score = excluded.score, "
            "threshold = excluded.threshold, flagged = excluded.flagged, n_cells = excluded.n_cells, "
            "scored_at = excluded.scored_at",
            [slide_id, model_id, score, threshold, None if flagged is None else int(flagged), n_cells, utcnow()],
        )


_SELECT = ("SELECT o.slide_id, o.model_id, m.version, o.score, o.threshold, o.flagged, o.n_cells, o.scored_at "
           "FROM slide_ood o JOIN models m ON m.id = o.model_id")


def _record(row) -> SlideOODRecord:
    return SlideOODRecord(row[0], row[1], row[2], row[3], row[4], None if row[5] is None else bool(row[5]),
                          row[6], row[7])


def slide_ood_record(db: Database, slide_id: int, model_id: int | None = None) -> SlideOODRecord | None:
    """The slide's record for a model; without one, for the model that made most of its current proposals."""
    if model_id is None:
        row = db.execute("SELECT model_id FROM proposals WHERE slide_id = ? GROUP BY model_id "
                         "ORDER BY COUNT(*) DESC, MAX(created_at) DESC LIMIT 1", [slide_id]).fetchone()
        if row is None:
            return None
        model_id = row[0]
    row = db.execute(f"{_SELECT} WHERE o.slide_id = ? AND o.model_id = ?", [slide_id, model_id]).fetchone()
    return _record(row) if row else None


def slides_ood(db: Database) -> dict[int, SlideOODRecord]:
    """Each slide's record for the model behind most of its current proposals (the Dashboard's column)."""
    rows = db.execute(
        f"{_SELECT} JOIN (SELECT slide_id, model_id, ROW_NUMBER() OVER (PARTITION BY slide_id "
        "ORDER BY COUNT(*) DESC, MAX(created_at) DESC) AS k FROM proposals GROUP BY slide_id, model_id) p "
        "ON p.slide_id = o.slide_id AND p.model_id = o.model_id WHERE p.k = 1"
    ).fetchall()
    return {row[0]: _record(row) for row in rows}
