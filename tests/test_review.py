"""Blinded review: each reader sees and changes only their own reads."""

import inspect

import numpy as np
import pytest
from conftest import open_page

from mdsdys.accounts import auth
from mdsdys.errors import MdsdysError, PermissionDeniedError, SchemeError
from mdsdys.imaging.decode import encode_png, sha256_hex
from mdsdys.review import reads as review
from mdsdys.review.gold import cell_label
from mdsdys.store import review as review_queries
from mdsdys.store.cells import save_proposals
from mdsdys.store.models import insert_model
from mdsdys.store.patches import StoredImage, add_cell, add_patch
from mdsdys.store.reads import read_history, reader_progress
from mdsdys.store.slides import ensure_default_scheme, ensure_slide


@pytest.fixture
def study(db):
    """One slide with six cells on one field, two readers and a proposal on each cell."""
    ensure_default_scheme(db)
    slide, _ = ensure_slide(db, "S1", "mds8")
    pixels = np.random.default_rng(0).integers(0, 255, (120, 180, 3), dtype=np.uint8)
    data = encode_png(pixels)
    patch_id, _ = add_patch(db, slide.id, StoredImage(sha256_hex(data), 180, 120, "image/png", data), "f.png")
    cells = [add_cell(db, slide.id, patch_id, (i * 30, 10, 28, 28), "detected")[0] for i in range(6)]
    model_id = insert_model(db, "classifier", "v1", None, "resnet18", "/m.pt", {}, {}, None)
    margins = [0.9, 0.1, 0.5, 0.05, 0.7, 0.3]
    save_proposals(db, model_id, {c: {"EN": (1 + m) / 2, "GN": (1 - m) / 2} for c, m in zip(cells, margins)})
    ann = auth.create_user(db, "ann", "password-a", "reader")
    bob = auth.create_user(db, "bob", "password-b", "reader")
    return slide, cells, ann, bob


def test_uncertain_queue_starts_with_the_smallest_margin(db, study):
    slide, cells, ann, _ = study
    assert review.next_cell(db, ann, slide.id, "uncertain") == cells[3]
    assert review.next_cell(db, ann, slide.id, "uncertain", skipped=[cells[3]]) == cells[1]
    assert review.next_cell(db, ann, slide.id, "slide") == cells[0]


def test_a_read_cell_leaves_only_that_readers_queue(db, study):
    slide, cells, ann, bob = study
    review.record_read(db, ann, cells[3], "EN")
    assert review.next_cell(db, ann, slide.id, "uncertain") == cells[1]
    assert review.next_cell(db, bob, slide.id, "uncertain") == cells[3]


def test_second_reader_cannot_see_first_readers_label(db, study):
    """Every store/library function the Review page calls, run as bob, never returns ann's read."""
    slide, cells, ann, bob = study
    for cell in cells:
        review.record_read(db, ann, cell, "ED", ["nuclear budding"])
    view = review.load_cell_view(db, bob, cells[0])
    assert view.my_read is None
    assert all(row["my_read"] is None for row in review_queries.gallery_rows(db, bob.id, slide.id))
    assert review.next_cell(db, bob, slide.id, "slide") == cells[0]
    assert reader_progress(db, bob.id, slide.id) == {"cells": 6, "reviewed": 0, "remaining": 6}
    assert read_history(db, bob.id, cells[0]) == []
    with pytest.raises(MdsdysError, match="no read of this cell to undo"):
        review.undo_read(db, bob, cells[0])


def test_review_functions_all_take_the_viewer():
    """Blinding is enforced by the signature: no review query can be called without a viewer."""
    for function in (review.load_cell_view, review.record_read, review.undo_read, review.next_cell,
                     review.accept_proposal, review.load_crops):
        assert list(inspect.signature(function).parameters)[:2] == ["db", "viewer"]
    for function in (review_queries.next_unread_cell, review_queries.gallery_rows):
        assert "reader_id" in inspect.signature(function).parameters


def test_changing_a_read_keeps_the_earlier_one_and_undo_restores_it(db, study):
    _, cells, ann, _ = study
    review.record_read(db, ann, cells[0], "EN", seconds=1.5)
    review.record_read(db, ann, cells[0], "ED", ["megaloblastic change"], seconds=3.0, proposal_hidden=True)
    assert review.undo_read(db, ann, cells[0]).code == "EN"
    history = read_history(db, ann.id, cells[0])
    assert [r.code for r in history] == ["EN", "ED", "EN"] and history[1].proposal_hidden


def test_undo_of_a_first_read_makes_the_cell_unread_again(db, study):
    slide, cells, ann, _ = study
    review.record_read(db, ann, cells[3], "EN")
    assert review.undo_read(db, ann, cells[3]) is None
    assert review.next_cell(db, ann, slide.id, "uncertain") == cells[3]


def test_accepting_the_proposal_records_its_top_class(db, study):
    _, cells, ann, _ = study
    assert review.accept_proposal(db, ann, cells[0], seconds=0.8).code == "EN"


def test_tags_must_belong_to_the_chosen_class(db, study):
    _, cells, ann, _ = study
    with pytest.raises(MdsdysError, match="do not apply"):
        review.record_read(db, ann, cells[0], "GN", ["nuclear budding"])
    with pytest.raises(SchemeError):
        review.record_read(db, ann, cells[0], "XX")


def test_review_needs_a_logged_in_user_and_admins_may_read(db, study):
    _, cells, _, _ = study
    with pytest.raises(PermissionDeniedError):
        review.record_read(db, None, cells[0], "EN")
    boss = auth.create_user(db, "boss", "password-x", "admin")
    assert review.record_read(db, boss, cells[0], "EN").reader_id == boss.id


def test_cursor_goes_back_and_forward_through_shown_cells():
    cursor = review.ReviewCursor([])
    for cell in (5, 7, 9):
        cursor.show(cell)
    cursor.back()
    assert cursor.current == 7 and cursor.forward() and cursor.current == 9
    assert not cursor.forward()
    cursor.skip()
    assert cursor.skipped == [9]


def test_keyboard_review_through_apptest(db, study, home):
    """Pressing the class buttons (what their shortcuts press) records reads and advances the queue."""
    slide, cells, ann, _ = study
    at = open_page("pages/3_Review.py", ann.id)
    assert not at.exception
    seen = []
    for code in ("EN", "GN", "BL"):
        seen.append(int(next(c.value for c in at.caption if c.value.startswith("Cell ")).split()[1]))
        at.button(key=f"review_class_{code}").click().run()
        assert not at.exception and not at.error
    assert seen == [cell_label(db, c) for c in (cells[3], cells[1], cells[5])]  # labels, not ids (issue 17)
    at.button(key="review_undo").click().run()
    codes = {r["cell_id"]: r["my_read"] for r in review_queries.gallery_rows(db, ann.id, slide.id)}
    assert codes[cells[3]] == "EN" and codes[cells[1]] == "GN" and codes[cells[5]] is None


def test_a_dashboard_link_opens_that_cell_on_the_review_page(db, study, home):
    slide, cells, ann, _ = study
    at = open_page("pages/3_Review.py", ann.id, query={"cell": str(cells[4])})
    assert not at.exception
    assert any(c.value.startswith(f"Cell {cell_label(db, cells[4])} ") for c in at.caption)


def _shown_cell(at) -> int:
    """The label (not the id) of the cell on screen."""
    return int(next(c.value for c in at.caption if c.value.startswith("Cell ")).split()[1])


def test_review_confirms_each_save_and_next_moves_on_at_the_head_of_the_queue(db, study, home):
    """Issue 14's friction: → at the head did nothing, nothing confirmed a save, buttons showed only codes."""
    slide, cells, ann, _ = study
    at = open_page("pages/3_Review.py", ann.id)
    assert at.button(key="review_class_EN").label.startswith("EN · ")  # code and name on each button
    first = _shown_cell(at)
    at.button(key="review_next").click().run()
    assert not at.exception and _shown_cell(at) != first
    at.button(key="review_prev").click().run()
    assert _shown_cell(at) == first  # and back again
    at.button(key="review_class_GN").click().run()
    assert any("read as GN" in s.value for s in at.success)


def test_a_feature_tag_of_another_lineage_is_refused_not_dropped(db, study, home):
    slide, cells, ann, _ = study
    at = open_page("pages/3_Review.py", ann.id)
    first = next(c for c in cells if cell_label(db, c) == _shown_cell(at))  # the widgets are keyed by cell id
    at.toggle(key=f"review_all_tags_{first}").set_value(True).run()
    granulocytic = next(f for f in at.multiselect(key=f"review_tags_{first}").options if "granul" in f.lower())
    at.multiselect(key=f"review_tags_{first}").select(granulocytic).run()
    at.button(key="review_class_EN").click().run()
    assert any("Not saved" in e.value for e in at.error)
    assert all(r["my_read"] is None for r in review_queries.gallery_rows(db, ann.id, slide.id))
