"""Steps a browser test or bench script takes on the running app: wait, log in, open a page, screenshot."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .server import REPO_ROOT

if TYPE_CHECKING:  # playwright is optional (the dev extra); conftest skips when it is absent
    from playwright.sync_api import Page

SCREENSHOT_DIR = REPO_ROOT / "test-output" / "browser"
EXCEPTION_BOX = '[data-testid="stException"]'
# Generous for a first page run that imports torch; a rerun normally takes well under a second.
RUN_TIMEOUT_MS = 30_000


def wait_for_app(page: Page, timeout_ms: int = RUN_TIMEOUT_MS) -> None:
    """Wait until the websocket is connected and the page's script has finished running.

    The data-test-* attributes are the ones Streamlit's own end-to-end tests wait on.
    """
    page.wait_for_timeout(200)  # let a just-triggered rerun flip the state to "running" first
    page.wait_for_selector('[data-testid="stApp"][data-test-connection-state="CONNECTED"]',
                           state="attached", timeout=timeout_ms)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]',
                           state="attached", timeout=timeout_ms)


def open_app(page: Page, url: str) -> None:
    """Load a URL of the app (a new Streamlit session, so logged out) and wait for its first run."""
    page.goto(url)
    wait_for_app(page)


def submit_login(page: Page, username: str, password: str) -> None:
    """Fill the login form and press "Log in", without checking the outcome."""
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()
    wait_for_app(page)


def login(page: Page, base_url: str, username: str, password: str) -> None:
    """Open the home page, log in, and wait until the sidebar says "Logged in as"."""
    open_app(page, base_url)
    submit_login(page, username, password)
    page.get_by_text("Logged in as").wait_for(timeout=RUN_TIMEOUT_MS)
    wait_for_app(page)


def open_sidebar_page(page: Page, label: str) -> None:
    """Follow a sidebar link; unlike page.goto this keeps the Streamlit session, so the login holds."""
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=label, exact=True).click()
    wait_for_app(page)


def assert_no_exception(page: Page, where: str) -> None:
    """Fail with the traceback's text when the page shows a Streamlit exception box."""
    wait_for_app(page)
    boxes = page.locator(EXCEPTION_BOX)
    if boxes.count():
        raise AssertionError(f"{where} shows an exception:\n{boxes.first.inner_text()[:2000]}")


def save_screenshot(page: Page, name: str) -> Path:
    """Save a full-page PNG under test-output/browser/ and return its path."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def files_input(page: Page):
    """The Import page's "Files" uploader (the page has a second one, for whole-slide scans)."""
    return page.get_by_role("region", name="Files").get_by_test_id("stFileUploaderDropzoneInput")
