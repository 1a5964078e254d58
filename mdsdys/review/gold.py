"""Gold cells: settled cells mixed, unmarked, into readers' queues to calibrate them (issue 17).

- An adjudicator marks cells settled by consensus as gold.
- The Review queue of a slide mixes gold cells from OTHER slides in at the admin's rate (5% by
  default), at positions drawn from a secret per reader and slide, so their place in the queue
  says nothing. A reader's progress counts them from the start ("cells" includes the planned
  gold cells), so progress moves the same for every cell.
- The answer is a calibration read, kept in its own table: it never counts in any slide's
  numbers, agreement or training set. The first answer scores; a later change cannot improve it.
- The Review page names cells by an opaque label (cell_label), not their database id, and shows
  a gold cell under the slide being read: neither the caption nor the URL tells a gold cell apart.
  (A reader who went through every cell of a slide in the gallery could notice a cell that is not
  among them; the gallery shows only the slide's own cells.)
"""

from __future__ import annotations

import hashlib
import hmac
import math
import random
import secrets
from collections.abc import Sequence
from typing import Any

from sqlite_utils import Database

from mdsdys import stats
from mdsdys.accounts import policy
from mdsdys.errors import MdsdysError, NotFoundError
from mdsdys.schemes import UNASSESSABLE, LabelScheme
from mdsdys.store import write_transaction
from mdsdys.store.audit import log_action
from mdsdys.store.consensus import get_decision
from mdsdys.store.gold import (
    CalibrationRead,
    answer_calibration,
    answered_calibrations,
    calibration_for,
    count_gold_elsewhere,
    delete_gold,
    gold_candidates,
    gold_codes,
    open_calibrations,
    put_gold,
    scored_calibrations,
    serve_calibration,
    settled_cells,
)
from mdsdys.store.settings import get_float_setting, get_setting, set_setting
from mdsdys.store.slides import load_scheme
from mdsdys.store.users import User

GOLD_RATE = "gold_rate"
DEFAULT_GOLD_RATE = 0.05  # issue 17: about one cell in twenty is a calibration cell
_SECRET = "calibration_secret"


def gold_rate(db: Database) -> float:
    """The share of a reader's queue that is gold cells."""
    return get_float_setting(db, GOLD_RATE, DEFAULT_GOLD_RATE)


def set_gold_rate(db: Database, admin: User, rate: float) -> None:
    """An admin sets the share of gold cells in the queues (0 turns calibration off)."""
    policy.require(admin, "setting_change")
    if not 0.0 <= float(rate) <= 0.5:
        raise MdsdysError(f"The gold-cell rate is a share from 0 to 0.5 (5% = 0.05); got {rate!r}.")
    before = gold_rate(db)
    with write_transaction(db):
        set_setting(db, GOLD_RATE, repr(float(rate)))
        log_action(db, admin, "setting_change", "setting", GOLD_RATE, before={"rate": before}, after={"rate": rate})


def _secret(db: Database) -> bytes:
    """The installation's calibration secret, made on first use; it never leaves the server."""
    value = get_setting(db, _SECRET)
    if value is None:
        with write_transaction(db):
            value = get_setting(db, _SECRET)
            if value is None:
                value = secrets.token_hex(32)
                set_setting(db, _SECRET, value)
    return bytes.fromhex(value)


def _keyed(db: Database, text: str) -> int:
    return int.from_bytes(hmac.new(_secret(db), text.encode(), hashlib.sha256).digest()[:8], "big")


def cell_label(db: Database, cell_id: int) -> int:
    """The number the Review page calls a cell by: fixed per cell, unrelated to its id or its slide."""
    return 100_000_000 + _keyed(db, f"cell:{cell_id}") % 900_000_000


def mark_gold(db: Database, user: User, cell_id: int) -> str:
    """Mark a cell settled by consensus as gold; returns the class it is scored against."""
    policy.require(user, "gold_mark")
    decision = get_decision(db, cell_id)
    if decision is None:
        raise MdsdysError(f"Cell {cell_id} has no consensus decision; only settled cells can be gold.")
    if decision.code == UNASSESSABLE:
        raise MdsdysError(f"Cell {cell_id} was settled as can't assess; a gold cell needs a class.")
    with write_transaction(db):
        put_gold(db, cell_id, decision.code, user.id)
        log_action(db, user, "gold_mark", "cell", cell_id, after={"code": decision.code})
    return decision.code


def unmark_gold(db: Database, user: User, cell_id: int) -> None:
    """Take a cell out of the gold set."""
    policy.require(user, "gold_mark")
    if cell_id not in gold_codes(db):
        raise NotFoundError(f"Cell {cell_id} is not a gold cell.")
    with write_transaction(db):
        delete_gold(db, cell_id)
        log_action(db, user, "gold_unmark", "cell", cell_id)


def gold_choices(db: Database, user: User) -> list[dict]:
    """Cells settled by consensus, each with whether it is gold: what an adjudicator picks from."""
    policy.require(user, "gold_mark")
    gold = gold_codes(db)
    return [{"cell": cell_id, "slide": case_id, "class": code, "gold": cell_id in gold}
            for cell_id, case_id, code in settled_cells(db) if code != UNASSESSABLE]


def planned_gold(db: Database, reader_id: int, slide_id: int, cells: int) -> int:
    """How many gold cells this reader's queue for the slide holds: the rate times the slide's cells."""
    return min(round(gold_rate(db) * cells), count_gold_elsewhere(db, slide_id))


def _positions(db: Database, reader_id: int, slide_id: int, cells: int, planned: int) -> list[int]:
    """Where in the reader's queue (0 = first cell read) the gold cells go: secret, fixed per reader and slide."""
    rng = random.Random(_keyed(db, f"plan:{reader_id}:{slide_id}"))
    return sorted(rng.sample(range(cells + planned), planned)) if planned else []


def next_calibration(db: Database, reader_id: int, slide_id: int, cells: int, read_here: int,
                     normal: int | None, skipped: Sequence[int] = ()) -> int | None:
    """The gold cell to show instead of `normal`, if one is due at this place in the queue, else None."""
    planned = planned_gold(db, reader_id, slide_id, cells)
    if not planned:
        return None
    answered = answered_calibrations(db, reader_id, slide_id)
    waiting = [c for c in open_calibrations(db, reader_id, slide_id) if c not in skipped]
    due = sum(p <= read_here + answered for p in _positions(db, reader_id, slide_id, cells, planned))
    if waiting and (due > answered or normal is None):
        return waiting[0]
    served = answered + len(open_calibrations(db, reader_id, slide_id))
    if (due > served or normal is None) and served < planned:
        candidates = gold_candidates(db, reader_id, slide_id)
        if candidates:
            least = [c for c, times in candidates if times == candidates[0][1]]
            chosen = least[_keyed(db, f"pick:{reader_id}:{slide_id}:{served}") % len(least)]
            with write_transaction(db):
                serve_calibration(db, chosen, reader_id, slide_id)
            return chosen
    return None


def calibration_in(db: Database, reader_id: int, slide_id: int | None, cell_id: int) -> CalibrationRead | None:
    """The calibration serve of this cell in this reader's queue for `slide_id`, or None (a normal cell)."""
    return calibration_for(db, reader_id, slide_id, cell_id) if slide_id is not None else None


def answer(db: Database, viewer: User, calibration: CalibrationRead, code: str, tags: Sequence[str],
           seconds: float | None) -> None:
    """Store the reader's answer to a gold cell (audited like a read, without saying it was gold)."""
    policy.require(viewer, "review")
    with write_transaction(db):
        answer_calibration(db, calibration.id, code, tags, seconds)
        log_action(db, viewer, "calibration_read", "cell", calibration.cell_id, after={"code": code, "tags": list(tags)})


def take_back(db: Database, viewer: User, calibration: CalibrationRead) -> None:
    """Undo the answer to a gold cell; the first answer still scores."""
    policy.require(viewer, "review")
    with write_transaction(db):
        answer_calibration(db, calibration.id, None, (), None)
        log_action(db, viewer, "calibration_undo", "cell", calibration.cell_id)


# --- Scoring readers against gold (the Readers view; adjudicators and admins only) -------------------
DRIFT_WINDOW = 20  # answers per point of the drift curve; the latest window is compared with all before it


def reader_scores(db: Database, user: User) -> list[dict[str, Any]]:
    """Per reader: accuracy against gold overall, per lineage and for dysplastic vs normal, kappa against
    gold, accuracy per window of DRIFT_WINDOW answers, and a flag when the latest window has dropped."""
    policy.require(user, "readers_view")
    by_reader: dict[tuple[int, str], list[tuple[str, str, str, str]]] = {}
    for reader_id, name, answer_code, gold, scheme_name, at in scored_calibrations(db):
        by_reader.setdefault((reader_id, name), []).append((answer_code, gold, scheme_name, at))
    schemes: dict[str, LabelScheme] = {}
    rows = []
    for (reader_id, name), answers in sorted(by_reader.items(), key=lambda item: item[0][1]):
        for _, _, scheme_name, _ in answers:
            schemes.setdefault(scheme_name, load_scheme(db, scheme_name))
        rows.append({"reader_id": reader_id, "reader": name, **_score(answers, schemes)})
    return rows


def _score(answers: list[tuple[str, str, str, str]], schemes: dict[str, LabelScheme]) -> dict[str, Any]:
    right = [a == g for a, g, _, _ in answers]
    lineage: dict[str, list[bool]] = {}
    dysplastic: list[bool] = []
    for (a, g, scheme_name, _), ok in zip(answers, right, strict=True):
        gold_class = schemes[scheme_name].get(g)
        lineage.setdefault(gold_class.lineage, []).append(ok)
        if gold_class.dysplastic is not None:
            called = schemes[scheme_name].get(a).dysplastic if a in schemes[scheme_name].codes else None
            dysplastic.append(called is gold_class.dysplastic)
    windows = [right[i:i + DRIFT_WINDOW] for i in range(0, len(right), DRIFT_WINDOW)]
    kappa = stats.cohen_kappa([a for a, *_ in answers], [g for _, g, *_ in answers])
    return {
        "answers": len(right), "accuracy": _share(right),
        "per_lineage": {name: _share(oks) for name, oks in lineage.items()},
        "dysplastic_vs_normal": _share(dysplastic), "kappa": None if math.isnan(kappa) else kappa,
        "drift": [{"from": answers[i * DRIFT_WINDOW][3], "answers": len(w), "accuracy": _share(w)}
                  for i, w in enumerate(windows)],
        "dropped": _dropped(right),
    }


def _share(oks: Sequence[bool]) -> float | None:
    return sum(oks) / len(oks) if oks else None


def _dropped(right: Sequence[bool]) -> bool:
    """True when the latest DRIFT_WINDOW answers' 95% Wilson upper bound lies below the accuracy before them."""
    if len(right) < 2 * DRIFT_WINDOW:
        return False
    latest, before = right[-DRIFT_WINDOW:], right[:-DRIFT_WINDOW]
    return stats.wilson_interval(sum(latest), len(latest))[1] < sum(before) / len(before)
