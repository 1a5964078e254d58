"""Per-slide label counts for the dashboard, fast at the paper's scale (555,052 cells).

Most cells carry only a model proposal; a few thousand carry human labels. So the counts start
from per-slide model counts read off the proposals(slide_id, top_code) index, and only the
human-labelled cells are looked at one by one to move them to their human class. The precedence
is the same as mdsdys.labels.resolve_final_label: consensus, then the read every reader agrees on
(MIN = MAX over current reads), then the model.
"""

from __future__ import annotations

from collections import Counter

from sqlite_utils import Database

from mdsdys.store.reads import blind_params, visible_read

LABEL_SOURCES = ("final", "human", "model")

_HUMAN = f"""
WITH r AS (SELECT x.cell_id, MIN(x.code) AS lo, MAX(x.code) AS hi FROM reads x JOIN cells xc ON xc.id = x.cell_id
           WHERE x.is_current = 1 AND {visible_read("x", "xc.slide_id")} GROUP BY x.cell_id),
     h AS (SELECT cell_id FROM r UNION SELECT cell_id FROM consensus)
SELECT c.slide_id, COALESCE(k.code, CASE WHEN r.lo = r.hi THEN r.lo END) AS human_code, p.top_code, COUNT(*)
FROM h JOIN cells c ON c.id = h.cell_id LEFT JOIN consensus k ON k.cell_id = h.cell_id
LEFT JOIN r ON r.cell_id = h.cell_id LEFT JOIN proposals p ON p.cell_id = h.cell_id
GROUP BY c.slide_id, human_code, p.top_code
"""


def label_counts(db: Database, source: str = "final", blind_to: int | None = None) -> dict[int, dict[str | None, int]]:
    """{slide id: {class code or None (no label): cells}} under the chosen label source.

    `blind_to`: a viewer from whom other readers' reads are hidden (mdsdys.store.reads.visible_read).
    """
    totals = dict(db.execute("SELECT slide_id, COUNT(*) FROM cells GROUP BY slide_id").fetchall())
    counts: dict[int, Counter] = {slide_id: Counter() for slide_id in totals}
    if source in ("final", "model"):
        for slide_id, code, n in db.execute(
                "SELECT slide_id, top_code, COUNT(*) FROM proposals GROUP BY slide_id, top_code").fetchall():
            counts.setdefault(slide_id, Counter())[code] += n
    if source in ("final", "human"):
        for slide_id, human, model, n in db.execute(_HUMAN, blind_params(db, blind_to)).fetchall():
            if human is None:
                continue  # readers disagree and no consensus yet: the model's class stands in ('final')
            if source == "final":
                counts[slide_id][model] -= n
            counts[slide_id][human] += n
    result = {}
    for slide_id, total in totals.items():
        labelled = {code: n for code, n in counts[slide_id].items() if code is not None and n > 0}
        unlabelled = total - sum(labelled.values())
        result[slide_id] = labelled | ({None: unlabelled} if unlabelled else {})
    return result


def slide_rows(db: Database) -> list[dict]:
    """Every slide with its scheme name and diagnosis group."""
    return list(db.query(
        "SELECT s.id, s.case_id, s.diagnosis_group, sc.name AS scheme FROM slides s "
        "JOIN schemes sc ON sc.id = s.scheme_id ORDER BY s.case_id"
    ))


_SOURCES = """
WITH r AS (SELECT cell_id, MIN(code) AS lo, MAX(code) AS hi FROM reads WHERE is_current = 1 GROUP BY cell_id)
SELECT c.slide_id, COUNT(*) AS cells,
       SUM(k.cell_id IS NOT NULL) AS consensus,
       SUM(k.cell_id IS NULL AND r.lo = r.hi) AS agreed,
       SUM(k.cell_id IS NULL AND r.lo <> r.hi) AS disputed,
       SUM(k.cell_id IS NULL AND r.cell_id IS NULL AND p.cell_id IS NOT NULL) AS model_only
FROM cells c LEFT JOIN consensus k ON k.cell_id = c.id LEFT JOIN r ON r.cell_id = c.id
LEFT JOIN proposals p ON p.cell_id = c.id
GROUP BY c.slide_id
"""


def source_counts(db: Database) -> dict[int, dict[str, int]]:
    """{slide id: cells, consensus, agreed (read, readers agree), disputed (read, readers differ), model_only}."""
    return {row["slide_id"]: {k: int(v or 0) for k, v in row.items() if k != "slide_id"}
            for row in db.query(_SOURCES)}
