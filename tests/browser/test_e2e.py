"""One end-to-end scenario on its own real server and the real worker: annotate, two blind readers,
consensus from the keyboard, retraining from the Train page, and a downloaded slide report."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from . import steps
from .actions import assert_no_exception, save_screenshot
from .server import build_demo_home, start_server, stop_server
from .store_checks import consensus_cells, current_reads, first_field, mask_sizes

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright package: pip install -e '.[dev]'")
pytestmark = [pytest.mark.browser, pytest.mark.slow]

READER1_KEYS = "1234512345"
READER2_KEYS = "1734517845"  # differs from reader1 on the 2nd, 7th and 8th cell
SETTLE_KEYS = "7777777777"


@pytest.fixture(scope="module")
def e2e_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of its own, so the read and consensus counts below are exact."""
    return build_demo_home(tmp_path_factory.mktemp("e2e-home"))


@pytest.fixture(scope="module")
def e2e_server(e2e_home: Path) -> Iterator[str]:
    server = start_server(e2e_home)
    try:
        yield server.base_url
    finally:
        stop_server(server)


def _shot(page: Page, name: str) -> None:
    assert_no_exception(page, name)
    save_screenshot(page, f"e2e-{name}")


def test_annotate_review_blind_settle_retrain_and_export(
        browser: Browser, e2e_server: str, e2e_home: Path, tmp_path: Path) -> None:
    field = first_field(e2e_home)
    ctx1, reader1 = steps.new_page(browser)
    ctx2, reader2 = steps.new_page(browser)
    ctx3, adjudicator = steps.new_page(browser)
    try:
        # 1. reader1 draws a mask, then reviews 10 cells with keys alone
        steps.login_as(reader1, e2e_server, "reader1")
        steps.draw_and_save_mask(reader1)
        _shot(reader1, "1a-reader1-mask-saved")
        masks = mask_sizes(e2e_home, field["id"], "reader1")
        assert masks and masks[0][:2] == (field["width"], field["height"]) and masks[0][2] > 0
        steps.open_review(reader1)
        first = steps.review_by_keys(reader1, READER1_KEYS)
        _shot(reader1, "1b-reader1-reviewed-10")
        reads1 = current_reads(e2e_home, "reader1")
        assert reads1 == {p.cell_id: p.code for p in first} and len(reads1) == 10

        # 2. reader2, in a second context, reads the same cells blind to reader1
        def blind(page: Page, cell_id: int) -> None:
            steps.assert_no_own_read_shown(page, cell_id)
            assert "reader1" not in page.locator("section.stMain, [data-testid='stMain']").first.inner_text()

        steps.login_as(reader2, e2e_server, "reader2")
        steps.open_review(reader2)
        second = steps.review_by_keys(reader2, READER2_KEYS, before_press=blind)
        _shot(reader2, "2-reader2-reviewed-10-blind")
        assert [p.cell_id for p in second] == [p.cell_id for p in first], "the two readers saw different cells"
        reads2 = current_reads(e2e_home, "reader2")
        assert reads2 == {p.cell_id: p.code for p in second} and len(reads2) == 10
        disagreements = [cell for cell, code in reads1.items() if reads2[cell] != code]
        assert len(disagreements) == sum(a != b for a, b in zip(READER1_KEYS, READER2_KEYS, strict=True)) == 3

        # 3. the adjudicator settles every disagreement from the keyboard
        steps.login_as(adjudicator, e2e_server, "adjudicator")
        settled = steps.settle_by_keys(adjudicator, SETTLE_KEYS[:len(disagreements)])
        _shot(adjudicator, "3-adjudicator-settled")
        assert sorted(settled) == sorted(disagreements)
        assert consensus_cells(e2e_home) == {cell: "BL" for cell in disagreements}

        # 4. the adjudicator retrains the classifier with tiny settings and sees the new version
        version = steps.retrain_classifier(adjudicator, epochs=1)
        _shot(adjudicator, "4-new-version")
        assert version.startswith("New version ")

        # 5. the adjudicator downloads the printable slide report
        report = steps.download_slide_report(adjudicator, tmp_path / "report.html")
        _shot(adjudicator, "5-report-downloaded")
        text = report.read_text()
        assert "Slide" in text and "WHO" in text
    finally:
        for context in (ctx1, ctx2, ctx3):
            context.close()
