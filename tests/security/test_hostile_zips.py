"""Hostile zips: entries are inflated one image at a time, never a non-image, and the limits hold per
import, not per zip; the CLI takes a zip under the same limits (issue 15, item 17)."""

import io
import string
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from conftest import image_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdsdys import cli
from mdsdys.errors import MdsdysError, UnsafeArchiveError, UploadTooLargeError
from mdsdys.imaging.decode import UnpackBudget
from mdsdys.ingest import importer
from mdsdys.store import connect
from mdsdys.store.stats import store_counts

MB = 2**20


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, payload in entries.items():
            archive.writestr(name, payload)
    return buffer.getvalue()


def _bomb(inflated_mb: int, extra: dict[str, bytes]) -> bytes:
    """A zip whose notes.csv inflates to `inflated_mb` of zeros (written in chunks: cheap to build)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("notes.csv", "w", force_zip64=True) as member:
            for _ in range(inflated_mb):
                member.write(bytes(MB))
        for name, payload in extra.items():
            archive.writestr(name, payload)
    return buffer.getvalue()


def test_a_non_image_entry_is_never_inflated(db):
    upload = _bomb(64, {"f1.png": image_bytes(1)})
    assert len(upload) < 200_000
    tracemalloc.start()
    try:
        files = importer.files_from_uploads([("fields.zip", upload)], max_upload_mb=10)
        report = importer.import_patches(db, "S1", files)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.added == 1 and [name for name, _ in report.skipped] == ["notes.csv"]
    assert peak < 16 * MB, f"peak {peak / MB:.0f} MB: the 64 MB non-image was inflated"


def test_zip_entries_are_inflated_one_at_a_time(db):
    entries = {f"f{i}.bmp": bytes(8 * MB) for i in range(6)}  # 48 MB of (damaged) images in one zip
    files = importer.files_from_uploads([("fields.zip", _zip(entries))], max_upload_mb=10)
    tracemalloc.start()
    try:
        report = importer.import_patches(db, "S1", files)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(report.skipped) == 6 and peak < 30 * MB, f"peak {peak / MB:.0f} MB"


def test_the_unpack_budget_is_per_import_not_per_zip():
    uploads = [(f"part{i}.zip", _zip({f"p{i}/big.bmp": bytes(3 * MB)})) for i in range(12)]
    budget = UnpackBudget(total_bytes=20 * MB)
    with pytest.raises(UnsafeArchiveError, match="per import"):
        importer.files_from_uploads(uploads, max_upload_mb=10, budget=budget)
    assert importer.files_from_uploads(uploads[:6], max_upload_mb=10, budget=UnpackBudget(total_bytes=20 * MB))


def test_upload_bytes_are_limited_per_import():
    uploads = [(f"f{i}.png", bytes(300_000)) for i in range(5)]  # each far under 1 MB, 1.4 MB together
    with pytest.raises(UploadTooLargeError, match="These 5 uploads"):
        importer.files_from_uploads(uploads, max_upload_mb=1)


def test_one_image_entry_larger_than_any_allowed_image_is_refused():
    budget = UnpackBudget(file_bytes=5 * MB)
    with pytest.raises(UnsafeArchiveError, match="one image may be at most 5 MB"):
        importer.files_from_uploads([("a.zip", _zip({"huge.tif": bytes(6 * MB)}))], 10, budget)


def test_cli_imports_a_zip_of_fields(home, tmp_path, capsys):
    archive = tmp_path / "fields.zip"
    archive.write_bytes(_zip({f"fields/f{i}.png": image_bytes(i) for i in range(3)} | {"fields/readme.txt": b"x"}))
    assert cli.main(["import-patches", str(archive), "--slide", "S1"]) == 1  # readme.txt is skipped
    assert "3 added" in capsys.readouterr().out
    with connect(home / "labels.db") as db:
        assert store_counts(db)["patches"] == 3


def test_cli_imports_a_zip_of_cells_and_of_masks(home, tmp_path, capsys):
    cells, masks = tmp_path / "cells.zip", tmp_path / "masks.zip"
    cells.write_bytes(_zip({f"EN/c{i}.png": image_bytes(i) for i in range(2)}))
    masks.write_bytes(_zip({f"{d}/a.png": image_bytes(9) for d in ("images", "masks")}))
    assert cli.main(["import-cells", str(cells), "--slide", "S1"]) == 0
    assert cli.main(["import-masks", str(masks), "--slide", "S2"]) == 0
    assert "2 added" in capsys.readouterr().out


@pytest.mark.parametrize("as_zip", [True, False], ids=["zip", "folder"])
def test_cli_applies_the_same_limit_to_a_zip_and_a_folder(home, tmp_path, capsys, monkeypatch, as_zip):
    monkeypatch.setenv("MDSDYS_MAX_IMPORT_MB", "1")
    folder = tmp_path / "fields"
    folder.mkdir()
    for i in range(3):
        (folder / f"f{i}.bmp").write_bytes(bytes(400_000))
    source = folder
    if as_zip:
        source = tmp_path / "fields.zip"
        source.write_bytes(_zip({p.name: p.read_bytes() for p in folder.iterdir()}))
    assert cli.main(["import-patches", str(source), "--slide", "S1"]) == 2
    assert "the limit is 1 MB per import (MDSDYS_MAX_IMPORT_MB)" in capsys.readouterr().err


_names = st.one_of(
    st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=8).map(lambda s: f"{s}.png"),
    st.sampled_from(["../up.png", "/abs.png", "a\\b.png", ".hidden.png", "__MACOSX/x.png", "dir/", "C:/x.png",
                     "x.PNG", "notes.txt", "a/b/c.jpg", "\u00e9t\u00e9.png"]),
)
_payloads = st.one_of(st.integers(0, 50).map(lambda seed: image_bytes(seed, size=(16, 12))),
                      st.binary(max_size=64), st.just(b""))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_names, _payloads, min_size=1, max_size=6))
def test_any_zip_imports_cleanly_or_is_refused_before_anything_is_stored(entries):
    with tempfile.TemporaryDirectory() as tmp, connect(Path(tmp) / "labels.db") as db:
        try:
            files = importer.files_from_uploads([("upload.zip", _zip(entries))], max_upload_mb=10)
        except UnsafeArchiveError:
            assert store_counts(db)["patches"] == 0
            return
        try:
            report = importer.import_patches(db, "S1", files)
        except MdsdysError:
            pytest.fail("a checked zip must import, skipping its bad files")
        names = [row[0] for row in db.execute("SELECT name FROM patches").fetchall()]
    assert report.added + report.duplicates + len(report.skipped) == len(files)
    assert all(not n.startswith("/") and ".." not in n.split("/") and "\\" not in n for n in names)
