"""Annotation: canvas strokes become masks of the field's exact size."""

import numpy as np
import pytest
from conftest import image_bytes

from mdsdys.accounts import auth
from mdsdys.annotate import canvas, masks, scale
from mdsdys.config import load_settings
from mdsdys.errors import MaskError, MdsdysError, PermissionDeniedError
from mdsdys.imaging.decode import read_rgb
from mdsdys.ingest import importer
from mdsdys.registry import retrain
from mdsdys.segment import detect
from mdsdys.store.audit import list_audit
from mdsdys.store.models import insert_model
from mdsdys.store.patches import (
    annotation_queue,
    get_masks,
    patch_slide,
    record_uncertainty,
)
from mdsdys.store.scales import store_estimated_diameter


def _field(db, width=300, height=200):
    files = [importer.SourceFile("f.png", lambda: image_bytes(1, size=(width, height)))]
    importer.import_patches(db, "S1", files)
    return annotation_queue(db)[0]


def test_views_tile_the_field_exactly():
    views = canvas.plan_views(1300, 700, max_side=512)
    assert len(views) == 6
    covered = np.zeros((700, 1300), int)
    for v in views:
        assert v.w <= 512 and v.h <= 512
        covered[v.y:v.y + v.h, v.x:v.x + v.w] += 1
    assert (covered == 1).all()


def test_a_stroke_on_a_scaled_canvas_lands_at_the_right_field_pixels():
    view = canvas.View(100, 50, 200, 100)
    canvas_w, canvas_h = canvas.canvas_size(view, max_canvas=600)
    assert (canvas_w, canvas_h) == (600, 300)
    strokes = np.zeros((canvas_h, canvas_w, 4), np.uint8)
    strokes[30:60, 90:150] = (*canvas.NUCLEUS_RGBA[:3], 110)      # canvas px → field px / 3
    add, erase = canvas.strokes_to_masks(strokes, view)
    assert add.shape == (100, 200) and not erase.any()
    merged = canvas.merge_view(np.zeros((400, 500), np.uint8), view, add, erase)
    ys, xs = np.nonzero(merged)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (60, 69, 130, 149)


def test_the_eraser_removes_mask_pixels():
    view = canvas.View(0, 0, 10, 10)
    base = np.full((10, 10), 255, np.uint8)
    strokes = np.zeros((10, 10, 4), np.uint8)
    strokes[:, :5] = (*canvas.ERASE_RGB, 255)
    add, erase = canvas.strokes_to_masks(strokes, view)
    merged = canvas.merge_view(base, view, add, erase)
    assert (merged[:, :5] == 0).all() and (merged[:, 5:] == 255).all()


def test_a_drawn_mask_is_saved_at_the_fields_size_and_audited(db):
    field = _field(db)
    ann = auth.create_user(db, "ann", "password-a", "reader")
    view = canvas.plan_views(field["width"], field["height"])[0]
    canvas_w, canvas_h = canvas.canvas_size(view)
    strokes = np.zeros((canvas_h, canvas_w, 4), np.uint8)
    strokes[10:40, 10:40] = (255, 0, 255, 110)
    strokes[100:130, 200:240] = (255, 0, 255, 110)
    mask = canvas.merge_view(np.zeros((200, 300), np.uint8), view, *canvas.strokes_to_masks(strokes, view))
    assert masks.save_annotation(db, ann, field["id"], mask) == 2
    stored = read_rgb(get_masks(db, field["id"])[0]["png"])[..., 0]
    assert stored.shape == (200, 300) and (stored > 0).sum() == (mask > 0).sum()
    assert list_audit(db, action="mask_save")[0]["username"] == "ann"


def test_an_empty_mask_or_a_wrong_size_is_refused(db):
    field = _field(db)
    ann = auth.create_user(db, "ann", "password-a", "reader")
    with pytest.raises(MaskError, match="empty"):
        masks.save_annotation(db, ann, field["id"], np.zeros((200, 300), np.uint8))
    with pytest.raises(MaskError, match="field is 300x200"):
        masks.save_annotation(db, ann, field["id"], np.full((10, 10), 255, np.uint8))
    assert get_masks(db, field["id"]) == []


def test_fields_without_masks_come_first_in_the_queue(db):
    files = [importer.SourceFile(f"f{i}.png", (lambda i=i: image_bytes(i))) for i in range(3)]
    importer.import_patches(db, "S1", files)
    ann = auth.create_user(db, "ann", "password-a", "reader")
    first = annotation_queue(db)[0]
    masks.save_annotation(db, ann, first["id"], np.full((40, 48), 255, np.uint8))
    assert [f["masks"] for f in annotation_queue(db)] == [0, 0, 1]


def test_once_scored_the_fields_the_segmenter_is_least_sure_of_come_first(db):
    files = [importer.SourceFile(f"f{i}.png", (lambda i=i: image_bytes(i))) for i in range(4)]
    importer.import_patches(db, "S1", files)
    ids = [f["id"] for f in annotation_queue(db)]
    model = insert_model(db, "segmenter", "seg-1", None, "unet", "seg-1.pt", {}, {}, None)
    for patch_id, value in zip(ids, [0.05, 0.40, 0.20, 0.90]):
        record_uncertainty(db, patch_id, model, value)
    ann = auth.create_user(db, "ann", "password-a", "reader")
    masks.save_annotation(db, ann, ids[3], np.full((40, 48), 255, np.uint8))  # the least sure, but masked
    record_uncertainty(db, ids[0], model, 0.10)  # a newer score replaces the older one
    queue = annotation_queue(db)
    assert [f["id"] for f in queue] == [ids[1], ids[2], ids[0], ids[3]]
    assert [f["uncertainty"] for f in queue] == [0.40, 0.20, 0.10, 0.90]


def test_the_slide_scale_is_shown_with_its_source_and_a_person_can_correct_it(db, home):
    field = _field(db)
    slide_id = patch_slide(db, field["id"])
    assert scale.slide_scale_of(db, slide_id).source == "none"
    store_estimated_diameter(db, slide_id, 31.5)
    slide_scale = scale.slide_scale_of(db, slide_id)
    assert slide_scale.estimated and slide_scale.diameter_px == 31.5 and "estimated" in slide_scale.describe()
    ann = auth.create_user(db, "ann", "password-a", "reader")
    with pytest.raises(MdsdysError, match="out of range"):
        scale.set_slide_diameter(load_settings(), ann, slide_id, 1.0)
    with pytest.raises(PermissionDeniedError):
        scale.set_slide_diameter(load_settings(), None, slide_id, 24.0)
    assert scale.set_slide_diameter(load_settings(), ann, slide_id, 24.0) is None  # no segmenter: no re-detection
    slide_scale = scale.slide_scale_of(db, slide_id)
    assert (slide_scale.diameter_px, slide_scale.source) == (24.0, "person") and "set by a person" in slide_scale.describe()
    entry = list_audit(db, action="slide_scale")[0]
    assert entry["username"] == "ann" and '"estimate"' in entry["before"]


@pytest.mark.slow
def test_start_from_the_models_mask_saves_a_model_seeded_mask_at_field_size(db, home):
    from mdsdys.config import load_settings
    from mdsdys.demo.study import build_demo
    from mdsdys.segment import train
    build_demo(db, seed=0, patches_per_slide=4, training_cells_per_class=3)
    ann = auth.authenticate(db, "reader1", "demo-reader-1")
    with pytest.raises(MaskError, match="no segmenter yet"):
        detect.model_mask(db, annotation_queue(db)[0]["id"])
    config = train.SegTrainConfig(epochs=2, steps_per_epoch=2, batch_size=2, crop=64, max_seconds=None)
    retrain.train_segmenter_from_store(load_settings(), config)
    field = annotation_queue(db)[0]
    seeded = detect.model_mask(db, field["id"])
    assert seeded.shape == (field["height"], field["width"]) and seeded.dtype == np.uint8
    seeded[:8, :8] = 255  # a correction, so the mask is never empty
    masks.save_annotation(db, ann, field["id"], seeded, source="model_seeded")
    assert get_masks(db, field["id"])[0]["source"] == "model_seeded"
    # With a segmenter, a corrected scale re-detects the slide's unread cells in the background.
    job_id = scale.set_slide_diameter(load_settings(), ann, patch_slide(db, field["id"]), 22.0, start_worker=False)
    kind, params = db.execute("SELECT kind, params FROM jobs WHERE id = ?", [job_id]).fetchone()
    assert kind == "segment_slides" and '"slide_ids": [' in params


def test_the_one_mask_validator_refuses_an_empty_mask_and_a_size_mismatch():
    mask = np.zeros((40, 60), np.uint8)
    with pytest.raises(MaskError, match="empty"):
        masks.validate_mask(mask, 60, 40)
    with pytest.raises(MaskError, match="60x40 but the field is 40x60"):
        masks.validate_mask(mask, 40, 60)
    mask[5:10, 5:10], mask[20:30, 30:40] = 1, 1
    binary, nuclei = masks.validate_mask(mask, 60, 40)
    assert nuclei == 2 and set(np.unique(binary)) == {0, 255}
