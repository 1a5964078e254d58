"""Admin actions that combine several steps: account changes and scheme loading, audited."""

from __future__ import annotations

from sqlite_utils import Database

from mdsdys import auth
from mdsdys.schemes import LabelScheme
from mdsdys.store import write_transaction
from mdsdys.store.audit import log_action
from mdsdys.store.slides import save_scheme
from mdsdys.store.users import User, get_active_user


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
