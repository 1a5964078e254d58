"""An interrupted import still leaves an audit trail, and a batch is bounded by bytes, not only by count
(issue 15, items 14 and 18)."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, image_bytes
from streamlit.runtime.scriptrunner_utils.exceptions import RerunException

from mdsdys.ingest import importer
from mdsdys.ingest.importer import SourceFile
from mdsdys.store import check_integrity, connect
from mdsdys.store.audit import list_audit
from mdsdys.store.stats import store_counts


def _fields(n: int, size=(40, 30)) -> list[SourceFile]:
    return [SourceFile(f"f{i:03d}.png", (lambda i=i: image_bytes(i, size=size))) for i in range(n)]


def _trail(db) -> list[tuple[str, dict]]:
    return [(r["action"], json.loads(r["after"])) for r in reversed(list_audit(db)) if r["action"].startswith("import")]


def test_an_import_stopped_by_a_rerun_has_audited_its_start_and_every_stored_batch(db, monkeypatch):
    monkeypatch.setattr(importer, "BATCH", 2)

    def rerun_after_two_batches(done, total, name):
        if done == 4:  # what st.rerun() or a widget change raises mid-script: a BaseException
            raise RerunException(None)

    with pytest.raises(RerunException):
        importer.import_patches(db, "S1", _fields(10), progress=rerun_after_two_batches)
    trail = _trail(db)
    assert trail[0] == ("import_start", {"kind": "import_patches", "files": 10})
    assert [(a, d["done"], d["added"]) for a, d in trail[1:]] == [("import_batch", 2, 2), ("import_batch", 4, 4)]
    assert store_counts(db)["patches"] == 4


_KILLER = """
import os, signal, sys
from pathlib import Path
from mdsdys.ingest import importer
from mdsdys.store import connect
importer.BATCH = 2
def die(done, total, name):
    if done == 4:
        os.kill(os.getpid(), signal.SIGKILL)  # no finally, no atexit: as the OOM killer or kill -9 does
with connect(Path(sys.argv[1]) / "labels.db") as db:
    importer.import_patches(db, "S1", importer.files_in_folder(Path(sys.argv[2])), progress=die)
"""


@pytest.mark.slow  # a fresh interpreter imports torch (~10 s on 2 cores)
def test_an_import_killed_by_sigkill_has_audited_everything_it_stored(home, tmp_path):
    folder = tmp_path / "fields"
    folder.mkdir()
    for i in range(10):
        (folder / f"f{i}.png").write_bytes(image_bytes(i, size=(40, 30)))
    env = os.environ | {"PYTHONPATH": str(REPO_ROOT), "MDSDYS_HOME": str(home)}
    killed = subprocess.run([sys.executable, "-c", _KILLER, str(home), str(folder)], env=env, timeout=120)
    assert killed.returncode == -9
    check_integrity(home / "labels.db")
    with connect(home / "labels.db") as db:
        trail, patches = _trail(db), store_counts(db)["patches"]
    assert trail[0][0] == "import_start" and patches == 4
    assert trail[-1] == ("import_batch", {"kind": "import_patches", "done": 4, "added": 4, "duplicates": 0,
                                          "skipped": 0})


def test_a_finished_import_audits_start_batches_and_end(db):
    importer.import_patches(db, "S1", _fields(3))
    assert [a for a, _ in _trail(db)] == ["import_start", "import_batch", "import_patches"]


def test_batches_of_big_fields_are_bounded_by_bytes(db, monkeypatch):
    field = 200 * 150 * 3 + len(image_bytes(0, size=(200, 150)))  # RGB plus file bytes of one field
    monkeypatch.setattr(importer, "BATCH_BYTES", int(2.5 * field))
    seen = []
    importer.import_patches(db, "S1", _fields(7, size=(200, 150)), progress=lambda done, *_: seen.append(done))
    assert seen == [3, 6, 7]  # the field that crosses the bound closes the batch
    assert store_counts(db)["patches"] == 7


def test_small_fields_still_go_a_full_count_to_a_batch(db, monkeypatch):
    monkeypatch.setattr(importer, "BATCH", 4)
    seen = []
    importer.import_patches(db, "S1", _fields(9), progress=lambda done, *_: seen.append(done))
    assert seen == [4, 8, 9]


def test_mask_and_cell_imports_audit_their_batches_too(db):
    pairs = [SourceFile(f"{folder}/a{i}.png", (lambda i=i: image_bytes(i, size=(40, 30))))
             for i in range(2) for folder in ("images", "masks")]
    importer.import_masks(db, "S1", pairs)
    cells = [SourceFile(f"EN/c{i}.png", (lambda i=i: image_bytes(i + 10))) for i in range(2)]
    importer.import_cells(db, "S2", cells)
    assert [a for a, _ in _trail(db)] == ["import_start", "import_batch", "import_masks",
                                          "import_start", "import_batch", "import_cells"]
