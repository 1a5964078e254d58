"""Faults: killed imports, a damaged store, and backup/restore; nothing committed is lost."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import REPO_ROOT, image_bytes
from streamlit.testing.v1 import AppTest

from mdsdys.accounts import auth
from mdsdys.errors import MdsdysError, StoreCorruptError
from mdsdys.ingest import importer
from mdsdys.store import check_integrity, connect
from mdsdys.store.backup import backup_store, restore_store
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
    assert 0 < partial < 600 and partial % importer.BATCH == 0
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
    importer.import_patches(db, "S1", [importer.SourceFile(f"{i}.png", (lambda i=i: image_bytes(i))) for i in range(30)])
    _corrupt(home / "labels.db")
    with pytest.raises(StoreCorruptError, match="restore"):
        check_integrity(home / "labels.db")
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=60).run()
    assert at.error and "damaged" in at.error[0].value and not at.button
    serve = subprocess.run([sys.executable, "-m", "mdsdys.cli", "serve"], env=_env(home), capture_output=True,
                           text=True, timeout=60)
    assert serve.returncode == 2 and "mdsdys restore" in serve.stderr


def test_backup_while_writing_then_restore_loses_nothing_committed(db, home, tmp_path):
    importer.import_patches(db, "S1", [importer.SourceFile("a.png", lambda: image_bytes(1))])
    stop = threading.Event()

    def writer():
        n = 0
        while not stop.is_set():
            with connect(home / "labels.db") as own:
                importer.import_patches(own, "S1", [importer.SourceFile(f"w{n}.png", (lambda n=n: image_bytes(1000 + n)))])
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


def _proposals(db) -> dict[int, tuple[int, str]]:
    return {cell: (model, probs) for cell, model, probs in
            db.execute("SELECT cell_id, model_id, probs FROM proposals").fetchall()}


@pytest.mark.slow
def test_kill_9_mid_reproposal_leaves_read_cells_alone_and_a_rerun_finishes(home):
    """Issue 8: a worker killed while re-proposing after a promotion loses nothing and half-writes nothing."""
    from mdsdys.classify.proposals import propose_labels
    from mdsdys.classify.train import ClsTrainConfig
    from mdsdys.config import load_settings
    from mdsdys.demo.study import build_demo
    from mdsdys.jobs import worker
    from mdsdys.registry import promotion
    from mdsdys.registry.retrain import train_classifier_from_store
    from mdsdys.schemes import DEFAULT_SCHEME_NAME
    from mdsdys.store.jobs import get_job
    from mdsdys.store.reads import put_read
    from mdsdys.store.slides import list_slides

    settings = load_settings()
    with connect(settings.db_path) as db:
        build_demo(db, seed=0, patches_per_slide=40, training_cells_per_class=6)
    tiny = ClsTrainConfig(input_size=32, epochs=2, batch_size=16)
    _, first = train_classifier_from_store(settings, DEFAULT_SCHEME_NAME, tiny, min_train_per_class=3)
    _, second = train_classifier_from_store(settings, DEFAULT_SCHEME_NAME, dataclasses.replace(tiny, seed=1),
                                            min_train_per_class=3)
    with connect(settings.db_path) as db:
        slides = [s for s in list_slides(db) if s.case_id != "SYN-TRAIN"]
        for slide in slides:
            propose_labels(db, slide.id)  # the first model's proposals everywhere
        reader = auth.authenticate(db, "reader1", "demo-reader-1")
        read_cells = [row[0] for row in db.execute("SELECT id FROM cells WHERE source = 'manual' LIMIT 40")]
        for cell in read_cells:
            put_read(db, cell, reader.id, "EN")
        before = _proposals(db)
        admin = auth.authenticate(db, "admin", "demo-admin-pass")
        promotion.promote(db, settings, admin, second.id, force=True, start_worker=False)
        job_id = db.execute("SELECT MAX(id) FROM jobs").fetchone()[0]
        unread = db.execute("SELECT COUNT(*) FROM cells c WHERE NOT EXISTS "
                            "(SELECT 1 FROM reads r WHERE r.cell_id = c.id)").fetchone()[0]

    def job():
        with connect(settings.db_path) as db:
            return get_job(db, job_id)

    process = subprocess.Popen([sys.executable, "-m", "mdsdys.cli", "worker", "--idle-exit", "2"], env=_env(home),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while job().progress.get("done", 0) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert job().state == "running"
    worker.run_worker(settings, idle_exit_s=0, max_jobs=0)  # the next worker marks the dead job failed
    assert job().state == "failed"
    check_integrity(settings.db_path)
    with connect(settings.db_path) as db:
        after = _proposals(db)
        assert all(after[cell] == before[cell] for cell in read_cells)  # read cells: untouched
        assert after.keys() == before.keys()  # no proposal lost
        redone = [cell for cell in after if after[cell][0] == second.id]
        assert 0 < len(redone) < unread  # killed part-way: some whole batches were committed
        assert all(len(json.loads(probs)) == 8 for _, probs in after.values())  # no half-written row
        promotion.rollback(db, settings, admin, first.id, start_worker=False)
        promotion.promote(db, settings, admin, second.id, force=True, start_worker=False)
    worker.run_worker(settings, idle_exit_s=0)  # the re-queued re-proposal finishes the work
    with connect(settings.db_path) as db:
        final = _proposals(db)
        assert all(final[cell] == before[cell] for cell in read_cells)
        assert sum(1 for model, _ in final.values() if model == second.id) == unread
