"""Reading final labels in bulk, for training, the dashboard and exports."""

from __future__ import annotations

from dataclasses import dataclass

from sqlite_utils import Database

from mdsdys.labels import FinalLabel, resolve_final_label
from mdsdys.store.reads import blind_params, visible_read


@dataclass(frozen=True)
class LabelledCell:
    """A cell, its slide and its final label."""

    cell_id: int
    slide_id: int
    slide: str       # the slide's case id, used to split by patient
    patch_id: int
    box: tuple[int, int, int, int]
    label: FinalLabel


def final_labels(db: Database, scheme_name: str, slide_id: int | None = None,
                 human_only: bool = False, blind_to: int | None = None) -> list[LabelledCell]:
    """Every cell of the scheme's slides with a final label; human_only drops model-only labels.

    Training uses human_only=True: consensus first, then reads (imported labels included),
    never model proposals (issue 4). `blind_to`: a viewer from whom other readers' reads are
    hidden, as mdsdys.store.reads.visible_read says.
    """
    rows = db.execute(
        f"""
        SELECT c.id, c.slide_id, s.case_id, c.patch_id, c.x, c.y, c.w, c.h, k.code,
               (SELECT GROUP_CONCAT(r.code, char(31)) FROM reads r WHERE r.cell_id = c.id AND r.is_current = 1
                AND {visible_read("r", "c.slide_id")}),
               p.top_code
        FROM cells c JOIN slides s ON s.id = c.slide_id JOIN schemes sc ON sc.id = s.scheme_id
        LEFT JOIN consensus k ON k.cell_id = c.id LEFT JOIN proposals p ON p.cell_id = c.id
        WHERE sc.name = :scheme AND (:slide IS NULL OR c.slide_id = :slide) ORDER BY c.id
        """, {"scheme": scheme_name, "slide": slide_id, **blind_params(db, blind_to)},
    ).fetchall()
    result = []
    for row in rows:
        reads = row[9].split(chr(31)) if row[9] else []
        label = resolve_final_label(row[8], reads, None if human_only else row[10])
        if label is not None:
            result.append(LabelledCell(row[0], row[1], row[2], row[3], (row[4], row[5], row[6], row[7]), label))
    return result
