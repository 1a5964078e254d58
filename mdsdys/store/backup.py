"""Online backup and restore of the label store with SQLite's backup API (safe while the app runs)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from mdsdys.errors import MdsdysError
from mdsdys.store import check_integrity
from mdsdys.store.db import BUSY_TIMEOUT_MS


def backup_store(db_path: Path, target: Path) -> int:
    """Copy a consistent snapshot of the store to `target` (written atomically); returns its size in bytes."""
    if not db_path.exists():
        raise MdsdysError(f"There is no store at {db_path} to back up.")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    with contextlib.closing(sqlite3.connect(str(db_path), timeout=BUSY_TIMEOUT_MS / 1000)) as source, \
            contextlib.closing(sqlite3.connect(str(partial))) as copy:
        source.backup(copy, pages=1024)
    check_integrity(partial)
    os.replace(partial, target)
    return target.stat().st_size


def restore_store(backup: Path, db_path: Path) -> None:
    """Replace the store with a checked backup; the current store is kept beside it as *.before-restore."""
    if not backup.exists():
        raise MdsdysError(f"No backup file at {backup}.")
    check_integrity(backup)
    with contextlib.closing(sqlite3.connect(str(backup))) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {"cells", "reads", "audit"} <= tables:
        raise MdsdysError(f"{backup} is an SQLite file but not an mdsdys label store; nothing was restored.")
    if db_path.exists():
        backup_store(db_path, db_path.with_name(db_path.name + ".before-restore"))
    staged = db_path.with_name(f".{db_path.name}.restoring")
    with contextlib.closing(sqlite3.connect(str(backup))) as source, \
            contextlib.closing(sqlite3.connect(str(staged))) as copy:
        source.backup(copy)
    for suffix in ("-wal", "-shm"):
        Path(str(db_path) + suffix).unlink(missing_ok=True)
    os.replace(staged, db_path)
