"""Consensus between readers: who may settle, which cells need it, and recording the decision.

Here, and only here, reads unblind: a cell enters a queue once two readers have read it.
The readers' own reads are never changed; the decision is a separate record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlite_utils import Database

from mdsdys.accounts import auth
from mdsdys.errors import MdsdysError, PermissionDeniedError
from mdsdys.schemes import LabelScheme
from mdsdys.store import write_transaction
from mdsdys.store.audit import log_action
from mdsdys.store.consensus import (
    Decision,
    ReaderRead,
    get_decision,
    has_own_read,
    multi_read_cells,
    put_decision,
    reader_reads,
)
from mdsdys.store.patches import get_cell
from mdsdys.store.settings import get_setting, set_setting
from mdsdys.store.slides import get_slide, load_scheme
from mdsdys.store.users import User

REASON_CODES = {
    "stain_artefact": "stain artefact",
    "overlapping_cells": "overlapping cells",
    "borderline_morphology": "borderline morphology",
    "reader_error": "reader error",
    "other": "other (free text)",
}
QUEUES = ("disagree_class", "disagree_dysplastic", "agree_not_model")
READERS_MAY_SETTLE = "readers_may_adjudicate"


@dataclass(frozen=True)
class QueueItem:
    """A cell waiting for consensus."""

    cell_id: int
    slide_id: int
    codes: tuple[str, ...]
    proposed: str | None


def readers_may_settle(db: Database) -> bool:
    """Whether the admin has opened the Consensus page to readers."""
    return get_setting(db, READERS_MAY_SETTLE) == "1"


def may_settle(db: Database, user: User | None) -> bool:
    """Adjudicators and admins may settle; readers too when the admin allows it."""
    if user is None:
        return False
    return user.role in ("adjudicator", "admin") or readers_may_settle(db)


def require_settler(db: Database, user: User | None) -> User:
    """Return the user if they may use the Consensus page, else raise."""
    if not may_settle(db, user):
        raise PermissionDeniedError("Consensus is for adjudicators (an admin can also open it to readers).")
    return user


def set_readers_may_settle(db: Database, admin: User, allowed: bool) -> None:
    """An admin lets readers (or not) settle disagreements."""
    auth.require_role(admin, "admin")
    with write_transaction(db):
        set_setting(db, READERS_MAY_SETTLE, "1" if allowed else "0")
        log_action(db, admin, "setting_change", "setting", READERS_MAY_SETTLE, after={"allowed": allowed})


def consensus_queue(db: Database, user: User, queue: str = "disagree_class",
                    slide_id: int | None = None) -> list[QueueItem]:
    """Cells needing consensus: readers differ on class, on dysplastic yes/no, or agree against the model."""
    require_settler(db, user)
    if queue not in QUEUES:
        raise MdsdysError(f"Unknown queue {queue!r}; use one of {', '.join(QUEUES)}.")
    items = []
    schemes: dict[int, LabelScheme] = {}
    for cell_id, cell_slide, codes, proposed in multi_read_cells(db, slide_id):
        scheme = schemes.get(cell_slide) or load_scheme(db, get_slide(db, cell_slide).scheme_name)
        schemes[cell_slide] = scheme
        if _in_queue(queue, scheme, codes, proposed) and _may_see(db, user, cell_id):
            items.append(QueueItem(cell_id, cell_slide, tuple(codes), proposed))
    return items


def _in_queue(queue: str, scheme: LabelScheme, codes: Sequence[str], proposed: str | None) -> bool:
    distinct = set(codes)
    if queue == "disagree_class":
        return len(distinct) > 1
    if queue == "disagree_dysplastic":
        return len({scheme.get(code).dysplastic for code in distinct}) > 1
    return len(distinct) == 1 and proposed is not None and proposed not in distinct


def _may_see(db: Database, user: User, cell_id: int) -> bool:
    """Adjudicators see every queued cell; a reader only cells they have read themselves."""
    return user.role in ("adjudicator", "admin") or has_own_read(db, user.id, cell_id)


def unblinded_reads(db: Database, user: User, cell_id: int) -> list[ReaderRead]:
    """Both readers' reads of a cell, for someone settling it."""
    require_settler(db, user)
    if not _may_see(db, user, cell_id):
        raise PermissionDeniedError("Read this cell yourself on the Review page before settling it.")
    reads = reader_reads(db, cell_id)
    if len(reads) < 2 and get_decision(db, cell_id) is None:
        raise PermissionDeniedError("This cell has fewer than two reads; other reads stay hidden until then.")
    return reads


def decide(db: Database, user: User, cell_id: int, code: str, tags: Sequence[str], reason_code: str,
           reason_text: str = "") -> Decision:
    """Record the settled label of a cell with its reason; the readers' reads stay as they were."""
    require_settler(db, user)
    if reason_code not in REASON_CODES:
        raise MdsdysError(f"Choose a reason: {', '.join(REASON_CODES.values())}.")
    if reason_code == "other" and not reason_text.strip():
        raise MdsdysError("Reason 'other' needs a few words saying why.")
    scheme = load_scheme(db, get_slide(db, get_cell(db, cell_id).slide_id).scheme_name)
    allowed = set(scheme.features_for(code))
    if any(tag not in allowed for tag in tags):
        raise MdsdysError(f"Feature tags {list(tags)} do not all apply to {code}.")
    before = get_decision(db, cell_id)
    unblinded_reads(db, user, cell_id)
    with write_transaction(db):
        put_decision(db, cell_id, code, tags, reason_code, reason_text.strip(), user.id)
        log_action(db, user, "consensus", "cell", cell_id,
                   before={"code": before.code, "reason": before.reason_code} if before else None,
                   after={"code": code, "tags": list(tags), "reason": reason_code, "text": reason_text.strip()})
    return get_decision(db, cell_id)
