"""The Annotate page in Chromium (issue 14 friction): the pale eraser stroke still erases, a new field starts
with the brush, and Next then Previous comes back to the field just saved."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

from mdsdys.accounts import auth
from mdsdys.ingest import importer
from mdsdys.store import connect

from . import steps
from .actions import assert_no_exception, open_sidebar_page, save_screenshot, wait_for_app
from .server import start_server, stop_server

if TYPE_CHECKING:
    from playwright.sync_api import Page

expect = pytest.importorskip(
    "playwright.sync_api", reason="browser tests need the playwright package: pip install -e '.[dev]'").expect
pytestmark = pytest.mark.browser

USER, PASSWORD = "annie", "a-long-reader-password"


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(150, 230, (200, 300, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def annotate_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("annotate-home")
    with connect(home / "labels.db") as db:
        auth.create_user(db, USER, PASSWORD, "reader")
        importer.import_patches(db, "ANN-1", [importer.SourceFile(f"field-{i}.png", (lambda i=i: _png(i)))
                                              for i in range(3)])
    server = start_server(home, extra_env={"MDSDYS_DEMO": "0"})
    try:
        yield server.base_url
    finally:
        stop_server(server)


def _stroke(page: Page, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Drag across the canvas between two points given as fractions of its width and height."""
    canvas = page.locator("canvas.upper-canvas")
    canvas = (canvas if canvas.count() else page.locator("canvas").last).first
    canvas.wait_for(state="visible")
    box = canvas.bounding_box()
    assert box is not None, "the Annotate canvas has no size"
    at = lambda fx, fy: (box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)  # noqa: E731
    page.mouse.move(*at(*start))
    page.mouse.down()
    for step in range(1, 21):
        f = step / 20
        page.mouse.move(*at(start[0] + (end[0] - start[0]) * f, start[1] + (end[1] - start[1]) * f))
    page.mouse.up()
    wait_for_app(page)  # the canvas sends its strokes back, which reruns the page
    page.wait_for_timeout(800)
    wait_for_app(page)


def _save(page: Page) -> str:
    page.get_by_role("button", name=re.compile(r"^Save\b")).click()
    wait_for_app(page)
    saved = page.get_by_text(re.compile(r"^Saved: \d+ nuclei"))
    saved.wait_for()
    return saved.first.inner_text()


def _field(page: Page) -> str:
    return page.get_by_test_id("stSidebar").get_by_text(re.compile(r"^field-\d\.png · slide")).first.inner_text()


def test_the_pale_eraser_erases_a_new_field_starts_with_the_brush_and_previous_undoes_next(
        page: Page, annotate_server: str) -> None:
    steps.login_as(page, annotate_server, USER, PASSWORD)
    open_sidebar_page(page, "Annotate")
    first = _field(page)
    _stroke(page, (0.2, 0.5), (0.8, 0.5))
    assert _save(page).startswith("Saved: 1 nuclei")
    page.get_by_test_id("stSidebar").get_by_text("Eraser", exact=True).click()
    wait_for_app(page)
    _stroke(page, (0.5, 0.2), (0.5, 0.8))  # across the middle of the brush stroke: two pieces are left
    save_screenshot(page, "issue14-annotate-eraser")
    assert _save(page).startswith("Saved: 2 nuclei"), "the eraser stroke was not decoded as erasing"
    assert_no_exception(page, "the Annotate page")

    page.get_by_role("button", name="Next →").click()
    wait_for_app(page)
    assert _field(page) != first
    expect(page.get_by_test_id("stSidebar").get_by_role("radio", name="Brush")).to_be_checked()
    page.get_by_role("button", name="← Previous").click()
    wait_for_app(page)
    assert _field(page) == first, "Next then Previous landed on another field"
