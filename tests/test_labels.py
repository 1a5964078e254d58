"""Final labels: consensus, then agreed reads, then a single read, then the model."""

import pytest

from mdsdys.labels import FinalLabel, resolve_final_label
from mdsdys.store.cells import (
    DetectedCell,
    cell_thumbnails,
    replace_detected_cells,
    save_proposals,
)
from mdsdys.store.labels import final_labels
from mdsdys.store.patches import StoredImage, add_cell, add_patch
from mdsdys.store.reads import put_read
from mdsdys.store.slides import ensure_default_scheme, ensure_slide
from mdsdys.store.users import insert_user


@pytest.mark.parametrize("consensus, reads, proposal, expected", [
    ("ED", ["EN", "GN"], "EN", FinalLabel("ED", "consensus")),
    (None, ["EN", "EN"], "GN", FinalLabel("EN", "agreed")),
    (None, ["EN"], "GN", FinalLabel("EN", "single")),
    (None, ["EN", "ED"], "GN", FinalLabel("GN", "model")),
    (None, [], "BL", FinalLabel("BL", "model")),
    (None, ["EN", "ED"], None, None),
    (None, [], None, None),
])
def test_final_label_precedence(consensus, reads, proposal, expected):
    assert resolve_final_label(consensus, reads, proposal) == expected


@pytest.fixture
def slide_with_cells(db):
    ensure_default_scheme(db)
    slide, _ = ensure_slide(db, "S1", "mds8")
    patch_id, _ = add_patch(db, slide.id, StoredImage("sha", 100, 100, "image/png", b"x"), "f.png")
    cells = [add_cell(db, slide.id, patch_id, (i * 10, 0, 10, 10), "detected")[0] for i in range(4)]
    return slide, patch_id, cells


def test_training_labels_never_come_from_the_model(db, slide_with_cells):
    slide, _, cells = slide_with_cells
    ann, bob = insert_user(db, "ann", "reader", "h"), insert_user(db, "bob", "reader", "h")
    put_read(db, cells[0], ann.id, "EN")
    put_read(db, cells[0], bob.id, "EN")
    put_read(db, cells[1], ann.id, "GN")
    save_proposals(db, _model(db), {cells[2]: {"EN": 0.9, "GN": 0.1}})
    human = {c.cell_id: c.label for c in final_labels(db, "mds8", human_only=True)}
    every = {c.cell_id: c.label.source for c in final_labels(db, "mds8")}
    assert human == {cells[0]: FinalLabel("EN", "agreed"), cells[1]: FinalLabel("GN", "single")}
    assert every[cells[2]] == "model" and cells[3] not in every


def _model(db) -> int:
    from mdsdys.store.models import insert_model
    return insert_model(db, "classifier", "v1", None, "resnet18", "/x.pt", {}, {}, None)


def test_redetection_replaces_unread_cells_and_keeps_read_ones(db, slide_with_cells):
    slide, patch_id, cells = slide_with_cells
    ann = insert_user(db, "ann", "reader", "h")
    put_read(db, cells[0], ann.id, "EN")
    new = [DetectedCell((0, 0, 10, 10), b"png"), DetectedCell((50, 50, 12, 12), b"png")]
    added, removed = replace_detected_cells(db, patch_id, new, None)
    remaining = [r[0] for r in db.execute("SELECT id FROM cells ORDER BY id").fetchall()]
    assert (added, removed) == (1, 3)
    assert cells[0] in remaining and len(remaining) == 2
    assert replace_detected_cells(db, patch_id, new, None) == (0, 0)  # idempotent


def test_detected_cells_keep_their_thumbnails_and_replaced_ones_lose_them(db, slide_with_cells):
    _, patch_id, _ = slide_with_cells
    first = [DetectedCell((50, 50, 10, 10), b"png", b"thumb-a"), DetectedCell((70, 50, 10, 10), b"png", b"thumb-b")]
    replace_detected_cells(db, patch_id, first, None)  # the fixture's four unread cells go
    ids = [r[0] for r in db.execute("SELECT id FROM cells ORDER BY x").fetchall()]
    assert cell_thumbnails(db, ids) == dict(zip(ids, [b"thumb-a", b"thumb-b"]))
    replace_detected_cells(db, patch_id, first[:1], None)
    assert cell_thumbnails(db, ids) == {ids[0]: b"thumb-a"}
    assert db.execute("SELECT COUNT(*) FROM cell_thumbnails").fetchone()[0] == 1
