"""Annotation: canvas strokes become masks of the field's exact size."""

import numpy as np
import pytest
from conftest import image_bytes, open_page

from mdsdys.accounts import auth
from mdsdys.annotate import canvas, masks, scale, walk
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
from mdsdys.store.slides import find_slide, update_slide


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
    strokes[:, :5] = canvas.ERASE_RGBA
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


def test_the_later_of_two_overlapping_strokes_wins_and_the_eraser_is_not_green():
    """Brush over eraser adds, eraser over brush erases; composites as the canvas (source-over) makes them."""
    def over(top, bottom):  # straight-alpha source-over of two RGBA colours, 0-255
        ta, ba = top[3] / 255, bottom[3] / 255
        out = ta + ba * (1 - ta)
        rgb = [(t * ta + b * ba * (1 - ta)) / out for t, b in zip(top[:3], bottom[:3])]
        return (*[round(c) for c in rgb], round(out * 255))
    strokes = np.zeros((1, 2, 4), np.uint8)
    strokes[0, 0] = over(canvas.ERASE_RGBA, canvas.NUCLEUS_RGBA)
    strokes[0, 1] = over(canvas.NUCLEUS_RGBA, canvas.ERASE_RGBA)
    add, erase = canvas.strokes_to_masks(strokes, canvas.View(0, 0, 2, 1))
    assert erase.tolist() == [[True, False]] and add.tolist() == [[False, True]]
    r, g, b, _ = canvas.ERASE_RGBA
    assert not (g > 200 and r < 100 and b < 100)  # issue 14: it painted bright green
    assert canvas.css_rgba(canvas.ERASE_RGBA) == "rgba(255,255,255,0.59)"


def test_next_then_previous_returns_to_the_field_even_when_saving_reorders_the_queue():
    kept = walk.walk_order([], [1, 2, 3])
    assert walk.step(kept, 1, 1) == 2
    reordered = walk.walk_order(kept, [2, 3, 1])  # field 1 saved a mask: the queue moves it to the back
    assert reordered == [1, 2, 3]
    assert walk.step(reordered, walk.step(reordered, 1, 1), -1) == 1
    assert walk.step(reordered, 1, -1) == 3 and walk.step(reordered, 99, 1) == 1
    assert walk.walk_order([3, 9, 1], [1, 2, 3]) == [3, 1, 2]  # a deleted field drops out, a new one joins
    assert walk.slide_fields([3, 1, 2], {1: "A", 2: "B", 3: "A"}, "A") == [3, 1]


def _two_slides(db):
    for slide, n in (("S1", 3), ("S2", 2)):
        importer.import_patches(db, slide, [importer.SourceFile(f"{slide}-{i}.png", (lambda i=i: image_bytes(i)))
                                            for i in range(n)])
    ids = {row["slide"]: patch_slide(db, row["id"]) for row in annotation_queue(db)}
    store_estimated_diameter(db, ids["S1"], 21.5)
    store_estimated_diameter(db, ids["S2"], 33.0)
    return auth.create_user(db, "ann", "password-a", "reader")


def _shown(at) -> str:
    return at.selectbox(key="annotate_field").format_func(at.selectbox(key="annotate_field").value).split(" ·")[0]


def test_on_the_page_next_then_previous_comes_back_after_a_save_and_the_tool_resets_to_brush(db):
    ann = _two_slides(db)
    at = open_page("pages/2_Annotate.py", ann.id)
    assert not at.exception, at.exception
    first = _shown(at)
    field_id = at.selectbox(key="annotate_field").value
    masks.save_annotation(db, ann, field_id, np.full((40, 48), 255, np.uint8))  # as Save does
    at.radio(key="annotate_tool").set_value("Eraser").run()
    at.button(key="annotate_next").click().run()
    assert _shown(at) != first and at.radio(key="annotate_tool").value == "Brush"
    at.button(key="annotate_prev").click().run()
    assert not at.exception and _shown(at) == first


def test_the_slide_picker_shows_each_slides_fields_and_its_own_diameter(db):
    ann = _two_slides(db)
    at = open_page("pages/2_Annotate.py", ann.id)
    assert at.selectbox(key="annotate_slide").options == ["S1", "S2"]
    diameter = lambda: next(n for n in at.number_input if n.key.startswith("annotate_diameter_")).value  # noqa: E731
    assert diameter() == 21.5 and _shown(at).startswith("S1-")
    at.selectbox(key="annotate_slide").set_value("S2").run()
    assert not at.exception and diameter() == 33.0
    assert len(at.selectbox(key="annotate_field").options) == 2 and _shown(at).startswith("S2-")


def test_the_um_per_pixel_box_shows_each_slides_own_value(db):
    """Like the diameter: a value typed or shown for one slide never carries over to the next."""
    ann = _two_slides(db)
    update_slide(db, find_slide(db, "S1").id, um_per_px=0.2)
    at = open_page("pages/2_Annotate.py", ann.id)
    um = lambda: next(n for n in at.number_input if n.key.startswith("annotate_um_")).value  # noqa: E731
    assert um() == pytest.approx(0.2)
    at.selectbox(key="annotate_slide").set_value("S2").run()
    assert not at.exception and um() == pytest.approx(0.1)  # S2 has no scale yet: the box's default
