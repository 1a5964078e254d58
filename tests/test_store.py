"""The label store: migrations, pragmas, content addressing, read history and the audit log."""

import sqlite3

import pytest

from mdsdys.errors import SchemeError, StoreCorruptError
from mdsdys.store import check_integrity, connect, write_transaction
from mdsdys.store.audit import list_audit, log_action
from mdsdys.store.db import select_in
from mdsdys.store.patches import StoredImage, add_cell, add_patch
from mdsdys.store.reads import own_read, put_read, read_history
from mdsdys.store.slides import ensure_default_scheme, ensure_slide
from mdsdys.store.stats import store_counts
from mdsdys.store.users import insert_user

EXPECTED_TABLES = {
    "users", "schemes", "scheme_classes", "slides", "images", "patches", "masks", "cells",
    "models", "proposals", "reads", "consensus", "jobs", "audit", "settings",
}


def _slide(db):
    ensure_default_scheme(db)
    return ensure_slide(db, "S1", "mds8")[0]


def _cell(db):
    slide = _slide(db)
    patch_id, _ = add_patch(db, slide.id, StoredImage("abc", 4, 4, "image/png", b"x"), "p.png")
    return add_cell(db, slide.id, patch_id, (0, 0, 4, 4), "manual")[0]


def test_migrations_create_every_table_from_an_empty_file(tmp_path):
    with connect(tmp_path / "new.db") as db:
        assert EXPECTED_TABLES <= set(db.table_names())
        assert store_counts(db) == dict.fromkeys(
            ["slides", "patches", "masks", "cells", "reads", "consensus", "models", "jobs"], 0)
    with connect(tmp_path / "new.db") as db:  # re-opening applies nothing twice
        from mdsdys.store.schema import migrations
        assert migrations.pending(db) == []
        applied = db.execute("SELECT COUNT(*) FROM _sqlite_migrations").fetchone()[0]
        assert applied == len(migrations.applied(db)) >= 1


def test_connection_uses_wal_foreign_keys_and_busy_timeout(db):
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000


def test_foreign_keys_refuse_a_cell_on_a_missing_patch(db):
    slide = _slide(db)
    with pytest.raises(sqlite3.IntegrityError):
        add_cell(db, slide.id, 999, (0, 0, 1, 1), "manual")


def test_same_image_is_stored_once(db):
    slide = _slide(db)
    image = StoredImage("same", 4, 4, "image/png", b"pixels")
    first = add_patch(db, slide.id, image, "a.png")
    second = add_patch(db, slide.id, image, "copy-of-a.png")
    assert first == (first[0], True) and second == (first[0], False)
    assert db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 1


def test_a_new_read_keeps_the_earlier_version(db):
    cell_id = _cell(db)
    reader = insert_user(db, "ann", "reader", "h")
    put_read(db, cell_id, reader.id, "EN")
    replaced = put_read(db, cell_id, reader.id, "ED", tags=["nuclear budding"], seconds=2.5)
    assert replaced.code == "EN"
    assert own_read(db, reader.id, cell_id).code == "ED"
    assert [r.code for r in read_history(db, reader.id, cell_id)] == ["EN", "ED"]
    assert own_read(db, reader.id, cell_id).tags == ("nuclear budding",)


def test_two_current_reads_by_one_reader_are_impossible(db):
    cell_id = _cell(db)
    reader = insert_user(db, "ann", "reader", "h")
    put_read(db, cell_id, reader.id, "EN")
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO reads (cell_id, reader_id, code, created_at) VALUES (?, ?, 'GN', 'now')",
                    [cell_id, reader.id])


def test_audit_rows_cannot_be_changed_or_deleted(db):
    log_action(db, None, "test_action", username="someone")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE audit SET action = 'forged'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM audit")
    assert [row["action"] for row in list_audit(db)] == ["test_action"]


def test_a_failed_transaction_writes_nothing(db):
    slide = _slide(db)
    with pytest.raises(RuntimeError):
        with write_transaction(db):
            add_patch(db, slide.id, StoredImage("t", 1, 1, "image/png", b"x"), "t.png")
            raise RuntimeError("crash mid-write")
    assert store_counts(db)["patches"] == 0


def test_a_slide_keeps_its_scheme(db):
    _slide(db)
    with pytest.raises(SchemeError, match="uses scheme"):
        ensure_slide(db, "S1", "other")


def test_damaged_store_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "labels.db"
    with connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # wreck the schema page
    path.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError, match="restore"):
        check_integrity(path)


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    path = tmp_path / "labels.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreCorruptError):
        check_integrity(path)


def test_select_in_queries_more_values_than_sqlite_binds_at_once(db):
    db.execute("CREATE TEMP TABLE numbers (n INTEGER, tag TEXT)")
    db.conn.executemany("INSERT INTO numbers VALUES (?, ?)", [(n, "a" if n % 2 else "b") for n in range(1500)])
    rows = select_in(db, "SELECT n FROM numbers WHERE tag = ? AND n IN ({})", [*range(1200), 5, 7], ["a"])
    assert sorted(r[0] for r in rows) == list(range(1, 1200, 2))  # each value once, the leading parameter bound
