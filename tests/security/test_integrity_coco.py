"""The COCO export loads and evaluates cleanly in pycocotools, and counts nuclei as evaluation does
(issue 15, item 23)."""

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mdsdys.accounts import auth
from mdsdys.imaging.decode import encode_png, sha256_hex
from mdsdys.report import export
from mdsdys.review import reads as review
from mdsdys.store.patches import StoredImage, add_cell, add_patch, save_mask
from mdsdys.store.slides import ensure_default_scheme, ensure_slide


def _coco(data: dict) -> COCO:
    coco = COCO()
    coco.dataset = json.loads(json.dumps(data))  # through JSON, as a file on disk would arrive
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _field(db, size=(64, 48)):
    ensure_default_scheme(db)
    slide, _ = ensure_slide(db, "S1", "mds8")
    data = encode_png(np.zeros((size[1], size[0], 3), np.uint8))
    patch_id, _ = add_patch(db, slide.id, StoredImage(sha256_hex(data), *size, "image/png", data), "f.png")
    return slide, patch_id


@pytest.fixture
def demo_export(db):
    """A field with three drawn nuclei and three read cells, two of them with their nucleus mask."""
    slide, patch_id = _field(db)
    mask = np.zeros((48, 64), np.uint8)
    boxes = [(4, 4, 12, 12), (30, 10, 14, 10), (54, 32, 14, 18)]  # the last runs off the field's corner
    for x, y, w, h in boxes:
        mask[y + 2:y + h - 2, x + 2:x + w - 2] = 255
    boss = auth.create_user(db, "boss", "a-long-password", "admin")
    save_mask(db, patch_id, boss.id, "drawn", encode_png(mask), 3)
    for i, (x, y, w, h) in enumerate(boxes):
        nucleus = encode_png(mask[y:y + h, x:x + w]) if i < 2 else None
        cell, _ = add_cell(db, slide.id, patch_id, (x, y, w, h), "detected", nucleus_png=nucleus)
        review.record_read(db, boss, cell, ("EN", "ED", "BL")[i])
    return export.coco_json(db, boss, slide.id)


def test_every_annotation_decodes_with_ann_to_mask(demo_export):
    coco = _coco(demo_export)
    cells = [a for a in coco.dataset["annotations"] if a["category_id"] != 1]
    assert cells and all("segmentation" in a for a in coco.dataset["annotations"])
    for annotation in coco.dataset["annotations"]:
        image = coco.imgs[annotation["image_id"]]
        mask = coco.annToMask(annotation)
        assert mask.shape == (image["height"], image["width"]) and mask.sum() == annotation["area"]


@pytest.mark.parametrize("kind", ["nuclei", "cells"])
def test_the_export_evaluates_against_itself_as_a_perfect_segm_score(demo_export, kind):
    gt = _coco(demo_export)
    keep = [a for a in demo_export["annotations"] if (a["category_id"] == 1) == (kind == "nuclei")]
    assert keep
    with contextlib.redirect_stdout(io.StringIO()):
        detections = gt.loadRes([a | {"score": 1.0} for a in keep])
        evaluation = COCOeval(gt, detections, "segm")
        evaluation.params.catIds = sorted({a["category_id"] for a in keep})
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)


def test_diagonally_touching_nuclei_are_one_instance_as_in_evaluation(db):
    slide, patch_id = _field(db, (20, 20))
    mask = np.zeros((20, 20), np.uint8)
    mask[2:6, 2:6] = 255
    mask[6:10, 6:10] = 255  # touches the first square at one corner only
    mask[14:18, 14:18] = 255
    boss = auth.create_user(db, "boss", "a-long-password", "admin")
    save_mask(db, patch_id, boss.id, "drawn", encode_png(mask), 2)
    nuclei = [a for a in export.coco_json(db, boss, slide.id)["annotations"] if a["category_id"] == 1]
    assert sorted(a["area"] for a in nuclei) == [16, 32]


def test_a_cell_without_a_nucleus_mask_gets_its_box_as_a_polygon(db):
    slide, patch_id = _field(db, (40, 30))
    cell, _ = add_cell(db, slide.id, patch_id, (30, 20, 20, 20), "manual")  # runs off the field's corner
    boss = auth.create_user(db, "boss", "a-long-password", "admin")
    review.record_read(db, boss, cell, "BL")
    data = export.coco_json(db, boss, slide.id)
    (annotation,) = [a for a in data["annotations"] if a["category_id"] != 1]
    assert annotation["segmentation"] == [[30, 20, 40, 20, 40, 30, 30, 30]] and annotation["area"] == 100
    assert _coco(data).annToMask(annotation).sum() == 100
