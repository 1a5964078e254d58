"""Issue 13 in Chromium: a slide whose images differ from the model's training images carries the warning
on Review and the Dashboard; a slide like them does not. The store is built through the real pipeline:
a tiny classifier trained on generated cells, registered, and labels proposed for a plain and a
colour-cast slide."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from mdsdys.accounts import auth
from mdsdys.classify.proposals import propose_labels
from mdsdys.demo.study import DEMO_ACCOUNTS
from mdsdys.registry import versions
from mdsdys.report.shift import CALM, WARNING
from mdsdys.store import connect

from . import steps
from .actions import assert_no_exception, open_sidebar_page, save_screenshot, wait_for_app
from .server import start_server, stop_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright package: pip install -e '.[dev]'")
pytestmark = pytest.mark.browser

PLAIN, CAST = "PLAIN-1", "CAST-1"


@pytest.fixture(scope="module")
def ood_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Its own store and server: demo accounts, a model, and proposals for a plain and a cast slide."""
    from tests.test_ood_store import _import, trained_checkpoint  # the store test's generated cells and model

    home = tmp_path_factory.mktemp("ood-home")
    checkpoint = trained_checkpoint()
    with connect(home / "labels.db") as db:
        for name, password, role in DEMO_ACCOUNTS:
            auth.create_user(db, name, password, role)
        slides = {name: _import(db, name, cast=name == CAST) for name in (PLAIN, CAST)}
        versions.register_model(db, home / "models", checkpoint)
        for slide_id in slides.values():
            propose_labels(db, slide_id)
    server = start_server(home)
    try:
        yield server.base_url
    finally:
        stop_server(server)


def _choose(page: Page, where, name: str) -> None:
    where.get_by_test_id("stSelectbox").first.click()
    page.get_by_role("option", name=name, exact=True).click()
    wait_for_app(page)


def _says(page: Page, sentence: str) -> bool:
    page.get_by_text(re.compile("Model .*: " + re.escape(sentence))).first.wait_for(timeout=steps.STEP_TIMEOUT_MS)
    return True


def test_the_warning_shows_on_the_cast_slide_only(browser: Browser, ood_server: str) -> None:
    context, page = steps.new_page(browser)
    try:
        steps.login_as(page, ood_server, "reader1")
        open_sidebar_page(page, "Review")
        sidebar = page.get_by_test_id("stSidebar")
        for name, shown, absent in ((CAST, WARNING, CALM), (PLAIN, CALM, WARNING)):
            _choose(page, sidebar, name)
            page.get_by_text(steps.CELL_CAPTION).wait_for()
            assert _says(page, shown) and page.get_by_text(re.compile(re.escape(absent))).count() == 0, name
            save_screenshot(page, f"issue13-review-{name}")
        assert_no_exception(page, "the Review page")

        open_sidebar_page(page, "Dashboard")
        detail = page.get_by_test_id("stMain").get_by_test_id("stSelectbox").filter(has_text=re.compile("^Slide"))
        for name, shown, absent in ((CAST, WARNING, CALM), (PLAIN, CALM, WARNING)):
            detail.first.click()
            page.get_by_role("option", name=name, exact=True).click()
            wait_for_app(page)
            assert _says(page, shown) and page.get_by_text(re.compile(re.escape(absent))).count() == 0, name
            save_screenshot(page, f"issue13-dashboard-{name}")
        assert_no_exception(page, "the Dashboard page")
    finally:
        context.close()
