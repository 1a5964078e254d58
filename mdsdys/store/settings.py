"""Small app-wide settings an admin can change (key/value)."""

from __future__ import annotations

from sqlite_utils import Database


def get_setting(db: Database, key: str, default: str | None = None) -> str | None:
    """The stored value of a setting, or the default."""
    row = db.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
    return row[0] if row else default


def set_setting(db: Database, key: str, value: str) -> None:
    """Store a setting's value."""
    db.execute("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
               [key, value])
