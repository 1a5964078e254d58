"""Per-issue browser checks on the shared demo server: draw a mask (issue 3), review by keys (issue 4),
settle a disagreement by keys (issue 5), retrain from the Train page (issue 6)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mdsdys.store import connect
from mdsdys.store.reads import put_read

from . import steps
from .actions import assert_no_exception, save_screenshot
from .store_checks import (
    consensus_cells,
    current_reads,
    first_field,
    mask_sizes,
    user_id,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright package: pip install -e '.[dev]'")
pytestmark = pytest.mark.browser


def test_stroke_drawn_on_the_canvas_is_saved_as_a_mask_at_the_fields_size(
        browser: Browser, app_server: str, demo_home: Path) -> None:
    field = first_field(demo_home)
    context, page = steps.new_page(browser)
    try:
        steps.login_as(page, app_server, "adjudicator")
        steps.draw_and_save_mask(page)
        save_screenshot(page, "issue3-mask-saved")
        assert_no_exception(page, "the Annotate page")
    finally:
        context.close()
    sizes = mask_sizes(demo_home, field["id"], "adjudicator")
    assert sizes, "no mask by adjudicator in the store after Save"
    width, height, nucleus = sizes[0]
    assert (width, height) == (field["width"], field["height"])
    assert nucleus > 0, "the saved mask is empty although a stroke was drawn"


def test_reader_reviews_five_cells_with_keys_alone(browser: Browser, app_server: str, demo_home: Path) -> None:
    before = current_reads(demo_home, "reader2")
    context, page = steps.new_page(browser)
    try:
        steps.login_as(page, app_server, "reader2")
        steps.open_review(page)
        presses = steps.review_by_keys(page, "12345")
        save_screenshot(page, "issue4-five-cells-by-keys")
        assert_no_exception(page, "the Review page")
    finally:
        context.close()
    after = current_reads(demo_home, "reader2")
    new = {cell: code for cell, code in after.items() if before.get(cell) != code}
    assert new == {p.cell_id: p.code for p in presses}
    assert len(new) == 5


def test_adjudicator_settles_a_disagreement_from_the_keyboard(
        browser: Browser, app_server: str, demo_home: Path) -> None:
    with connect(demo_home / "labels.db") as db:  # a disagreement on the last cell of the study
        cell_id = db.execute("SELECT MAX(id) FROM cells").fetchone()[0]
        put_read(db, cell_id, user_id(demo_home, "reader1"), "EN")
        put_read(db, cell_id, user_id(demo_home, "reader2"), "GN")
    before = consensus_cells(demo_home)
    context, page = steps.new_page(browser)
    try:
        steps.login_as(page, app_server, "adjudicator")
        settled = steps.settle_by_keys(page, "3")
        save_screenshot(page, "issue5-settled-by-key")
        assert_no_exception(page, "the Consensus page")
    finally:
        context.close()
    after = consensus_cells(demo_home)
    assert len(after) == len(before) + 1
    assert after[settled[0]] == "GN"


@pytest.mark.slow
def test_retrain_with_tiny_settings_shows_the_new_version(browser: Browser, app_server: str) -> None:
    context, page = steps.new_page(browser)
    try:
        steps.login_as(page, app_server, "adjudicator")
        text = steps.retrain_classifier(page, epochs=1)
        save_screenshot(page, "issue6-new-version")
        assert_no_exception(page, "the Train page")
    finally:
        context.close()
    assert text.startswith("New version ")
