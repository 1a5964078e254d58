"""Faults: killed imports, a damaged store, and backup/restore; nothing committed is lost."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from streamlit.testing.v1 import AppTest

from conftest import REPO_ROOT, image_bytes
from mdsdys import auth, ingest
from mdsdys.backup import backup_store, restore_store
from mdsdys.errors import MdsdysError, StoreCorruptError
from mdsdys.store import check_integrity, connect
from mdsdys.store.stats import store_counts


def _env(home):
    return os.environ | {"MDSDYS_HOME": str(home)}


def _count(home, key):
    try:
        with connect(home / "labels.db") as db:
            return store_counts(db)[key]
    except MdsdysError:
        return 0


@pytest.mark.slow
def test_an_import_killed_midway_keeps_whole_batches_and_a_rerun_completes_it(home, tmp_path):
    folder = tmp_path / "fields"
    folder.mkdir()
    for i in range(600):
        (folder / f"f{i:04d}.png").write_bytes(image_bytes(i, size=(160, 120)))
    command = [sys.executable, "-m", "mdsdys.cli", "import-patches", str(folder), "--slide", "S1"]
    process = subprocess.Popen(command, env=_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while _count(home, "patches") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    check_integrity(home / "labels.db")
    partial = _count(home, "patches")
    assert 0 < partial < 600 and partial % ingest.BATCH == 0
    rerun = subprocess.run(command, env=_env(home), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and f"{600 - partial} added, {partial} already present" in rerun.stdout
    assert _count(home, "patches") == 600


def _corrupt(path):
    with connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    data[4096:8192] = os.urandom(4096)  # a page in the middle of the file
    path.write_bytes(bytes(data))


def test_the_app_refuses_a_damaged_store_with_a_clear_message(db, home):
    auth.create_user(db, "boss", "password-b", "admin")
    ingest.import_patches(db, "S1", [ingest.SourceFile(f"{i}.png", (lambda i=i: image_bytes(i))) for i in range(30)])
    _corrupt(home / "labels.db")
    with pytest.raises(StoreCorruptError, match="restore"):
        check_integrity(home / "labels.db")
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=60).run()
    assert at.error and "damaged" in at.error[0].value and not at.button
    serve = subprocess.run([sys.executable, "-m", "mdsdys.cli", "serve"], env=_env(home), capture_output=True,
                           text=True, timeout=60)
    assert serve.returncode == 2 and "mdsdys restore" in serve.stderr


def test_backup_while_writing_then_restore_loses_nothing_committed(db, home, tmp_path):
    ingest.import_patches(db, "S1", [ingest.SourceFile("a.png", lambda: image_bytes(1))])
    stop = threading.Event()

    def writer():
        n = 0
        while not stop.is_set():
            with connect(home / "labels.db") as own:
                ingest.import_patches(own, "S1", [ingest.SourceFile(f"w{n}.png", (lambda n=n: image_bytes(1000 + n)))])
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.5)
    backup_store(home / "labels.db", tmp_path / "backup.db")
    stop.set()
    thread.join()
    check_integrity(tmp_path / "backup.db")
    backed_up = _counts_of(tmp_path / "backup.db")
    assert backed_up["patches"] >= 1
    restore_store(tmp_path / "backup.db", home / "labels.db")
    assert _counts_of(home / "labels.db") == backed_up
    assert (home / "labels.db.before-restore").exists()


def _counts_of(path):
    with connect(path) as db:
        return store_counts(db)


def test_restore_refuses_a_file_that_is_not_a_label_store(home, tmp_path):
    import sqlite3
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(MdsdysError, match="not an mdsdys label store"):
        restore_store(other, home / "labels.db")


def test_backup_and_restore_from_the_command_line(home, tmp_path):
    ingest_dir = tmp_path / "in"
    ingest_dir.mkdir()
    (ingest_dir / "a.png").write_bytes(image_bytes(3))
    run = lambda *args: subprocess.run([sys.executable, "-m", "mdsdys.cli", *args], env=_env(home),  # noqa: E731
                                       capture_output=True, text=True, timeout=120)
    assert run("import-patches", str(ingest_dir), "--slide", "S1").returncode == 0
    assert run("backup", str(tmp_path / "b.db")).returncode == 0
    assert run("restore", str(tmp_path / "b.db")).returncode == 0
    assert json.loads(run("status", "--json").stdout)["patches"] == 1
