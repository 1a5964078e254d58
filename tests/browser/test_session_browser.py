"""A login survives a reload and a new tab in real Chromium, and logging out ends it (issue 14 item 4)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from .actions import RUN_TIMEOUT_MS, login, open_app, save_screenshot, wait_for_app
from .steps import PASSWORDS, new_page

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.browser


def test_a_reload_and_a_new_tab_keep_the_login_and_logout_ends_it(browser: Browser, app_server: str) -> None:
    from playwright.sync_api import expect

    context, page = new_page(browser)
    try:
        login(page, app_server, "adjudicator", PASSWORDS["adjudicator"])
        cookie = next(c for c in context.cookies() if c["name"] == "mdsdys_session")
        assert cookie["sameSite"] == "Strict" and len(cookie["value"]) >= 40

        page.reload()
        wait_for_app(page)
        expect(page.get_by_text("Logged in as")).to_be_visible(timeout=RUN_TIMEOUT_MS)
        expect(page.get_by_role("button", name="Log in")).to_have_count(0)
        save_screenshot(page, "session-after-reload")

        tab = context.new_page()                       # a new tab, straight to a page
        open_app(tab, f"{app_server}/Dashboard")
        expect(tab.get_by_text("Logged in as")).to_be_visible(timeout=RUN_TIMEOUT_MS)

        tab.get_by_role("button", name="Log out").click()
        wait_for_app(tab)
        expect(tab.get_by_role("button", name="Log in")).to_be_visible(timeout=RUN_TIMEOUT_MS)
        page.reload()                                  # the other tab is logged out too
        wait_for_app(page)
        expect(page.get_by_role("button", name="Log in")).to_be_visible(timeout=RUN_TIMEOUT_MS)
        expect(page.get_by_text("Logged in as")).to_have_count(0)
    finally:
        context.close()
