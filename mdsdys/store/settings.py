"""Small app-wide settings an admin can change (key/value)."""

from __future__ import annotations

from sqlite_utils import Database

from mdsdys.sequential import WHO_FLOORS


def get_setting(db: Database, key: str, default: str | None = None) -> str | None:
    """The stored value of a setting, or the default."""
    row = db.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
    return row[0] if row else default


def set_setting(db: Database, key: str, value: str) -> None:
    """Store a setting's value."""
    db.execute("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
               [key, value])


def delete_setting(db: Database, key: str) -> None:
    """Remove a setting (no error when it is absent)."""
    db.execute("DELETE FROM settings WHERE key = ?", [key])


def get_int_setting(db: Database, key: str, default: int) -> int:
    """A whole-number setting, or the default when unset."""
    value = get_setting(db, key)
    return int(value) if value is not None else default


def get_float_setting(db: Database, key: str, default: float) -> float:
    """A decimal setting, or the default when unset."""
    value = get_setting(db, key)
    return float(value) if value is not None else default


# Minimum counts before the counting rule may settle (issue 17); WHO practice unless an admin changes them.
COUNT_FLOOR_PREFIX = "count_floor_"


def count_floors(db: Database) -> dict[str, int]:
    """{lineage or 'differential': minimum cells}, the WHO floors unless an admin changed one."""
    return {name: get_int_setting(db, COUNT_FLOOR_PREFIX + name, cells) for name, cells in WHO_FLOORS.items()}


# How many blind reads each cell gets (issue 17): 0 = every reader reads every cell.
READS_PER_CELL = "reads_per_cell"


def reads_per_cell(db: Database) -> int:
    """Blind reads a cell gets before it leaves the Review queues; 0 = no limit."""
    return get_int_setting(db, READS_PER_CELL, 0)
