"""Admin actions that combine several steps: account changes and scheme loading, audited."""

from __future__ import annotations

import csv
import io

from sqlite_utils import Database

from mdsdys.accounts import auth
from mdsdys.schemes import LabelScheme
from mdsdys.store import write_transaction
from mdsdys.store.audit import list_audit, log_action
from mdsdys.store.slides import save_scheme
from mdsdys.store.users import User, get_active_user

AUDIT_COLUMNS = ("id", "at", "username", "action", "entity", "entity_id", "before", "after")


def change_account(db: Database, by: User, user_id: int, role: str | None, password: str | None,
                   active: bool) -> None:
    """Apply an admin's changes to one account: role, password and active flag."""
    auth.require_role(by, "admin")
    if role is not None:
        auth.change_role(db, by, user_id, role)
    if password is not None:
        auth.reset_password(db, by, user_id, password)
    if active != (get_active_user(db, user_id) is not None):
        auth.set_active(db, by, user_id, active)


def load_scheme(db: Database, by: User, scheme: LabelScheme) -> None:
    """Store a new label scheme on an admin's behalf, with an audit row."""
    auth.require_role(by, "admin")
    save_scheme(db, scheme)
    with write_transaction(db):
        log_action(db, by, "scheme_load", "scheme", scheme.name, after={"classes": list(scheme.codes)})


def audit_rows(db: Database, by: User, action: str | None = None, username: str | None = None,
               since: str | None = None, limit: int = 5000) -> list[dict]:
    """The audit log for an admin, newest first, with filters."""
    auth.require_role(by, "admin")
    return list_audit(db, action=action, username=username, since=since, limit=limit)


def audit_csv(rows: list[dict]) -> bytes:
    """Audit rows as UTF-8 CSV with a header."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=AUDIT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def record_export(db: Database, by: User, what: str, detail: dict | None = None) -> None:
    """Write an audit row for a download or export."""
    with write_transaction(db):
        log_action(db, by, "export", what, "", after=detail or {})
