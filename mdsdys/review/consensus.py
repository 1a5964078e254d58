"""Consensus between readers: who may settle, which cells need it, and recording the decision.

Here, and only here, reads unblind: a cell enters a queue once two readers have read it.
The readers' own reads are never changed; the decision is a separate record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlite_utils import Database

from mdsdys.accounts import policy
from mdsdys.errors import ConflictError, MdsdysError, PermissionDeniedError
from mdsdys.schemes import UNASSESSABLE, UNASSESSABLE_REASONS, LabelScheme
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
from mdsdys.store.sessions import mark_unblinded
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
    if policy.can(user, "settle"):
        return True
    return policy.can(user, "review") and readers_may_settle(db)


def require_settler(db: Database, user: User | None) -> User:
    """Return the user if they may use the Consensus page, else raise."""
    if not may_settle(db, user):
        raise PermissionDeniedError("Consensus is for adjudicators (an admin can also open it to readers).")
    return user


def set_readers_may_settle(db: Database, admin: User, allowed: bool) -> None:
    """An admin lets readers (or not) settle disagreements."""
    policy.require(admin, "setting_change")
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
    # The items carry every reader's code: from now on the user's own reads of them are frozen (item 8).
    _mark_seen(db, user, [item.cell_id for item in items if has_own_read(db, user.id, item.cell_id)])
    return items


def _mark_seen(db: Database, user: User, cell_ids: list[int]) -> None:
    if cell_ids:
        with write_transaction(db):
            mark_unblinded(db, user.id, cell_ids)


def _in_queue(queue: str, scheme: LabelScheme, codes: Sequence[str], proposed: str | None) -> bool:
    distinct = set(codes)
    if queue == "disagree_class":
        return len(distinct) > 1
    if queue == "disagree_dysplastic":
        # A can't-assess read (issue 17) differs from every class, dysplastic or not.
        return len({"unassessable" if code == UNASSESSABLE else scheme.get(code).dysplastic for code in distinct}) > 1
    return len(distinct) == 1 and proposed is not None and proposed not in distinct


def _may_see(db: Database, user: User, cell_id: int) -> bool:
    """Adjudicators see every queued cell; a reader only cells they have read themselves."""
    return policy.can(user, "settle") or has_own_read(db, user.id, cell_id)


def unblinded_reads(db: Database, user: User, cell_id: int) -> list[ReaderRead]:
    """Both readers' reads of a cell, for someone settling it."""
    require_settler(db, user)
    if not _may_see(db, user, cell_id):
        raise PermissionDeniedError("Read this cell yourself on the Review page before settling it.")
    reads = reader_reads(db, cell_id)
    if len(reads) < 2 and get_decision(db, cell_id) is None:
        raise PermissionDeniedError("This cell has fewer than two reads; other reads stay hidden until then.")
    _mark_seen(db, user, [cell_id])
    return reads


def decision_version(db: Database, cell_id: int) -> int:
    """The version of a cell's decision, 0 when there is none: pass it back to `decide` as `seen_version`."""
    decision = get_decision(db, cell_id)
    return decision.version if decision else 0


def decide(db: Database, user: User, cell_id: int, code: str, tags: Sequence[str], reason_code: str,
           reason_text: str = "", seen_version: int | None = None) -> Decision:
    """Record the settled label of a cell with its reason; the readers' reads stay as they were.

    `seen_version` is the decision_version the user was shown: when someone decided the cell since,
    nothing is saved and ConflictError says so. None skips that check (the CLI and scripts).
    """
    require_settler(db, user)
    if reason_code not in REASON_CODES:
        raise MdsdysError(f"Choose a reason: {', '.join(REASON_CODES.values())}.")
    if reason_code == "other" and not reason_text.strip():
        raise MdsdysError("Reason 'other' needs a few words saying why.")
    scheme = load_scheme(db, get_slide(db, get_cell(db, cell_id).slide_id).scheme_name)
    allowed = set(UNASSESSABLE_REASONS) if code == UNASSESSABLE else set(scheme.features_for(code))
    if code == UNASSESSABLE and len(tags) != 1:
        raise MdsdysError(f"Settling a cell as can't assess needs one reason: {', '.join(UNASSESSABLE_REASONS.values())}.")
    if any(tag not in allowed for tag in tags):
        raise MdsdysError(f"Feature tags {list(tags)} do not all apply to {code}.")
    unblinded_reads(db, user, cell_id)
    with write_transaction(db):  # read, compare and write under one write lock
        before = get_decision(db, cell_id)
        _check_version(cell_id, before, seen_version)
        put_decision(db, cell_id, code, tags, reason_code, reason_text.strip(), user.id)
        log_action(db, user, "consensus", "cell", cell_id,
                   before={"code": before.code, "reason": before.reason_code} if before else None,
                   after={"code": code, "tags": list(tags), "reason": reason_code, "text": reason_text.strip()})
    return get_decision(db, cell_id)


def _check_version(cell_id: int, current: Decision | None, seen_version: int | None) -> None:
    """Refuse a decision made on a stale view of the cell."""
    if seen_version is None or (current.version if current else 0) == seen_version:
        return
    by = f" as {current.code} by {current.decided_by}" if current else ""
    raise ConflictError(
        f"Cell {cell_id} was settled{by} while you were looking at it; nothing was saved. "
        "Reload the page to see that decision, then change it if you disagree."
    )
