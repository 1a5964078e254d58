"""Slide-level numbers the WHO criteria use: differential, dysplasia % per lineage, blasts, M:E.

WHO 2016 as the paper applies it (DOMAIN.md): a lineage is dysplastic at >= 10% dysplastic
cells; blasts are counted among all nucleated cells, banded at 5, 10 and 20%.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from sqlite_utils import Database

from mdsdys.accounts import policy
from mdsdys.errors import MdsdysError, PermissionDeniedError
from mdsdys.imaging.crops import draw_box
from mdsdys.imaging.decode import read_rgb
from mdsdys.report.provenance import LabelSources, source_columns, sources_of
from mdsdys.report.shift import ModelShift
from mdsdys.schemes import DIAGNOSTIC_LINEAGES, UNASSESSABLE, LabelScheme
from mdsdys.stats import MIN_CELLS_TO_ESTIMATE, TOO_FEW, wilson_interval
from mdsdys.store.cells import cells_on_patch, model_labels
from mdsdys.store.dashboard import LABEL_SOURCES, label_counts, slide_rows
from mdsdys.store.labels import final_labels
from mdsdys.store.patches import get_patch_image
from mdsdys.store.slides import get_slide, load_scheme
from mdsdys.store.users import User
from mdsdys.who import DYSPLASIA_LINE, MIN_CELLS, blast_band

INDETERMINATE = "indeterminate: count more cells"


@dataclass(frozen=True)
class Proportion:
    """k of n, with its Wilson 95% interval."""

    k: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float | None:
        """k / n, or None when n = 0."""
        return self.k / self.n if self.n else None


def proportion(k: int, n: int) -> Proportion:
    """k of n with a Wilson 95% interval."""
    low, high = wilson_interval(k, n)
    return Proportion(k, n, low, high)


@dataclass(frozen=True)
class LineageDysplasia:
    """Dysplastic cells among one lineage's cells, and the WHO 10% call."""

    lineage: str
    share: Proportion
    flag: str  # '>=10%', '<10%' or INDETERMINATE


@dataclass(frozen=True)
class SlideSummary:
    """The dashboard row of one slide under one label source."""

    slide_id: int
    case_id: str
    group: str | None
    scheme: str
    nucleated: int
    labelled: int
    counts: Mapping[str, int]
    dysplasia: tuple[LineageDysplasia, ...]
    blasts: Proportion | None
    blast_band: str | None
    me_ratio: float | None
    unassessable: int = 0  # cells read as can't assess (issue 17): outside every count above

    @property
    def reviewed_fraction(self) -> float:
        """Share of the slide's cells that have a label under this source."""
        return self.labelled / self.nucleated if self.nucleated else 0.0


def dysplasia_flag(share: Proportion, lineage: str) -> str:
    """'>=10%', '<10%', or indeterminate when the interval straddles 10% or there are too few cells."""
    if share.n < MIN_CELLS.get(lineage, 0) or share.n == 0:
        return INDETERMINATE
    if share.low < DYSPLASIA_LINE <= share.high:
        return INDETERMINATE
    return ">=10%" if share.value >= DYSPLASIA_LINE else "<10%"


def summarise_slide(slide_id: int, case_id: str, group: str | None, scheme: LabelScheme,
                    counts: Mapping[str | None, int]) -> SlideSummary:
    """The WHO numbers for one slide from its per-class counts (None = cells without a label)."""
    labelled_counts = {code: n for code, n in counts.items() if code is not None and code in scheme.codes}
    nucleated = sum(n for code, n in counts.items() if code != UNASSESSABLE)  # can't-assess cells leave the counts
    labelled = sum(labelled_counts.values())

    def lineage_count(lineage: str, dysplastic: bool | None = None) -> int:
        return sum(n for code, n in labelled_counts.items() if scheme.get(code).lineage == lineage
                   and (dysplastic is None or scheme.get(code).dysplastic is dysplastic))

    dysplasia = []
    for lineage in DIAGNOSTIC_LINEAGES:
        has_split = any(c.lineage == lineage and c.dysplastic for c in scheme.classes)
        if has_split:
            share = proportion(lineage_count(lineage, True), lineage_count(lineage))
            dysplasia.append(LineageDysplasia(lineage, share, dysplasia_flag(share, lineage)))
    has_blasts = any(c.lineage == "blast" for c in scheme.classes)
    blasts = proportion(lineage_count("blast"), labelled) if has_blasts else None
    erythroid = lineage_count("erythroid")
    return SlideSummary(
        slide_id, case_id, group, scheme.name, nucleated, labelled, labelled_counts, tuple(dysplasia), blasts,
        blast_band(blasts.value) if blasts and blasts.n else None,
        lineage_count("granulocytic") / erythroid if erythroid else None, counts.get(UNASSESSABLE, 0),
    )


def allowed_sources(viewer: User) -> tuple[str, ...]:
    """Label sources a user may see. Readers see model-only numbers: final and human labels
    mix in other readers' reads, which stay blind to them until consensus (issue 4)."""
    policy.require(viewer, "report_view")  # no one logged in: a message, not an AttributeError (issue 15, item 21)
    return LABEL_SOURCES if policy.can(viewer, "labels_view") else ("model",)


def dashboard(db: Database, viewer: User, source: str = "final") -> list[SlideSummary]:
    """One summary per slide under a label source: 'final', 'human' or 'model'."""
    if source not in LABEL_SOURCES:
        raise MdsdysError(f"Label source must be one of {', '.join(LABEL_SOURCES)}, not {source!r}.")
    if source not in allowed_sources(viewer):
        raise PermissionDeniedError("Readers see model-only numbers until consensus; ask an adjudicator.")
    counts = label_counts(db, source, blind_to=blind_viewer(viewer))
    schemes: dict[str, LabelScheme] = {}
    summaries = []
    for row in slide_rows(db):
        scheme = schemes.setdefault(row["scheme"], load_scheme(db, row["scheme"]))
        summaries.append(summarise_slide(row["id"], row["case_id"], row["diagnosis_group"], scheme,
                                         counts.get(row["id"], {})))
    return summaries


def summary_table(summaries: list[SlideSummary], sources: Mapping[int, LabelSources] | None = None,
                  source: str = "final", shifts: Mapping[int, ModelShift] | None = None) -> list[dict]:
    """Flat rows for a table: one per slide, percentages with their 95% intervals.

    Blasts, M:E and megakaryocytes come first so they are visible without scrolling; with `sources`
    each row says how many cells are human-read, settled by consensus and model-only (never
    "labelled" for the model's); with `shifts`, whether the slide's images are like the model's
    training images (issue 13).
    """
    rows = []
    for s in summaries:
        row: dict = {"slide": s.case_id, "group": s.group or "", "cells": s.nucleated}
        if sources is not None:
            row |= source_columns(sources_of(sources, s.slide_id), source)
        row["blasts"] = _pct(s.blasts) if s.blasts else "n/a"
        row["blast band"] = s.blast_band or "n/a"
        row["M:E"] = round(s.me_ratio, 2) if s.me_ratio is not None else "n/a"
        for d in sorted(s.dysplasia, key=lambda d: d.lineage != "megakaryocytic"):
            row[f"{d.lineage[:4]}. dysplasia"] = _pct(d.share)
            # One look at the 95% interval over every cell counted; when to stop counting is the
            # sequential rule's ("Counting to a decision"), which allows for a look after every cell.
            row[f"{d.lineage[:4]}. call (one look)"] = d.flag
        row["can't assess"] = s.unassessable
        if shifts is not None:
            row["images vs model"] = shifts[s.slide_id].column() if s.slide_id in shifts else "no proposals"
        rows.append(row)
    return rows


def differential_table(summary: SlideSummary, scheme: LabelScheme) -> list[dict]:
    """The differential count of one slide: per class its cells and % of counted cells (Wilson 95%)."""
    total = sum(summary.counts.values())
    rows = []
    for label_class in scheme.classes:
        share = proportion(summary.counts.get(label_class.code, 0), total)
        rows.append({"code": label_class.code, "class": label_class.name, "cells": share.k,
                     "% of counted cells": _pct(share) if total else "no cells"})
    return rows


def _pct(share: Proportion) -> str:
    if not share.n:
        return "no cells"
    if share.n < MIN_CELLS_TO_ESTIMATE:
        return f"{TOO_FEW} (n={share.n})"
    return f"{100 * share.value:.1f}% ({100 * share.low:.1f}-{100 * share.high:.1f}), n={share.n}"


def cell_labels(db: Database, viewer: User, slide_id: int, source: str = "final") -> dict[int, str]:
    """{cell id: class code} of one slide under a label source the viewer may see."""
    if source not in allowed_sources(viewer):
        raise PermissionDeniedError("Readers see model-only labels until consensus; ask an adjudicator.")
    if source == "model":
        return model_labels(db, slide_id)
    slide = get_slide(db, slide_id)
    return {c.cell_id: c.label.code for c in final_labels(db, slide.scheme_name, slide_id, human_only=source == "human",
                                                          blind_to=blind_viewer(viewer))}


def blind_viewer(viewer: User) -> int | None:
    """The id to blind views to: anyone who may read cells, since they may read as a second reader
    (issue 15 item 7); None for the system account."""
    return None if viewer.is_system else viewer.id


def outlined_field(db: Database, patch_id: int, labels: Mapping[int, str], scheme: LabelScheme) -> np.ndarray:
    """A field with each cell's box drawn in its class colour (grey when unlabelled): (H, W, 3) uint8."""
    image = read_rgb(get_patch_image(db, patch_id).data).copy()
    for cell in cells_on_patch(db, patch_id):
        code = labels.get(cell.id)
        color = _hex_rgb(scheme.get(code).color) if code in scheme.codes else (128, 128, 128)
        draw_box(image, cell.box, color, line=2)
    return image


def _hex_rgb(color: str) -> tuple[int, int, int]:
    color = color.lstrip("#")
    return int(color[0:2], 16), int(color[2:4], 16), int(color[4:6], 16)


REVIEW_STATES = ("all", "every cell read", "partly read", "no cell read")


def filter_summaries(summaries: list[SlideSummary], groups: list[str], review_state: str,
                     sources: Mapping[int, LabelSources]) -> list[SlideSummary]:
    """Slides in the chosen groups and review state (REVIEW_STATES): by cells a person has read."""
    def read_share(s: SlideSummary) -> float:
        counted = sources_of(sources, s.slide_id)
        return (counted.human_read + counted.consensus) / counted.cells if counted.cells else 0.0
    states = {"every cell read": lambda f: f >= 1.0, "partly read": lambda f: 0 < f < 1.0,
              "no cell read": lambda f: f == 0, "all": lambda f: True}
    return [s for s in summaries if (s.group or "(none)") in groups and states[review_state](read_share(s))]


def difference_table(summaries: list[SlideSummary], baseline: list[SlideSummary]) -> list[dict]:
    """Per slide, how far the chosen labels move each lineage's dysplasia % and the blast % from the model's."""
    by_id = {b.slide_id: b for b in baseline}
    rows = []
    for s in summaries:
        base = by_id.get(s.slide_id)
        row = {"slide": s.case_id}
        for d in s.dysplasia:
            other = next((x for x in base.dysplasia if x.lineage == d.lineage), None) if base else None
            row[f"Δ {d.lineage[:4]}. pts"] = _delta(d.share, other.share if other else None)
        row["Δ blasts pts"] = _delta(s.blasts, base.blasts if base else None)
        rows.append(row)
    return rows


def _delta(mine: Proportion | None, theirs: Proportion | None) -> float | None:
    if mine is None or theirs is None or mine.value is None or theirs.value is None:
        return None
    return round(100 * (mine.value - theirs.value), 1)


def group_by_class(labels: Mapping[int, str], scheme: LabelScheme) -> dict[str, list[int]]:
    """Cell ids per class code, in the scheme's class order."""
    groups: dict[str, list[int]] = {code: [] for code in scheme.codes}
    for cell_id, code in sorted(labels.items()):
        if code in groups:
            groups[code].append(cell_id)
    return {code: ids for code, ids in groups.items() if ids}
