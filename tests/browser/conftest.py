"""Fixtures for tests that drive the real app in headless Chromium.

One demo study and one Streamlit server serve the whole session; each test gets a fresh browser
context, so a fresh Streamlit session that starts logged out. Tests that change the store should
use accounts or slides no other test looks at.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .actions import save_screenshot
from .server import build_demo_home, start_server, stop_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; we never run `playwright install`
VIEWPORT = {"width": 1400, "height": 900}
HERE = Path(__file__).resolve().parent


def _missing_reason() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "browser tests need the playwright package: pip install -e '.[dev]'"
    if not CHROMIUM.exists():
        return f"browser tests need Chromium at {CHROMIUM}: apt-get install chromium"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every test in this folder, with the reason, when Chromium or playwright is missing."""
    reason = _missing_reason()
    if reason is None:
        return
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the synthetic demo study (labels.db with slides SYN-001..003 and demo accounts)."""
    return build_demo_home(tmp_path_factory.mktemp("demo-home"))


@pytest.fixture(scope="session")
def app_server(demo_home: Path) -> Iterator[str]:
    """The base URL of `streamlit run app.py` in demo mode on `demo_home`; stopped after the session."""
    server = start_server(demo_home)  # raises with the server's log tail if it never becomes healthy
    try:
        yield server.base_url
    finally:
        stop_server(server)


_OPEN_BROWSERS: list[Browser] = []


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium driven by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        _OPEN_BROWSERS.append(chromium)
        yield chromium
        _OPEN_BROWSERS.remove(chromium)
        chromium.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """When a browser test fails, keep a screenshot of every open page (test-output/browser/failed-*)."""
    try:
        return (yield)
    except BaseException:
        pages = [page for chromium in _OPEN_BROWSERS for context in chromium.contexts for page in context.pages]
        for number, page in enumerate(pages):
            try:
                save_screenshot(page, f"failed-{item.name}-{number}")
            except Exception as error:  # noqa: BLE001 - the test's own failure is the one to report
                print(f"no screenshot of page {number}: {error}")
        raise


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh browser context (no cookies, so a new, logged-out Streamlit session)."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(15_000)
    try:
        yield context.new_page()
    finally:
        context.close()
