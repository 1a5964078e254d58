"""The append-only audit log: who did what, when, with before and after."""

from __future__ import annotations

import json
from typing import Any

from sqlite_utils import Database

from mdsdys.store.db import utcnow
from mdsdys.store.users import User


def log_action(
    db: Database, user: User | None, action: str, entity: str = "", entity_id: object = "",
    before: Any = None, after: Any = None, username: str | None = None,
) -> None:
    """Append one audit row; `before`/`after` are stored as JSON."""
    db.execute(
        "INSERT INTO audit (at, user_id, username, action, entity, entity_id, before, after) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            utcnow(), user.id if user else None, username or (user.username if user else "anonymous"),
            action, entity, str(entity_id), _json(before), _json(after),
        ],
    )


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str, sort_keys=True)


def list_audit(
    db: Database, action: str | None = None, username: str | None = None,
    since: str | None = None, limit: int = 1000,
) -> list[dict]:
    """Audit rows, newest first, filtered by action, user and start time."""
    where, params = ["1 = 1"], []
    for clause, value in (("action = ?", action), ("username = ?", username), ("at >= ?", since)):
        if value:
            where.append(clause)
            params.append(value)
    sql = f"SELECT * FROM audit WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?"
    return list(db.query(sql, [*params, limit]))


def count_recent_failed_logins(db: Database, username: str, since: str) -> int:
    """Failed logins for this user name since a time, for rate limiting."""
    row = db.execute(
        "SELECT COUNT(*) FROM audit WHERE action = 'login_failed' AND username = ? AND at >= ?",
        [username, since],
    ).fetchone()
    return int(row[0])


def audit_actions(db: Database) -> list[str]:
    """The distinct action names in the audit log."""
    return [r[0] for r in db.execute("SELECT DISTINCT action FROM audit ORDER BY action").fetchall()]
