"""Accounts, password hashing (argon2) and login with rate limiting, enforced on the server side.

Who may do what is `mdsdys.accounts.policy`; the rules for names and passwords are
`mdsdys.accounts.rules`; staying logged in is `mdsdys.accounts.sessions`.
"""

from __future__ import annotations

import functools
import secrets
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlite_utils import Database

from mdsdys.accounts import policy, rules
from mdsdys.config import AuthLimits, load_auth_limits
from mdsdys.errors import AuthError, LastAdminError, MdsdysError
from mdsdys.store import write_transaction
from mdsdys.store.audit import log_action
from mdsdys.store.sessions import (
    finish_login_attempt,
    refusals_since,
    reserve_login_attempt,
    revoke_user_sessions,
)
from mdsdys.store.users import (
    ROLES,
    User,
    all_usernames,
    count_active_admins,
    find_user,
    get_user,
    insert_user,
    update_user,
    username_taken,
)

_hasher = PasswordHasher()
MIN_PASSWORD_LENGTH = rules.MIN_PASSWORD_LENGTH
MAX_FAILED_LOGINS = AuthLimits.max_failures   # the default; load_auth_limits() reads the override


def hash_password(password: str) -> str:
    """An argon2id hash of the password."""
    return _hasher.hash(password)


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against when the name is unknown, so both answers take as long (item 3)."""
    return _hasher.hash(secrets.token_urlsafe(16))


def create_user(db: Database, username: str, password: str, role: str, by: User | None = None) -> User:
    """Create an account; only admins (or first-run setup and the CLI, by=None) may do this."""
    if by is not None:
        policy.require(by, "user_manage")
    if role not in ROLES:
        raise MdsdysError(f"Role must be one of {', '.join(ROLES)}, not {role!r}.")
    rules.check_username(username)
    rules.check_password(password, username)
    password_hash = hash_password(password)
    with write_transaction(db):
        if username_taken(db, username) and find_user(db, username) is None:  # disabled: it keeps its name and reads
            raise MdsdysError(f"The user name {username!r} belongs to a disabled account; re-enable it on the "
                              "Admin page, or choose another name.")
        rules.check_username(username, all_usernames(db))  # inside the lock: two admins, one name
        user = insert_user(db, username, role, password_hash)
        log_action(db, by, "user_create", "user", user.id, after={"username": username, "role": role})
    return user


def authenticate(db: Database, username: str, password: str, limits: AuthLimits | None = None) -> User:
    """The user for these credentials; raises AuthError, and refuses after repeated failures.

    Failures count per canonical name (any spelling of one name shares its count), and the slot is
    reserved before the password is checked, so parallel attempts cannot all be checked (items 1, 2).
    """
    limits = limits or load_auth_limits()
    name = rules.canonical_name(username)
    now = datetime.now(UTC)
    window_start = _iso(now - timedelta(minutes=limits.lockout_minutes))
    attempt, refused = reserve_login_attempt(
        db, name, window_start, limits.max_failures, _iso(now - timedelta(minutes=1)),
        limits.max_failures_per_minute, _iso(now - timedelta(days=1)))
    if attempt is None:
        _refuse(db, name, refused, window_start if refused == "name" else _iso(now - timedelta(minutes=1)), limits)
    found = find_user(db, username.strip()) if len(username) <= 40 else None
    stored = found[1] if found and not found[0].is_system else None
    ok = _verify(stored or _dummy_hash(), password) and stored is not None
    with write_transaction(db):
        finish_login_attempt(db, attempt, ok)
        if not ok:
            log_action(db, None, "login_failed", "user", username=name)
        else:
            log_action(db, found[0], "login", "user", found[0].id)
    if not ok:
        raise AuthError("Wrong user name or password.")
    return found[0]


def _refuse(db: Database, name: str, why: str, since: str, limits: AuthLimits) -> None:
    """Raise the refusal; audit only the first per name and lockout window (or per minute, for the
    server-wide rate), so refused attempts cannot flood the append-only log."""
    if refusals_since(db, since, name if why == "name" else None) <= 1:
        with write_transaction(db):
            log_action(db, None, "login_refused", "user", username=name, after={"why": why})
    if why == "rate":
        raise AuthError("Too many failed logins on this server in the last minute. Wait a minute and try again.")
    raise AuthError(f"Too many failed logins for {name!r}. Wait {limits.lockout_minutes} minutes or ask an admin.")


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password[:rules.MAX_PASSWORD_LENGTH])
    except (VerificationError, InvalidHashError):
        return False


def change_role(db: Database, by: User, user_id: int, role: str) -> None:
    """An admin changes another user's role; audited with before and after. The last admin stays admin."""
    policy.require(by, "user_manage")
    if role not in ROLES:
        raise MdsdysError(f"Role must be one of {', '.join(ROLES)}, not {role!r}.")
    with write_transaction(db):
        target = get_user(db, user_id)
        if policy.can(target, "user_manage") and not policy.role_can(role, "user_manage"):
            _keep_an_admin(db, target, "demoted")
        update_user(db, user_id, role=role)
        log_action(db, by, "user_role", "user", user_id, before={"role": target.role}, after={"role": role})


def _keep_an_admin(db: Database, target: User, change: str) -> None:
    """Refuse a change that leaves no active admin (issue 14 item 5); call inside the write transaction."""
    if count_active_admins(db, excluding=target.id) == 0:
        raise LastAdminError(f"{target.username} is the last active admin and cannot be {change}. "
                             "Make another account admin first.")


def reset_password(db: Database, by: User, user_id: int, password: str) -> None:
    """An admin (or the user themself) sets a new password; the audit row never holds it.

    Every session of the account ends, so whoever knew the old password is logged out.
    """
    if by.id != user_id:
        policy.require(by, "user_manage")
    elif not policy.can(by, "review"):
        policy.require(by, "user_manage")  # a disabled account cannot change its own password either
    target = get_user(db, user_id)
    rules.check_password(password, target.username)
    password_hash = hash_password(password)
    with write_transaction(db):
        update_user(db, user_id, password_hash=password_hash)
        revoke_user_sessions(db, user_id)
        log_action(db, by, "user_password", "user", user_id)


def set_active(db: Database, by: User, user_id: int, active: bool) -> None:
    """An admin disables or re-enables an account; disabling ends its sessions. The last admin stays."""
    policy.require(by, "user_manage")
    with write_transaction(db):
        target = get_user(db, user_id)
        if not active and policy.can(target, "user_manage"):
            _keep_an_admin(db, target, "disabled")
        update_user(db, user_id, active=int(active))
        if not active:
            revoke_user_sessions(db, user_id)
        log_action(db, by, "user_active", "user", user_id, after={"active": active})
