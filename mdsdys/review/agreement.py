"""How well readers agree: Cohen's kappa with raw agreement, confusion, and slide-level decisions.

Dysplastic classes are rare and kappa is unstable for them (DOMAIN.md), so raw percent agreement
is reported beside every kappa, and agreement is also judged where it matters clinically: do both
readers put a slide on the same side of 10% dysplasia, and in the same blast band?
This view unblinds reads, so it is for adjudicators and admins.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Sequence
from typing import Any

from sqlite_utils import Database

from mdsdys import stats
from mdsdys.accounts import policy
from mdsdys.labels import HUMAN_SOURCES
from mdsdys.schemes import DIAGNOSTIC_LINEAGES, LabelScheme
from mdsdys.store.cells import get_proposal
from mdsdys.store.consensus import paired_reads, reads_against_consensus
from mdsdys.store.labels import final_labels
from mdsdys.store.reads import own_code_counts, reader_codes_by_cell
from mdsdys.store.slides import get_slide, list_slides, load_scheme
from mdsdys.store.users import User
from mdsdys.who import DYSPLASIA_LINE, blast_band

# CellaVision's pre-classification against the verified classification, the kappa the issue compares to.
CELLAVISION_KAPPA = 0.52


def _pair(a: Sequence[str], b: Sequence[str], labels: Sequence[Hashable] | None = None) -> dict[str, Any]:
    """Kappa, Gwet's AC1 (which a rare class does not collapse, issue 17) and raw agreement with n; the
    texts carry 95% intervals or say there are too few cells; None = not defined."""
    categories = list(labels) if labels is not None else sorted(set(a) | set(b), key=str)
    kappa = stats.cohen_kappa(a, b, categories) if a else None
    return {"kappa": None if kappa is None or math.isnan(kappa) else kappa,
            "ac1": stats.gwet_ac1(stats.rating_table(list(zip(a, b)), categories)) if a else None,
            "agreement": stats.percent_agreement(a, b) if a else None, "n": len(a),
            "kappa (95% CI)": stats.kappa_estimate(a, b, categories).text(2),
            "agreement (95% CI)": stats.agreement_estimate(a, b).text(2)}


def reader_agreement(db: Database, viewer: User, reader_a: int, reader_b: int, scheme_name: str,
                     slide_id: int | None = None) -> dict[str, Any]:
    """Kappa and raw agreement overall, per lineage and per class; the reader x reader confusion matrix."""
    policy.require(viewer, "agreement_view")
    scheme = load_scheme(db, scheme_name)
    pairs = [(a, b) for _, sid, a, b in paired_reads(db, reader_a, reader_b, slide_id)
             if a in scheme.codes and b in scheme.codes]
    a_codes, b_codes = [p[0] for p in pairs], [p[1] for p in pairs]
    index = {code: i for i, code in enumerate(scheme.codes)}
    confusion = [[0] * len(scheme.codes) for _ in scheme.codes]
    for a, b in pairs:
        confusion[index[a]][index[b]] += 1
    return {
        "overall": _pair(a_codes, b_codes, scheme.codes),
        "per_lineage": _per_lineage(scheme, pairs),
        "per_class": {code: _pair([a == code for a in a_codes], [b == code for b in b_codes], [True, False])
                      for code in scheme.codes},
        "confusion": confusion, "codes": list(scheme.codes),
    }


def _per_lineage(scheme: LabelScheme, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Per lineage: agreement on the class among cells both readers placed in that lineage."""
    result = {}
    for lineage in dict.fromkeys(c.lineage for c in scheme.classes):
        inside = [(a, b) for a, b in pairs if scheme.get(a).lineage == lineage == scheme.get(b).lineage]
        result[lineage] = _pair([a for a, _ in inside], [b for _, b in inside])
    return result


def against_consensus(db: Database, viewer: User, reader_id: int, slide_id: int | None = None) -> dict[str, Any]:
    """One reader's reads against the consensus decisions."""
    policy.require(viewer, "agreement_view")
    rows = reads_against_consensus(db, reader_id, slide_id)
    return _pair([r[0] for r in rows], [r[1] for r in rows])


def model_against_final(db: Database, viewer: User, scheme_name: str, slide_id: int | None = None) -> dict[str, Any]:
    """The model's proposals against the final human labels, beside CellaVision's published 0.52."""
    policy.require(viewer, "agreement_view")
    model, human = [], []
    for cell in final_labels(db, scheme_name, slide_id, human_only=True):
        proposal = get_proposal(db, cell.cell_id)
        if proposal is not None and cell.label.source in HUMAN_SOURCES:
            model.append(proposal.ranked[0][0])
            human.append(cell.label.code)
    return _pair(model, human) | {"cellavision_kappa": CELLAVISION_KAPPA}


def decision_agreement(db: Database, viewer: User, reader_a: int, reader_b: int) -> list[dict[str, Any]]:
    """Per slide: does each reader, from their own reads, fall on the same side of 10% and in the same blast band?"""
    policy.require(viewer, "agreement_view")
    by_slide: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for _, slide_id, a, b in paired_reads(db, reader_a, reader_b):
        by_slide[slide_id].append((a, b))
    rows = []
    for slide_id, pairs in sorted(by_slide.items()):
        slide = get_slide(db, slide_id)
        scheme = load_scheme(db, slide.scheme_name)
        row = {"slide": slide.case_id, "cells": len(pairs)}
        for lineage in DIAGNOSTIC_LINEAGES:
            calls = [_dysplasia_call(scheme, [p[k] for p in pairs], lineage) for k in (0, 1)]
            if calls[0] is not None or calls[1] is not None:
                row[f"{lineage} same side of 10%"] = calls[0] == calls[1]
        bands = [_blast_band(scheme, [p[k] for p in pairs]) for k in (0, 1)]
        row["same blast band"] = bands[0] == bands[1]
        row["bands"] = f"{bands[0]} / {bands[1]}"
        rows.append(row)
    return rows


def _dysplasia_call(scheme: LabelScheme, codes: list[str], lineage: str) -> bool | None:
    inside = [c for c in codes if c in scheme.codes and scheme.get(c).lineage == lineage]
    if not inside or not any(c.lineage == lineage and c.dysplastic for c in scheme.classes):
        return None
    return sum(scheme.get(c).dysplastic is True for c in inside) / len(inside) >= DYSPLASIA_LINE


def _blast_band(scheme: LabelScheme, codes: list[str]) -> str:
    known = [c for c in codes if c in scheme.codes]
    blasts = sum(scheme.get(c).lineage == "blast" for c in known)
    return blast_band(blasts / len(known)) if known else "n/a"


def panel_agreement(db: Database, viewer: User, scheme_name: str, slide_id: int | None = None) -> dict[str, Any]:
    """Agreement among every reader of each cell: Fleiss' kappa and AC1 over cells read by three or more
    readers (Fleiss 1971 needs a panel), AC1 over every cell read twice or more. None = not defined."""
    policy.require(viewer, "agreement_view")
    scheme = load_scheme(db, scheme_name)
    slide_ids = [s.id for s in list_slides(db) if s.scheme_name == scheme_name and slide_id in (None, s.id)]
    by_cell = {c: codes for c, codes in reader_codes_by_cell(db, slide_ids).items()
               if len(codes) >= 2 and all(code in scheme.codes for code in codes)}
    panel = [codes for codes in by_cell.values() if len(codes) >= 3]
    table_all = stats.rating_table(list(by_cell.values()), scheme.codes)
    table_panel = stats.rating_table(panel, scheme.codes)
    return {"cells_read_twice": len(by_cell), "cells_read_by_three": len(panel),
            "fleiss_kappa": stats.fleiss_kappa(table_panel) if panel else None,
            "ac1_panel": stats.gwet_ac1(table_panel) if panel else None,
            "ac1_all": stats.gwet_ac1(table_all) if by_cell else None}


def slide_percent_agreement(db: Database, viewer: User, reader_ids: Sequence[int],
                            scheme_name: str) -> dict[str, dict[str, Any]]:
    """Per lineage, the readers' own dysplasia % per slide: ICC(A,1) across slides (McGraw & Wong 1996,
    = Shrout & Fleiss ICC(2,1)) and, for two readers, Bland-Altman bias and 95% limits in % points."""
    policy.require(viewer, "agreement_view")
    scheme = load_scheme(db, scheme_name)
    slides = [s for s in list_slides(db) if s.scheme_name == scheme_name]
    counts = {(s.id, r): own_code_counts(db, r, s.id) for s in slides for r in reader_ids}
    result = {}
    for lineage in DIAGNOSTIC_LINEAGES:
        if not any(c.lineage == lineage and c.dysplastic for c in scheme.classes):
            continue
        matrix = [[_dysplasia_pct(scheme, counts[(s.id, r)], lineage) for r in reader_ids] for s in slides]
        rows = [(s.case_id, row) for s, row in zip(slides, matrix) if not any(math.isnan(v) for v in row)]
        result[lineage] = {"slides": len(rows), "icc": stats.icc_agreement([r for _, r in rows]) if rows else None,
                           "points": rows}
        if len(reader_ids) == 2:
            result[lineage]["bland_altman"] = stats.bland_altman([r[0] for _, r in rows], [r[1] for _, r in rows])
    return result


def _dysplasia_pct(scheme: LabelScheme, counts: dict[str, int], lineage: str) -> float:
    """A reader's dysplasia % of one lineage on one slide, NaN when they read none of its cells."""
    inside = {code: n for code, n in counts.items() if code in scheme.codes and scheme.get(code).lineage == lineage}
    total = sum(inside.values())
    return 100 * sum(n for code, n in inside.items() if scheme.get(code).dysplastic) / total if total else math.nan
