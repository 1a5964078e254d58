"""The demo study: synthetic slides, accounts, masks and cells, built once."""

from mdsdys.accounts import auth
from mdsdys.demo.study import DEMO_ACCOUNTS, build_demo
from mdsdys.store.cells import list_cells
from mdsdys.store.patches import list_patches
from mdsdys.store.slides import list_slides
from mdsdys.store.stats import store_counts


def test_demo_builds_three_labelled_synthetic_slides_once(db):
    assert build_demo(db, seed=0, patches_per_slide=2) is True
    before = store_counts(db)
    assert build_demo(db, seed=0, patches_per_slide=2) is False
    assert store_counts(db) == before
    slides = list_slides(db)
    assert [s.case_id for s in slides] == ["SYN-001", "SYN-002", "SYN-003", "SYN-TRAIN"]
    assert all("synthetic" in s.diagnosis_group for s in slides)
    assert before["masks"] == 3 and before["cells"] > 8 * 24
    assert before["reads"] == 8 * 24  # the training cells' known classes, as imported reads


def test_without_cells_the_fields_wait_for_the_segmenter(db):
    build_demo(db, seed=0, patches_per_slide=1, with_cells=False, training_cells_per_class=3)
    field_slides = [s for s in list_slides(db) if s.case_id != "SYN-TRAIN"]
    assert all(not list_cells(db, s.id) for s in field_slides)


def test_demo_accounts_log_in_with_the_published_passwords(db):
    build_demo(db, seed=0, patches_per_slide=1)
    roles = {auth.authenticate(db, name, password).role for name, password, _ in DEMO_ACCOUNTS}
    assert roles == {"admin", "reader", "adjudicator"}


def test_demo_cells_sit_inside_their_fields(db):
    build_demo(db, seed=0, patches_per_slide=1)
    slide = list_slides(db)[0]
    field = list_patches(db, slide.id)[0]
    boxes = db.execute("SELECT x, y, w, h FROM cells WHERE patch_id = ?", [field["id"]]).fetchall()
    assert boxes and all(x >= 0 and y >= 0 and x + w <= field["width"] and y + h <= field["height"]
                         for x, y, w, h in boxes)
