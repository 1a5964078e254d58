"""Issue 18 in Chromium: open a generated whole-slide scan on the Import page, see its overview with the chosen
fields, drop one by clicking it, import the rest, and find the detected cells in Review."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from mdsdys.demo import wsi_synth
from mdsdys.store import connect

from . import steps
from .actions import assert_no_exception, open_sidebar_page, save_screenshot, wait_for_app
from .server import build_demo_home, start_server, stop_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright package: pip install -e '.[dev]'")
pytestmark = [pytest.mark.browser, pytest.mark.slow]

LAYOUT = wsi_synth.SmearLayout(width=3072, height=3072, um_per_px=0.5, seed=5)
SLIDE = "WSI-E2E"
DETECTION_TIMEOUT_S = 300  # the worker starts, imports torch and segments ~10 fields on a shared 2-core box


def _seed_segmenter(home: Path) -> None:
    """A tiny segmenter trained on generated smear fields, active in the store (the demo has none)."""
    from mdsdys.registry.versions import register_model
    from mdsdys.segment.train import MaskSample, SegTrainConfig, train_segmenter
    from mdsdys.segment.unet import UNetConfig
    other = wsi_synth.SmearLayout(width=6000, height=6000, um_per_px=0.5, seed=11)
    rng = np.random.default_rng(0)
    samples = []
    for k in range(10):
        x, y = int(rng.uniform(0.35, 0.65) * other.width), int(rng.uniform(0.25, 0.7) * other.height)
        image, mask = wsi_synth.render_region(other, x, y, 192, 192, with_mask=True)
        samples.append(MaskSample(image, mask, f"SYN-{k % 2}"))
    config = SegTrainConfig(epochs=4, steps_per_epoch=10, batch_size=6, crop=64, unet=UNetConfig(depth=3, width=8),
                            max_seconds=None)
    with connect(home / "labels.db") as db:
        register_model(db, home / "models", train_segmenter(samples, config).checkpoint)


@pytest.fixture(scope="module")
def wsi_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = build_demo_home(tmp_path_factory.mktemp("wsi-home"))
    _seed_segmenter(home)
    wsi_synth.write_slide(home / "scan.tif", LAYOUT, tile=256)
    return home


@pytest.fixture(scope="module")
def wsi_server(wsi_home: Path) -> Iterator[str]:
    server = start_server(wsi_home)
    try:
        yield server.base_url
    finally:
        stop_server(server)


def _chosen_count(page: Page) -> int:
    text = page.get_by_text(re.compile(r"\d+ fields chosen")).first.inner_text()
    return int(re.search(r"(\d+) fields chosen", text).group(1))


def _click_first_marker(page: Page) -> None:
    """Click the first marker of the overview (a chosen field: they are drawn first)."""
    point = page.locator(".js-plotly-plot .scatterlayer .trace path.point").first
    point.wait_for(state="attached")
    point.scroll_into_view_if_needed()  # a mouse click off screen reaches nothing
    box = point.bounding_box()
    assert box is not None, "the overview's field markers have no size"
    centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.move(*centre)  # plotly picks the point under the cursor on hover
    page.wait_for_timeout(300)
    page.mouse.click(*centre)
    wait_for_app(page)


def _cells_on_slide(home: Path) -> int:
    with connect(home / "labels.db") as db:
        row = db.execute("SELECT COUNT(*) FROM cells c JOIN slides s ON s.id = c.slide_id WHERE s.case_id = ?",
                         [SLIDE]).fetchone()
    return row[0]


def test_a_scan_is_opened_fields_toggled_imported_and_its_cells_reach_review(
        browser: Browser, wsi_server: str, wsi_home: Path) -> None:
    context, page = steps.new_page(browser)
    try:
        steps.login_as(page, wsi_server, "adjudicator")
        open_sidebar_page(page, "Import")
        page.get_by_label(re.compile(r"the scan's path on the server")).fill(str(wsi_home / "scan.tif"))
        page.get_by_role("button", name="Open scan").click()
        wait_for_app(page)
        page.get_by_text(re.compile(r"\d+ fields chosen")).wait_for()
        before = _chosen_count(page)
        assert before >= 5, f"only {before} fields chosen on a 1.5 mm generated smear"
        save_screenshot(page, "issue18-overview")
        _click_first_marker(page)  # drops that field
        page.get_by_text(f"{before - 1} fields chosen").wait_for()
        page.get_by_label("New slide name for this scan").fill(SLIDE)
        page.get_by_role("button", name=f"Import {before - 1} fields").click()
        wait_for_app(page)
        page.get_by_text(re.compile(r"fields added.*detection queued as job \d+")).wait_for()
        assert_no_exception(page, "the Import page")
        deadline = time.monotonic() + DETECTION_TIMEOUT_S
        while _cells_on_slide(wsi_home) == 0 and time.monotonic() < deadline:
            time.sleep(2)
        assert _cells_on_slide(wsi_home) > 0, "the queued detection stored no cells"
        open_sidebar_page(page, "Review")
        page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").first.click()
        page.get_by_role("option", name=SLIDE).click()
        wait_for_app(page)
        page.get_by_text(steps.CELL_CAPTION).wait_for()
        page.get_by_text("Where on the slide").wait_for()
        page.get_by_text(re.compile(r"Nucleus \d+\.\d µm · cell \d+\.\d µm")).wait_for()
        save_screenshot(page, "issue18-cell-in-review")
        assert_no_exception(page, "the Review page")
    finally:
        context.close()
    with connect(wsi_home / "labels.db") as db:
        fields = db.execute("SELECT COUNT(*) FROM field_positions f JOIN patches p ON p.id = f.patch_id "
                            "JOIN slides s ON s.id = p.slide_id WHERE s.case_id = ?", [SLIDE]).fetchone()[0]
    assert fields == before - 1
