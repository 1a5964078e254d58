"""Accounts, password hashing (argon2) and role checks, enforced on the server side."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlite_utils import Database

from mdsdys.errors import AuthError, MdsdysError, PermissionDeniedError
from mdsdys.store import write_transaction
from mdsdys.store.audit import count_recent_failed_logins, log_action
from mdsdys.store.users import (
    ROLES,
    User,
    find_user,
    get_user,
    insert_user,
    update_user,
)

_hasher = PasswordHasher()
MIN_PASSWORD_LENGTH = 8
# After this many failures in the window, a user name is locked for the rest of the window.
MAX_FAILED_LOGINS = 5
LOCKOUT_WINDOW = timedelta(minutes=15)
_USERNAME = re.compile(r"^[A-Za-z0-9_.-]{2,40}$")


def hash_password(password: str) -> str:
    """An argon2id hash of the password."""
    return _hasher.hash(password)


def create_user(db: Database, username: str, password: str, role: str, by: User | None = None) -> User:
    """Create an account; only admins (or first-run setup, by=None) may do this."""
    if by is not None:
        require_role(by, "admin")
    if not _USERNAME.match(username):
        raise MdsdysError("A user name is 2-40 letters, digits, '.', '_' or '-'.")
    if role not in ROLES:
        raise MdsdysError(f"Role must be one of {', '.join(ROLES)}, not {role!r}.")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise MdsdysError(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.")
    if find_user(db, username):
        raise MdsdysError(f"The user name {username!r} is taken; choose another.")
    with write_transaction(db):
        user = insert_user(db, username, role, hash_password(password))
        log_action(db, by, "user_create", "user", user.id, after={"username": username, "role": role})
    return user


def authenticate(db: Database, username: str, password: str) -> User:
    """The user for these credentials; raises AuthError, and refuses after repeated failures."""
    since = (datetime.now(UTC) - LOCKOUT_WINDOW).isoformat(timespec="milliseconds")
    if count_recent_failed_logins(db, username, since) >= MAX_FAILED_LOGINS:
        log_action(db, None, "login_refused", "user", username=username)
        minutes = int(LOCKOUT_WINDOW.total_seconds() // 60)
        raise AuthError(f"Too many failed logins for {username!r}. Wait {minutes} minutes or ask an admin.")
    found = find_user(db, username)
    if found is None or found[1] is None or not _verify(found[1], password):
        log_action(db, None, "login_failed", "user", username=username)
        raise AuthError("Wrong user name or password.")
    log_action(db, found[0], "login", "user", found[0].id)
    return found[0]


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def has_role(user: User | None, *roles: str) -> bool:
    """Whether a logged-in user's role is one of `roles` (admins always are)."""
    return user is not None and (user.role in roles or user.role == "admin")


def require_role(user: User | None, *roles: str) -> User:
    """Return the user if their role is one of `roles` (admins always pass); else raise."""
    if user is None:
        raise PermissionDeniedError("Please log in first.")
    if user.role not in roles and user.role != "admin":
        raise PermissionDeniedError(
            f"{user.username} is {_article(user.role)} {user.role}; this needs the role {' or '.join(roles)}. "
            "Ask an admin."
        )
    return user


def change_role(db: Database, by: User, user_id: int, role: str) -> None:
    """An admin changes another user's role; audited with before and after."""
    require_role(by, "admin")
    if role not in ROLES:
        raise MdsdysError(f"Role must be one of {', '.join(ROLES)}, not {role!r}.")
    target = get_user(db, user_id)
    with write_transaction(db):
        update_user(db, user_id, role=role)
        log_action(db, by, "user_role", "user", user_id, before={"role": target.role}, after={"role": role})


def reset_password(db: Database, by: User, user_id: int, password: str) -> None:
    """An admin (or the user themself) sets a new password; the audit row never holds it."""
    if by.id != user_id:
        require_role(by, "admin")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise MdsdysError(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.")
    with write_transaction(db):
        update_user(db, user_id, password_hash=hash_password(password))
        log_action(db, by, "user_password", "user", user_id)


def set_active(db: Database, by: User, user_id: int, active: bool) -> None:
    """An admin disables or re-enables an account."""
    require_role(by, "admin")
    with write_transaction(db):
        update_user(db, user_id, active=int(active))
        log_action(db, by, "user_active", "user", user_id, after={"active": active})


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"
