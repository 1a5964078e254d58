"""Login sessions, login attempts (rate limiting) and who has seen another reader's read."""

from __future__ import annotations

import json
from typing import Any

from sqlite_utils import Database

from mdsdys.store.db import utcnow, write_transaction


def insert_session(db: Database, token_hash: str, user_id: int, expires_at: str) -> int:
    """Store a new session by the hash of its token."""
    now = utcnow()
    return db.execute(
        "INSERT INTO sessions (token_hash, user_id, created_at, last_seen_at, expires_at) VALUES (?, ?, ?, ?, ?)",
        [token_hash, user_id, now, now, expires_at]).lastrowid


def find_session(db: Database, token_hash: str) -> dict | None:
    """The session row with this token hash (revoked or not), or None."""
    rows = list(db.query("SELECT * FROM sessions WHERE token_hash = ?", [token_hash]))
    return rows[0] if rows else None


def touch_session(db: Database, session_id: int) -> None:
    """Note activity on a session, restarting its idle timeout."""
    db.execute("UPDATE sessions SET last_seen_at = ? WHERE id = ?", [utcnow(), session_id])


def revoke_session(db: Database, session_id: int) -> None:
    """End one session; its token is refused from now on."""
    db.execute("UPDATE sessions SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", [utcnow(), session_id])


def revoke_user_sessions(db: Database, user_id: int) -> int:
    """End every session of a user (disabled account, new password); returns how many."""
    return db.execute("UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
                      [utcnow(), user_id]).rowcount


def save_session_state(db: Database, session_id: int, key: str, value: Any) -> None:
    """Keep one JSON value in a session's page state."""
    with write_transaction(db):
        row = db.execute("SELECT state FROM sessions WHERE id = ?", [session_id]).fetchone()
        state = json.loads(row[0]) if row else {}
        state[key] = value
        db.execute("UPDATE sessions SET state = ? WHERE id = ?", [json.dumps(state), session_id])


def reserve_login_attempt(db: Database, name: str, since: str, max_failures: int, global_since: str,
                          max_global: int, prune_before: str) -> tuple[int | None, str]:
    """Count and reserve in one IMMEDIATE transaction: (attempt id, "") or (None, why refused).

    A pending attempt counts as a failure until it is resolved, so N parallel attempts on one name
    get at most `max_failures` password checks (issue 15 item 2).
    """
    with write_transaction(db):
        db.execute("DELETE FROM login_attempts WHERE at < ?", [prune_before])
        failed = db.execute("SELECT COUNT(*) FROM login_attempts WHERE name = ? AND at >= ? AND outcome IN "
                            "('pending', 'failed')", [name, since]).fetchone()[0]
        if failed >= max_failures:
            return None, _refuse(db, name, "name")
        recent = db.execute("SELECT COUNT(*) FROM login_attempts WHERE at >= ? AND outcome IN ('pending', 'failed')",
                            [global_since]).fetchone()[0]
        if recent >= max_global:
            return None, _refuse(db, name, "rate")
        attempt = db.execute("INSERT INTO login_attempts (name, at, outcome) VALUES (?, ?, 'pending')",
                             [name, utcnow()]).lastrowid
    return attempt, ""


def _refuse(db: Database, name: str, why: str) -> str:
    db.execute("INSERT INTO login_attempts (name, at, outcome) VALUES (?, ?, 'refused')", [name, utcnow()])
    return why


def refusals_since(db: Database, since: str, name: str | None = None) -> int:
    """How many attempts (on this name, or on any) were refused unchecked since a time."""
    return db.execute("SELECT COUNT(*) FROM login_attempts WHERE (? IS NULL OR name = ?) AND at >= ? "
                      "AND outcome = 'refused'", [name, name, since]).fetchone()[0]


def finish_login_attempt(db: Database, attempt_id: int, ok: bool) -> None:
    """Resolve a reserved attempt as a success or a failure."""
    db.execute("UPDATE login_attempts SET outcome = ? WHERE id = ?", ["ok" if ok else "failed", attempt_id])


def mark_unblinded(db: Database, user_id: int, cell_ids: list[int]) -> None:
    """Record that this user has now seen other readers' reads of these cells (first time kept)."""
    now = utcnow()
    db.conn.executemany("INSERT OR IGNORE INTO unblinded (cell_id, user_id, at) VALUES (?, ?, ?)",
                   [(cell_id, user_id, now) for cell_id in cell_ids])


def has_seen_other_reads(db: Database, user_id: int, cell_id: int) -> bool:
    """Whether this user has seen another reader's read of the cell."""
    return db.execute("SELECT 1 FROM unblinded WHERE cell_id = ? AND user_id = ?",
                      [cell_id, user_id]).fetchone() is not None
