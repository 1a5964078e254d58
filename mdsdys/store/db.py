"""Opening the label store: pragmas, migrations, integrity and transactions."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from sqlite_utils import Database

from mdsdys.errors import StoreCorruptError
from mdsdys.store.schema import migrations

# Writers wait this long for the lock instead of failing with "database is locked".
BUSY_TIMEOUT_MS = 15_000
_migrated: set[str] = set()
_migrate_lock = threading.Lock()
# The triggers that keep the audit log append-only, with the migration that creates each: a store
# altered outside the app (sqlite-utils `table.transform()` rebuilds a table without its triggers)
# must not open as if nothing happened (issue 15, item 13).
AUDIT_TRIGGERS = {
    "audit_no_update": "m001_initial",
    "audit_no_delete": "m001_initial",
    "audit_no_replace": "m007_integrity_audit_replace",
}


def utcnow() -> str:
    """The current UTC time as ISO-8601 text, the store's timestamp format."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def select_in(db: Database, sql: str, values: Sequence, params: Sequence = ()) -> list[tuple]:
    """Rows of `sql` whose "{}" becomes placeholders for `values`, queried in chunks of 500.

    SQLite allows 999 bound variables per statement; `params` are bound before each chunk.
    """
    wanted = sorted(set(values))
    rows: list[tuple] = []
    for start in range(0, len(wanted), 500):
        chunk = wanted[start:start + 500]
        rows.extend(db.execute(sql.format(", ".join("?" * len(chunk))), [*params, *chunk]).fetchall())
    return rows


def open_db(path: Path | str) -> Database:
    """Open (creating if needed) and migrate the store; the caller closes it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        db = Database(conn, execute_plugins=False)
        _set_pragmas(db)
        _migrate_once(db, str(path.resolve()))
    except StoreCorruptError:
        conn.close()
        raise
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreCorruptError(
            f"The label store {path} cannot be opened ({exc}). Restore it from a backup with "
            "'mdsdys restore FILE', or move it aside to start a new one."
        ) from exc
    return db


@contextlib.contextmanager
def connect(path: Path | str) -> Iterator[Database]:
    """A short-lived store connection, closed on exit; never share one across threads."""
    db = open_db(path)
    try:
        yield db
    finally:
        db.close()


def _set_pragmas(db: Database) -> None:
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("PRAGMA synchronous = NORMAL")  # safe with WAL: a crash loses no committed transaction's integrity
    if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        db.execute("PRAGMA journal_mode = WAL")


def _migrate_once(db: Database, key: str) -> None:
    """Apply pending migrations the first time this process opens a given file."""
    if key in _migrated:
        return
    with _migrate_lock:
        if key in _migrated:
            return
        db.execute("PRAGMA schema_version").fetchone()  # fails fast on a file that is not a database
        if migrations.pending(db):
            with write_transaction(db):
                migrations.apply(db)
        check_audit_protections(db.conn, key)
        _migrated.add(key)


@contextlib.contextmanager
def write_transaction(db: Database) -> Iterator[Database]:
    """Run a multi-row write in one IMMEDIATE transaction (nested calls become savepoints).

    IMMEDIATE takes the write lock up front, so a concurrent writer waits on busy_timeout
    instead of failing mid-transaction with SQLITE_BUSY.
    """
    if db.conn.in_transaction:
        with db.atomic():
            yield db
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.conn.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def check_integrity(path: Path | str) -> None:
    """Raise StoreCorruptError when SQLite's quick_check finds damage in the store file."""
    path = Path(path)
    if not path.exists():
        return
    try:
        with contextlib.closing(sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000)) as conn:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
            if problems == ["ok"]:
                check_audit_protections(conn, path)
    except sqlite3.DatabaseError as exc:
        problems = [str(exc)]
    if problems != ["ok"]:
        raise StoreCorruptError(
            f"The label store {path} is damaged ({'; '.join(problems[:3])}). The app will not start on it: "
            "restore the last backup with 'mdsdys restore FILE'."
        )


def check_audit_protections(conn: sqlite3.Connection, path: Path | str) -> None:
    """Raise StoreCorruptError when a trigger that keeps the audit log append-only is missing.

    Only triggers whose migration has run are required, so a backup made before a newer
    migration still restores (and gains the trigger when it is next opened).
    """
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "audit" not in tables or migrations.migrations_table not in tables:
        return  # not (yet) a label store: nothing to protect
    applied = {r[0] for r in conn.execute(
        f"SELECT name FROM {migrations.migrations_table} WHERE migration_set = ?", [migrations.name])}
    present = {r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit'")}
    missing = sorted(name for name, made_by in AUDIT_TRIGGERS.items() if made_by in applied and name not in present)
    if missing:
        raise StoreCorruptError(
            f"The label store {path} has lost the protections of its audit log (missing triggers: "
            f"{', '.join(missing)}), so its history may have been rewritten; a tool such as sqlite-utils "
            "'transform' drops them. The app will not start on it: restore the last backup with "
            "'mdsdys restore FILE'."
        )
