"""Importing fields, labelled cells and masks: idempotent, and bad files named and skipped."""

import io
import zipfile

import numpy as np
import pytest
from conftest import image_bytes, requires_shared
from PIL import Image

from mdsdys.errors import ImportProblemError, UnsafeArchiveError, UploadTooLargeError
from mdsdys.ingest import importer
from mdsdys.store.reads import imported_read
from mdsdys.store.slides import find_slide, load_scheme
from mdsdys.store.stats import store_counts


def _files(tree: dict[str, bytes]) -> list[importer.SourceFile]:
    return [importer.SourceFile(name, (lambda b=data: b)) for name, data in sorted(tree.items())]


def _write(root, tree: dict[str, bytes]):
    for name, data in tree.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def _odd_mode(mode: str, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if mode == "I;16":
        Image.fromarray((np.arange(48 * 40).reshape(40, 48) * 20).astype(np.uint16)).save(buffer, format=fmt)
    else:
        Image.new(mode, (48, 40), color=(10, 200, 30, 128)[: len(mode)] if mode != "L" else 128).save(
            buffer, format=fmt)
    return buffer.getvalue()


def test_reimporting_fields_adds_nothing(db, tmp_path):
    folder = _write(tmp_path / "fields", {f"f{i}.png": image_bytes(i) for i in range(3)})
    first = importer.import_patches(db, "S1", importer.files_in_folder(folder))
    second = importer.import_patches(db, "S1", importer.files_in_folder(folder))
    assert (first.added, second.added, second.duplicates) == (3, 0, 3)
    assert store_counts(db)["patches"] == 3


def test_two_good_images_import_and_three_bad_files_are_named(db, tmp_path):
    good = {"a.jpg": image_bytes(1, fmt="JPEG"), "b.png": image_bytes(2)}
    bad = {"empty.jpg": b"", "notes.jpg": b"just some text\n", "cut.png": image_bytes(3)[:60]}
    report = importer.import_patches(db, "S1", importer.files_in_folder(_write(tmp_path / "mix", good | bad)))
    assert report.added == 2 and not report.ok
    reasons = dict(report.skipped)
    assert set(reasons) == set(bad)
    assert "empty" in reasons["empty.jpg"] and "not an image" in reasons["notes.jpg"]
    assert "truncated" in reasons["cut.png"] or "damaged" in reasons["cut.png"]


def test_a_non_image_extension_is_skipped_with_a_reason(db):
    report = importer.import_patches(db, "S1", _files({"readme.txt": b"hello"}))
    assert report.skipped[0][0] == "readme.txt" and "not an image" in report.skipped[0][1]


@pytest.mark.parametrize("mode, fmt", [("I;16", "TIFF"), ("L", "PNG"), ("RGBA", "PNG"), ("CMYK", "JPEG")])
def test_odd_image_modes_are_converted_and_imported(db, mode, fmt):
    report = importer.import_patches(db, "S1", _files({f"odd.{fmt.lower()}": _odd_mode(mode, fmt)}))
    assert report.ok and report.added == 1


def test_a_decompression_bomb_is_refused(db):
    buffer = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buffer, format="PNG")  # 64 MP of zeros compresses to a few kB
    report = importer.import_patches(db, "S1", _files({"bomb.png": buffer.getvalue()}), max_pixels=40_000_000)
    assert report.added == 0 and "bomb.png" in report.skipped[0][1]


def test_cells_import_one_folder_per_class_as_imported_reads(db):
    tree = {f"{code}/{code}_{i}.png": image_bytes(10 * n + i) for n, code in enumerate(["EN", "ED"]) for i in range(2)}
    report = importer.import_cells(db, "cells", _files(tree))
    again = importer.import_cells(db, "cells", _files(tree))
    counts = store_counts(db)
    assert report.added == 4 and again.added == 0 and again.duplicates == 4
    assert counts["cells"] == 4 and counts["reads"] == 4 and counts["patches"] == 0
    assert imported_read(db, 1).code in {"EN", "ED"}


def test_class_folders_match_codes_or_names_case_insensitively(db):
    tree = {"en/x.png": image_bytes(1), "Blast/y.png": image_bytes(2), "weird/z.png": image_bytes(3)}
    report = importer.import_cells(db, "cells", _files(tree))
    assert report.added == 2
    assert report.skipped[0][0] == "weird/z.png" and "not a class of scheme 'mds8'" in report.skipped[0][1]


def test_an_unknown_scheme_name_is_created_from_the_folder_names(db):
    tree = {"neutrophil/a.png": image_bytes(1), "erythroblast/b.png": image_bytes(2)}
    report = importer.import_cells(db, "pbcmini", _files(tree), scheme_name="pbcmini")
    assert report.ok and find_slide(db, "pbcmini").scheme_name == "pbcmini"
    assert load_scheme(db, "pbcmini").codes == ("erythroblast", "neutrophil")


def test_cells_without_class_folders_are_refused_with_advice(db):
    with pytest.raises(ImportProblemError, match="one folder per class"):
        importer.import_cells(db, "cells", _files({"a.png": image_bytes(1)}))


def test_masks_import_pairs_and_refuses_mismatched_sizes(db):
    mask = np.zeros((40, 48), np.uint8)
    mask[5:15, 5:15] = 255
    mask[25:35, 30:40] = 255
    small_mask = np.zeros((10, 10), np.uint8)
    tree = {
        "images/a.jpg": image_bytes(1, fmt="JPEG"), "masks/a.png": _png(mask),
        "images/b.png": image_bytes(2), "masks/b.png": _png(small_mask),
        "images/c.png": image_bytes(3),
    }
    report = importer.import_masks(db, "fields", _files(tree))
    again = importer.import_masks(db, "fields", _files(tree))
    skipped = dict(report.skipped)
    assert report.added == 1 and again.added == 0 and store_counts(db)["masks"] == 1
    assert "must match" in skipped["masks/b.png"] and "images/c.png" in skipped
    assert db.execute("SELECT nuclei FROM masks").fetchone()[0] == 2


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _zip(tree: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in tree.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_zip_upload_of_class_folders_imports_cells(db):
    upload = _zip({"EN/a.png": image_bytes(1), "GN/b.png": image_bytes(2)})
    files = importer.files_from_uploads([("cells.zip", upload)], max_upload_mb=10)
    assert importer.run_import(db, "cells", "zipped", files).added == 2


def test_a_zip_with_parent_folder_names_is_refused(db):
    with pytest.raises(UnsafeArchiveError):
        importer.files_from_uploads([("evil.zip", _zip({"../escape.png": image_bytes(1)}))], max_upload_mb=10)


def test_an_upload_over_the_limit_is_refused():
    with pytest.raises(UploadTooLargeError, match="big.png"):
        importer.files_from_uploads([("big.png", b"x" * (2 * 1024 * 1024))], max_upload_mb=1)


def test_odd_unicode_file_names_import(db):
    report = importer.import_patches(db, "S1", _files({"Färbung – 骨髄 🔬.png": image_bytes(4)}))
    assert report.ok and report.added == 1


@pytest.mark.slow
@pytest.mark.realdata
def test_pbc_imports_3200_cells_and_again_still_3200(db):
    folder = requires_shared("pbc")
    first = importer.import_cells(db, "pbc", importer.files_in_folder(folder), scheme_name="pbc")
    second = importer.import_cells(db, "pbc", importer.files_in_folder(folder), scheme_name="pbc")
    assert first.ok and first.added == 3200 and second.added == 0
    assert store_counts(db)["cells"] == 3200


@pytest.mark.realdata
def test_bccd_fields_import_with_their_masks(db):
    folder = requires_shared("bccd_nuclei")
    report = importer.import_masks(db, "bccd", importer.files_in_folder(folder))
    assert report.ok and report.added == 294 and store_counts(db)["masks"] == 294
