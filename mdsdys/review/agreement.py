"""How well readers agree: Cohen's kappa with raw agreement, confusion, and slide-level decisions.

Dysplastic classes are rare and kappa is unstable for them (DOMAIN.md), so raw percent agreement
is reported beside every kappa, and agreement is also judged where it matters clinically: do both
readers put a slide on the same side of 10% dysplasia, and in the same blast band?
This view unblinds reads, so it is for adjudicators and admins.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlite_utils import Database

from mdsdys import stats
from mdsdys.accounts import auth
from mdsdys.labels import HUMAN_SOURCES
from mdsdys.schemes import DIAGNOSTIC_LINEAGES, LabelScheme
from mdsdys.store.cells import get_proposal
from mdsdys.store.consensus import paired_reads, reads_against_consensus
from mdsdys.store.labels import final_labels
from mdsdys.store.slides import get_slide, load_scheme
from mdsdys.store.users import User
from mdsdys.who import DYSPLASIA_LINE, blast_band

# CellaVision's pre-classification against the verified classification, the kappa the issue compares to.
CELLAVISION_KAPPA = 0.52


def _pair(a: Sequence[str], b: Sequence[str], labels: Sequence[str] | None = None) -> dict[str, Any]:
    return {"kappa": stats.cohen_kappa(a, b, labels) if a else None,
            "agreement": stats.percent_agreement(a, b) if a else None, "n": len(a)}


def reader_agreement(db: Database, viewer: User, reader_a: int, reader_b: int, scheme_name: str,
                     slide_id: int | None = None) -> dict[str, Any]:
    """Kappa and raw agreement overall, per lineage and per class; the reader x reader confusion matrix."""
    auth.require_role(viewer, "adjudicator")
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
    auth.require_role(viewer, "adjudicator")
    rows = reads_against_consensus(db, reader_id, slide_id)
    return _pair([r[0] for r in rows], [r[1] for r in rows])


def model_against_final(db: Database, viewer: User, scheme_name: str, slide_id: int | None = None) -> dict[str, Any]:
    """The model's proposals against the final human labels, beside CellaVision's published 0.52."""
    auth.require_role(viewer, "adjudicator")
    model, human = [], []
    for cell in final_labels(db, scheme_name, slide_id, human_only=True):
        proposal = get_proposal(db, cell.cell_id)
        if proposal is not None and cell.label.source in HUMAN_SOURCES:
            model.append(proposal.ranked[0][0])
            human.append(cell.label.code)
    return _pair(model, human) | {"cellavision_kappa": CELLAVISION_KAPPA}


def decision_agreement(db: Database, viewer: User, reader_a: int, reader_b: int) -> list[dict[str, Any]]:
    """Per slide: does each reader, from their own reads, fall on the same side of 10% and in the same blast band?"""
    auth.require_role(viewer, "adjudicator")
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
