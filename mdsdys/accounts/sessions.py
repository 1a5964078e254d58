"""Staying logged in (issue 14 item 4): a random session token, kept server-side with an idle timeout.

The browser holds the token; the store holds only its SHA-256, the user, the expiry and the last
activity. A token that is unknown, altered, revoked, expired, idle too long or whose account is
disabled is refused: every doubt fails closed, and the person logs in again.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlite_utils import Database

from mdsdys.config import AuthLimits, load_auth_limits
from mdsdys.store import write_transaction
from mdsdys.store.audit import log_action
from mdsdys.store.sessions import (
    find_session,
    insert_session,
    revoke_session,
    save_session_state,
    touch_session,
)
from mdsdys.store.users import User, get_active_user, get_user

TOKEN_BYTES = 32                       # 256 random bits: guessing one is hopeless
TOUCH_EVERY = timedelta(seconds=60)    # write last activity at most once a minute, not on every rerun
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{40,64}$")


@dataclass(frozen=True)
class Session:
    """A live login: who, and what the pages kept for this login."""

    id: int
    user: User
    state: dict[str, Any]


def start_session(db: Database, user: User, limits: AuthLimits | None = None) -> str:
    """A new session for a user who has just logged in; returns the token for the browser to keep."""
    limits = limits or load_auth_limits()
    token = secrets.token_urlsafe(TOKEN_BYTES)
    expires = datetime.now(UTC) + timedelta(hours=limits.session_hours)
    with write_transaction(db):
        insert_session(db, _digest(token), user.id, expires.isoformat(timespec="milliseconds"))
    return token


def resume_session(db: Database, token: str | None, limits: AuthLimits | None = None) -> Session | None:
    """The live session behind a token, noting the activity; None for any token that is not valid now."""
    if not token or not _TOKEN.match(token):
        return None
    limits = limits or load_auth_limits()
    row = find_session(db, _digest(token))
    if row is None or row["revoked_at"]:
        return None
    now = datetime.now(UTC)
    last_seen = datetime.fromisoformat(row["last_seen_at"])
    if now >= datetime.fromisoformat(row["expires_at"]) or now - last_seen >= timedelta(minutes=limits.idle_minutes):
        with write_transaction(db):
            revoke_session(db, row["id"])
            log_action(db, get_user(db, row["user_id"]), "session_expired", "session", row["id"])
        return None
    user = get_active_user(db, row["user_id"])
    if user is None:
        return None
    if now - last_seen >= TOUCH_EVERY:
        with write_transaction(db):
            touch_session(db, row["id"])
    return Session(row["id"], user, json.loads(row["state"] or "{}"))


def end_session(db: Database, token: str | None) -> None:
    """Log out: the token is refused from now on, in this tab and every other."""
    if not token or not _TOKEN.match(token):
        return
    row = find_session(db, _digest(token))
    if row is None or row["revoked_at"]:
        return
    with write_transaction(db):
        revoke_session(db, row["id"])
        log_action(db, get_active_user(db, row["user_id"]), "logout", "session", row["id"])


def keep(db: Database, session_id: int, key: str, value: Any) -> None:
    """Keep one JSON-able value with the login, so it survives a reload (the review position, skips)."""
    save_session_state(db, session_id, key, value)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()
