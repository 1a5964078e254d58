"""The audit log cannot be rewritten in place, and a store that lost its protections does not open."""

import sqlite3

import pytest
from sqlite_utils import Database

from mdsdys.errors import StoreCorruptError
from mdsdys.store import check_integrity, write_transaction
from mdsdys.store.audit import list_audit, log_action
from mdsdys.store.db import open_db


def _first_row(db):
    with write_transaction(db):
        log_action(db, None, "login_failed", "user", username="eve")
    return list_audit(db)[-1]


def _raw(home):
    """A plain sqlite3 connection, as the sqlite3 shell opens it: recursive_triggers is off there,
    so REPLACE fires no delete trigger (sqlite-utils turns it on, which hid the hole)."""
    conn = sqlite3.connect(str(home / "labels.db"), isolation_level=None)
    assert conn.execute("PRAGMA recursive_triggers").fetchone() == (0,)
    return conn


def test_insert_or_replace_cannot_rewrite_an_audit_row(home, db):
    row = _first_row(db)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        _raw(home).execute("INSERT OR REPLACE INTO audit (id, at, username, action) VALUES (?, 'x', 'x', 'nothing')",
                   [row["id"]])
    assert list_audit(db)[-1] == row


def test_upsert_on_an_audit_id_is_refused(home, db):
    row = _first_row(db)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        _raw(home).execute("INSERT INTO audit (id, at, username, action) VALUES (?, 'x', 'x', 'y') "
                   "ON CONFLICT (id) DO UPDATE SET action = 'y'", [row["id"]])
    assert list_audit(db)[-1] == row


def test_new_audit_rows_are_still_appended(db):
    _first_row(db)
    with write_transaction(db):
        log_action(db, None, "login", "user", username="ann")
    assert [r["action"] for r in list_audit(db)][:2] == ["login", "login_failed"]


def test_a_store_whose_audit_triggers_were_dropped_is_refused(home, db):
    _first_row(db)
    path = home / "labels.db"
    raw = Database(sqlite3.connect(str(path)))
    raw["audit"].transform(types={"entity_id": str})  # rebuilds the table without its triggers
    raw.close()
    with pytest.raises(StoreCorruptError, match="audit_no_delete.*mdsdys restore"):
        check_integrity(path)
    copy = home / "copy" / "labels.db"  # a path this process has not opened yet
    copy.parent.mkdir()
    with sqlite3.connect(str(path)) as source, sqlite3.connect(str(copy)) as target:
        source.backup(target)  # the WAL too, which a plain file copy would miss
    with pytest.raises(StoreCorruptError, match="protections of its audit log"):
        open_db(copy)


def test_an_untouched_store_passes_the_check(home, db):
    _first_row(db)
    check_integrity(home / "labels.db")
