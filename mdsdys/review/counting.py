"""The counting rule applied to a slide: each lineage's state and the blast band, live (issue 17).

mdsdys.sequential holds the statistics; this module feeds it a slide's counts. On Review a reader
sees the states of their OWN reads only (blinding, issue 4); the Dashboard shows adjudicators the
states of the human labels.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlite_utils import Database

from mdsdys import sequential
from mdsdys.accounts import policy
from mdsdys.schemes import DIAGNOSTIC_LINEAGES, UNASSESSABLE, LabelScheme
from mdsdys.sequential import CountState
from mdsdys.store.dashboard import label_counts
from mdsdys.store.reads import own_code_counts
from mdsdys.store.settings import count_floors, reads_per_cell
from mdsdys.store.slides import get_slide, load_scheme
from mdsdys.store.users import User



def count_states(scheme: LabelScheme, counts: Mapping[str | None, int], floors: Mapping[str, int]) -> list[CountState]:
    """One state per diagnostic lineage with a normal/dysplastic split, then the blast band (if the scheme has blasts).

    `counts`: {class code: cells}; codes outside the scheme, can't-assess and None (unlabelled) are left out.
    """
    known = {code: n for code, n in counts.items() if code in scheme.codes and code != UNASSESSABLE}
    states = []
    for lineage in DIAGNOSTIC_LINEAGES:
        inside = [c for c in scheme.classes if c.lineage == lineage]
        if any(c.dysplastic for c in inside):
            k = sum(known.get(c.code, 0) for c in inside if c.dysplastic)
            n = sum(known.get(c.code, 0) for c in inside)
            states.append(sequential.lineage_state(lineage, k, n, floors.get(lineage, 0)))
    if any(c.lineage == "blast" for c in scheme.classes):
        blasts = sum(n for code, n in known.items() if scheme.get(code).lineage == "blast")
        states.append(sequential.blast_state(blasts, sum(known.values()), floors.get("differential", 0)))
    return states


def reader_states(db: Database, viewer: User, slide_id: int) -> list[CountState]:
    """The counting states of the viewer's own reads of a slide (never another reader's)."""
    policy.require(viewer, "review")
    scheme = load_scheme(db, get_slide(db, slide_id).scheme_name)
    return count_states(scheme, own_code_counts(db, viewer.id, slide_id), count_floors(db))


def unsettled_codes(scheme: LabelScheme, states: list[CountState]) -> list[str]:
    """Class codes of the diagnostic lineages still counting: the 'settle this slide' queue reads these first."""
    open_lineages = {s.name for s in states if not s.settled and s.name != "blasts"}
    return [c.code for c in scheme.classes if c.lineage in open_lineages]


def state_rows(states: list[CountState]) -> list[dict]:
    """Flat rows for a table: the count, its interval valid at every look, and the state in words."""
    return [{"count": s.name, "cells": s.n, "dysplastic or blast": s.k,
             "95% sequence": f"{100 * s.low:.1f}-{100 * s.high:.1f}%", "state": s.describe()} for s in states]


def current_floors(db: Database) -> dict[str, int]:
    """The minimum counts in force (WHO's unless an admin changed one)."""
    return count_floors(db)


def current_reads_per_cell(db: Database) -> int:
    """Blind reads each cell gets before it leaves the Review queues (0 = no limit)."""
    return reads_per_cell(db)


def slide_states(db: Database, viewer: User, slide_id: int) -> list[CountState]:
    """The Dashboard's states: the human labels for adjudicators and admins, a reader's own reads for a reader
    (other readers' reads stay blind until consensus)."""
    if not policy.can(viewer, "labels_view"):
        return reader_states(db, viewer, slide_id)
    scheme = load_scheme(db, get_slide(db, slide_id).scheme_name)
    return count_states(scheme, label_counts(db, "human").get(slide_id, {}), count_floors(db))


# What each state means, in a hematologist's words (Dashboard help text, printed report, README).
EXPLANATION = (
    "Counting to a decision. For each lineage the app asks one question: are at least 10% of this lineage's "
    "cells dysplastic (WHO 2016)? For blasts it asks which band the slide is in: under 5%, 5-9%, 10-19% or "
    "20% or more of all nucleated cells. After every cell it draws a 95% range for the true percentage that "
    "stays honest however often you look (a confidence sequence, not the Wilson interval, which is only "
    "honest if you look once). 'Settled' means the whole range is on one side of the line: stop counting that "
    "lineage; on at most 1 slide in 20 is a settled call wrong. 'About N more cells needed' is how many more "
    "cells of that lineage it would take if the percentage stayed where it is now; a slide right at 10% may "
    "never settle ('too close to call'), and then the honest answer is 'borderline'. Nothing settles before "
    "WHO's minimum counts (200 erythroid, 200 granulocytic, 30 megakaryocytes, a 500-cell differential) "
    "unless an admin changes them. Cells read as 'can't assess' are left out of every count."
)
