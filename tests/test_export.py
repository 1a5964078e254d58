"""Exports parse, COCO is valid, and each export is audited."""

import csv
import io
import json
import zipfile

import numpy as np
import pytest
from conftest import open_page

from mdsdys.accounts import auth
from mdsdys.demo.study import build_demo
from mdsdys.errors import PermissionDeniedError
from mdsdys.report import export
from mdsdys.review import consensus
from mdsdys.review import reads as review
from mdsdys.store.audit import list_audit
from mdsdys.store.cells import list_cells
from mdsdys.store.slides import list_slides


@pytest.fixture
def labelled(db):
    build_demo(db, seed=1, patches_per_slide=2)
    slide = list_slides(db)[0]
    cells = list_cells(db, slide.id)[:4]
    ann, bob = (auth.authenticate(db, n, p) for n, p in (("reader1", "demo-reader-1"), ("reader2", "demo-reader-2")))
    judge = auth.authenticate(db, "adjudicator", "demo-adjudicator")
    for cell, (a, b) in zip(cells, [("EN", "EN"), ("GN", "GD"), ("BL", "BL"), ("ED", None)]):
        review.record_read(db, ann, cell.id, a)
        if b:
            review.record_read(db, bob, cell.id, b)
    consensus.decide(db, judge, cells[1].id, "GD", ["hypogranulation"], "borderline_morphology")
    return slide, cells, judge


def _rle_decode(rle):
    h, w = rle["size"]
    flat = np.zeros(h * w, bool)
    position, value = 0, False
    for run in rle["counts"]:
        flat[position:position + run] = value
        position, value = position + run, not value
    assert position == h * w
    return flat.reshape((h, w), order="F")


def test_cells_csv_holds_every_read_the_consensus_and_final_class(db, labelled):
    slide, cells, judge = labelled
    rows = list(csv.DictReader(io.StringIO(export.cells_csv(db, judge, slide.id).decode())))
    by_id = {int(r["cell_id"]): r for r in rows}
    assert len(rows) == len(list_cells(db, slide.id))
    assert by_id[cells[1].id]["reads"] == "reader1=GN | reader2=GD"
    assert by_id[cells[1].id]["consensus"] == "GD" and by_id[cells[1].id]["final_source"] == "consensus"
    assert by_id[cells[0].id]["final_class"] == "EN" and by_id[cells[0].id]["final_source"] == "agreed"
    assert by_id[cells[3].id]["final_source"] == "single"


def test_coco_json_is_valid_and_masks_round_trip(db, labelled):
    slide, cells, judge = labelled
    coco = json.loads(json.dumps(export.coco_json(db, judge, slide.id)))
    images = {i["id"]: i for i in coco["images"]}
    categories = {c["id"] for c in coco["categories"]}
    ids = [a["id"] for a in coco["annotations"]]
    assert len(ids) == len(set(ids)) and images and categories >= {1}
    nuclei = [a for a in coco["annotations"] if a["category_id"] == 1]
    assert nuclei, "the demo's first field has a mask"
    for a in coco["annotations"]:
        image = images[a["image_id"]]
        x, y, w, h = a["bbox"]
        assert a["category_id"] in categories and 0 <= x and 0 <= y and x + w <= image["width"] and y + h <= image["height"]
        if "segmentation" in a:
            decoded = _rle_decode(a["segmentation"])
            assert decoded.shape == (image["height"], image["width"]) and decoded.sum() == a["area"]
    labelled_boxes = {a["cell_id"] for a in coco["annotations"] if "cell_id" in a}
    assert {c.id for c in cells} <= labelled_boxes


def test_rle_of_a_mask_starting_with_foreground():
    mask = np.array([[1, 0], [1, 1]], np.uint8)
    assert export.rle_encode(mask) == {"counts": [0, 2, 1, 1], "size": [2, 2]}
    assert (_rle_decode(export.rle_encode(mask)) == mask.astype(bool)).all()


def test_crops_zip_has_one_folder_per_class(db, labelled):
    slide, cells, judge = labelled
    archive = zipfile.ZipFile(io.BytesIO(export.crops_zip(db, judge, slide.id, "human")))
    folders = sorted({name.split("/")[0] for name in archive.namelist()})
    assert folders == ["BL", "ED", "EN", "GD"] and len(archive.namelist()) == 4


def test_slide_report_holds_the_numbers_and_provenance(db, labelled):
    slide, _, judge = labelled
    page = export.slide_report_html(db, judge, slide.id)
    assert f"Slide {slide.case_id}" in page and "WHO 10%" in page and "reader1" in page
    assert "indeterminate" in page and "plotly" in page.lower()


def test_every_export_is_audited_and_readers_cannot_export(db, labelled):
    slide, _, judge = labelled
    export.cells_csv(db, judge, slide.id)
    export.coco_json(db, judge, slide.id)
    export.crops_zip(db, judge, slide.id)
    export.slide_report_html(db, judge, slide.id)
    kinds = {row["entity"] for row in list_audit(db, action="export")}
    assert kinds == {"cells_csv", "coco_json", "crops_zip", "slide_report"}
    reader = auth.authenticate(db, "reader1", "demo-reader-1")
    with pytest.raises(PermissionDeniedError):
        export.cells_csv(db, reader, slide.id)


def test_dashboard_page_offers_each_export_as_one_download_button(db, labelled, home):
    _, _, judge = labelled
    at = open_page("pages/6_Dashboard.py", judge.id)
    assert not at.exception and not at.error
    buttons = at.get("download_button")
    assert len(buttons) == 4  # one click each: the file is built when it is clicked, not prepared first
    # Nothing was built (or audited) just by showing the page.
    assert not list_audit(db, action="export")
