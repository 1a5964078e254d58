"""The one role policy: which roles may do each action (issue 16 item 2).

Every public write of the library (and every view that unblinds or exports) calls `require`.
The table is the only place a role is named; pages ask `can` to decide what to show, and the
library refuses on its own whatever a page shows. Torch-free and store-free: a user is any object
with `.role` (and optionally `.active`, `.username`).
"""

from __future__ import annotations

from typing import Any

from mdsdys.errors import PermissionDeniedError

READER, ADJUDICATOR, ADMIN = "reader", "adjudicator", "admin"
_EVERYONE = frozenset({READER, ADJUDICATOR, ADMIN})
_SENIOR = frozenset({ADJUDICATOR, ADMIN})
_ADMIN = frozenset({ADMIN})

# action -> the roles allowed. Readers may also settle when an admin allows it: that one setting is
# applied by mdsdys.review.consensus on top of "settle" (the policy stays free of store reads).
ACTIONS: dict[str, frozenset[str]] = {
    # accounts and settings
    "user_manage": _ADMIN,          # create, change role, disable, reset another's password
    "scheme_load": _ADMIN,
    "audit_view": _ADMIN,
    "setting_change": _ADMIN,
    # the loop
    "import": _SENIOR,              # fields, labelled cells, masks (may create a scheme and slides)
    "annotate": _EVERYONE,          # nucleus masks and a slide's scale
    "review": _EVERYONE,            # one's own blind reads
    "settle": _SENIOR,              # consensus decisions
    "agreement_view": _SENIOR,      # kappa and the reader x reader tables name readers' reads
    "labels_view": _SENIOR,         # final and human label sources (readers see model-only numbers)
    "progress_view": _SENIOR,       # how far each slide's readers have got
    "performance_view": _SENIOR,
    "export": _SENIOR,              # cells CSV, COCO, crops zip (they unblind)
    "report_view": _EVERYONE,       # the printable slide report (a reader's holds model-only numbers)
    "export_note": _EVERYONE,       # the audit row of a download; each export checks its own action first
    "train": _SENIOR,
    "promote": _SENIOR,             # promote and roll back model versions
    "job_queue": _SENIOR,
    "job_cancel": _SENIOR,
    "jobs_view": _SENIOR,
    "models_view": _SENIOR,
    # reader calibration and counting (issue 17)
    "gold_mark": _SENIOR,           # mark and unmark settled cells as gold
    "readers_view": _SENIOR,        # each reader's accuracy against gold cells
}


def can(user: Any, action: str) -> bool:
    """Whether this user may do `action`: an active account whose role the table lists."""
    roles = _roles(action)
    if user is None or not getattr(user, "active", True):
        return False
    return getattr(user, "role", None) in roles


def require(user: Any, action: str) -> Any:
    """Return the user if they may do `action`; else raise PermissionDeniedError saying who may."""
    if can(user, action):
        return user
    if user is None:
        raise PermissionDeniedError("Please log in first.")
    name = getattr(user, "username", "This account")
    if not getattr(user, "active", True):
        raise PermissionDeniedError(f"{name}'s account is disabled. Ask an admin.")
    allowed = " or ".join(sorted(_roles(action)))
    raise PermissionDeniedError(
        f"{name} is {_article(user.role)} {user.role}; {action.replace('_', ' ')} needs the role {allowed}. "
        "Ask an admin.")


def role_can(role: str, action: str) -> bool:
    """Whether the role itself allows the action (for changes of role, before they happen)."""
    return role in _roles(action)


def allowed_actions(user: Any) -> list[str]:
    """Every action this user may do, for pages that hide what a role cannot use."""
    return [action for action in ACTIONS if can(user, action)]


def _roles(action: str) -> frozenset[str]:
    try:
        return ACTIONS[action]
    except KeyError:
        raise ValueError(f"Unknown action {action!r}; add it to mdsdys.accounts.policy.ACTIONS.") from None


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"
