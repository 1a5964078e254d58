"""Per-slide label counts in one aggregate query, for the dashboard at the paper's scale."""

from __future__ import annotations

from sqlite_utils import Database

LABEL_SOURCES = ("final", "human", "model")

# The same precedence as mdsdys.labels.resolve_final_label, in SQL: consensus, then the read every
# reader agrees on (MIN = MAX over current reads), then, for 'final' only, the model's proposal.
_COUNTS = """
WITH r AS (SELECT cell_id, MIN(code) AS lo, MAX(code) AS hi FROM reads WHERE is_current = 1 GROUP BY cell_id)
SELECT c.slide_id, {label} AS final_code, COUNT(*) AS n
FROM cells c LEFT JOIN consensus k ON k.cell_id = c.id LEFT JOIN r ON r.cell_id = c.id
LEFT JOIN proposals p ON p.cell_id = c.id
GROUP BY c.slide_id, final_code
"""
_LABELS = {
    "final": "COALESCE(k.code, CASE WHEN r.lo = r.hi THEN r.lo END, p.top_code)",
    "human": "COALESCE(k.code, CASE WHEN r.lo = r.hi THEN r.lo END)",
    "model": "p.top_code",
}


def label_counts(db: Database, source: str = "final") -> dict[int, dict[str | None, int]]:
    """{slide id: {class code or None (no label): cells}} under the chosen label source."""
    counts: dict[int, dict[str | None, int]] = {}
    for slide_id, code, n in db.execute(_COUNTS.format(label=_LABELS[source])).fetchall():
        counts.setdefault(slide_id, {})[code] = n
    return counts


def slide_rows(db: Database) -> list[dict]:
    """Every slide with its scheme name and diagnosis group."""
    return list(db.query(
        "SELECT s.id, s.case_id, s.diagnosis_group, sc.name AS scheme FROM slides s "
        "JOIN schemes sc ON sc.id = s.scheme_id ORDER BY s.case_id"
    ))
