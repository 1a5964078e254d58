"""Admin actions that combine several steps: account changes and scheme loading, audited."""

from __future__ import annotations

from sqlite_utils import Database

from mdsdys.accounts import auth, policy, rules
from mdsdys.csvfile import write_csv
from mdsdys.errors import MdsdysError
from mdsdys.schemes import LabelScheme
from mdsdys.sequential import WHO_FLOORS
from mdsdys.store import write_transaction
from mdsdys.store.audit import list_audit, log_action
from mdsdys.store.settings import COUNT_FLOOR_PREFIX, READS_PER_CELL, count_floors, reads_per_cell, set_setting
from mdsdys.store.slides import save_scheme
from mdsdys.store.users import User, get_active_user, get_user

AUDIT_COLUMNS = ("id", "at", "username", "action", "entity", "entity_id", "before", "after")


def change_account(db: Database, by: User, user_id: int, role: str | None, password: str | None,
                   active: bool) -> None:
    """Apply an admin's changes to one account: role, password and active flag, all or none."""
    policy.require(by, "user_manage")
    if password is not None:
        rules.check_password(password, get_user(db, user_id).username)  # before anything changes
    with write_transaction(db):
        if role is not None:
            auth.change_role(db, by, user_id, role)
        if password is not None:
            auth.reset_password(db, by, user_id, password)
        if active != (get_active_user(db, user_id) is not None):
            auth.set_active(db, by, user_id, active)


def load_scheme(db: Database, by: User, scheme: LabelScheme) -> None:
    """Store a new label scheme on an admin's behalf, with an audit row."""
    policy.require(by, "scheme_load")
    save_scheme(db, scheme)
    with write_transaction(db):
        log_action(db, by, "scheme_load", "scheme", scheme.name, after={"classes": list(scheme.codes)})


def audit_rows(db: Database, by: User, action: str | None = None, username: str | None = None,
               since: str | None = None, limit: int = 5000) -> list[dict]:
    """The audit log for an admin, newest first, with filters."""
    policy.require(by, "audit_view")
    return list_audit(db, action=action, username=username, since=since, limit=limit)


def audit_csv(rows: list[dict]) -> bytes:
    """Audit rows as UTF-8 CSV with a header; typed names that look like formulas stay text."""
    return write_csv(rows, AUDIT_COLUMNS)


def record_export(db: Database, by: User, what: str, detail: dict | None = None) -> None:
    """Write an audit row for a download or export (the export itself checked the role)."""
    policy.require(by, "export_note")
    with write_transaction(db):
        log_action(db, by, "export", what, "", after=detail or {})


def set_count_floor(db: Database, by: User, name: str, cells: int) -> None:
    """An admin changes the minimum count of a lineage (or 'differential') before the counting rule settles."""
    policy.require(by, "setting_change")
    if name not in WHO_FLOORS:
        raise MdsdysError(f"There is no count called {name!r}; choose one of {', '.join(WHO_FLOORS)}.")
    if not isinstance(cells, int) or isinstance(cells, bool) or not 0 <= cells <= 100_000:
        raise MdsdysError(f"A minimum count is a whole number of cells from 0 to 100000; got {cells!r}.")
    before = count_floors(db)[name]
    with write_transaction(db):
        set_setting(db, COUNT_FLOOR_PREFIX + name, str(cells))
        log_action(db, by, "setting_change", "setting", COUNT_FLOOR_PREFIX + name,
                   before={"cells": before}, after={"cells": cells})


def set_reads_per_cell(db: Database, by: User, reads: int) -> None:
    """An admin sets how many blind reads each cell gets (0 = every reader reads every cell; 3+ for Fleiss' kappa)."""
    policy.require(by, "setting_change")
    if not isinstance(reads, int) or isinstance(reads, bool) or not 0 <= reads <= 50:
        raise MdsdysError(f"Reads per cell is a whole number from 0 (no limit) to 50; got {reads!r}.")
    before = reads_per_cell(db)
    with write_transaction(db):
        set_setting(db, READS_PER_CELL, str(reads))
        log_action(db, by, "setting_change", "setting", READS_PER_CELL, before={"reads": before}, after={"reads": reads})
