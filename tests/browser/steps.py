"""Whole user steps on the running app (annotate, review, settle, retrain, export), shared by the
end-to-end scenario, the per-issue browser tests and bench/load.py.

Each step drives the page only through what a user does (mouse on the canvas, keys, buttons);
the checks against the store live in the tests.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mdsdys.demo.study import DEMO_ACCOUNTS

from .actions import EXCEPTION_BOX, login, open_sidebar_page, save_screenshot, wait_for_app

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

PASSWORDS = {name: password for name, password, _ in DEMO_ACCOUNTS}
HOTKEY_CODES = dict(zip("12345678", ["EN", "ED", "GN", "GD", "MN", "MD", "BL", "OT"], strict=True))
CELL_CAPTION = re.compile(r"^Cell (\d+) ·")
ALL_READ = "You have read every cell of this slide"
QUEUE_EMPTY = "Nothing to settle in this queue"
VIEWPORT = {"width": 1400, "height": 900}
# The machine is shared with ML jobs on 2 cores; a rerun that takes 100 ms on a laptop can take seconds here.
STEP_TIMEOUT_MS = 60_000
# Training competes for the same CPUs; 4 min is many times what 2 epochs on the demo cells take alone.
TRAIN_TIMEOUT_MS = 240_000


class PageStuck(AssertionError):
    """The page still shows the same cell long after a key press."""

    def __init__(self, cell_label: int, seconds: float, screenshot: Path, page_text: str) -> None:
        super().__init__(f"the page still shows cell {cell_label} {seconds:.0f} s after a key press "
                         f"(see {screenshot}); it says: {page_text}")


@dataclass(frozen=True)
class Press:
    """One review key press: the cell it labelled, the code, and key press -> next cell shown, in seconds."""

    cell_id: int
    code: str
    round_trip_s: float


def new_page(browser: Browser) -> tuple[BrowserContext, Page]:
    """A fresh browser context (its own Streamlit session) and a page in it."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    context.set_default_timeout(STEP_TIMEOUT_MS)
    return context, context.new_page()


def login_as(page: Page, base_url: str, username: str, password: str | None = None) -> None:
    """Log in with a demo account (or the given password)."""
    login(page, base_url, username, password or PASSWORDS[username])


def focus_page(page: Page) -> None:
    """Click the page title, so key presses go to the page's shortcuts and not into an input."""
    page.locator("h1").first.click()


def exception_count(page: Page) -> int:
    """How many Streamlit exception boxes the page shows."""
    return page.locator(EXCEPTION_BOX).count()


# --- Annotate ---------------------------------------------------------------------------------

def draw_and_save_mask(page: Page) -> None:
    """On the Annotate page, draw one brush stroke across the middle of the canvas and press Save."""
    open_sidebar_page(page, "Annotate")
    canvas = page.locator("canvas.upper-canvas")
    if not canvas.count():  # fabric.js draws on its upper canvas; fall back to the last canvas
        canvas = page.locator("canvas").last
    canvas = canvas.first
    canvas.wait_for(state="visible", timeout=STEP_TIMEOUT_MS)
    box = canvas.bounding_box()
    assert box is not None, "the Annotate canvas has no size"
    x0, y = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5
    page.mouse.move(x0, y)
    page.mouse.down()
    for step in range(1, 21):
        page.mouse.move(x0 + step * box["width"] * 0.02, y + (step % 4) * 3)
    page.mouse.up()
    wait_for_app(page)  # the canvas sends its strokes back, which reruns the page
    page.wait_for_timeout(1000)
    wait_for_app(page)
    page.get_by_role("button", name=re.compile(r"^Save\b")).click()
    wait_for_app(page)
    page.get_by_text(re.compile(r"^Saved: \d+ nuclei")).wait_for(timeout=STEP_TIMEOUT_MS)


# --- Review -----------------------------------------------------------------------------------

def open_review(page: Page, queue: str = "Slide order") -> None:
    """Open the Review page in the given queue mode (slide order gives every reader the same cells)."""
    open_sidebar_page(page, "Review")
    page.get_by_test_id("stSidebar").get_by_text(queue, exact=True).click()
    wait_for_app(page)
    page.get_by_text(CELL_CAPTION).wait_for(timeout=STEP_TIMEOUT_MS)


def current_cell(page: Page) -> int:
    """The id of the cell the Review (or Consensus) page shows now."""
    text = page.get_by_text(CELL_CAPTION).first.inner_text(timeout=STEP_TIMEOUT_MS)
    match = CELL_CAPTION.match(text.strip())
    assert match, f"unexpected cell caption {text!r}"
    return int(match.group(1))


def _wait_cell_changed(page: Page, before: int, timeout_ms: int, done_text: str = ALL_READ) -> None:
    deadline = time.monotonic() + timeout_ms / 1000
    while time.monotonic() < deadline:
        if page.get_by_text(done_text).count():
            return
        # all_inner_texts does not wait: a rerun may remove the caption between a count and a read,
        # and a waiting read would then block until its own timeout if the queue has just emptied.
        captions = page.get_by_text(CELL_CAPTION).all_inner_texts()
        if captions:
            match = CELL_CAPTION.match(captions[0].strip())
            if match and int(match.group(1)) != before:
                return
        page.wait_for_timeout(50)
    shot = save_screenshot(page, f"stuck-on-cell-{before}")
    alerts = page.locator('[data-testid="stAlert"], [data-testid="stException"]').all_inner_texts()
    state = page.locator('[data-testid="stApp"]').first
    told = "; ".join(text.strip()[:200] for text in alerts) or "no message"
    told += (f" (connection {state.get_attribute('data-test-connection-state')}, "
             f"script {state.get_attribute('data-test-script-state')})")
    raise PageStuck(before, timeout_ms / 1000, shot, told)


def review_by_keys(page: Page, keys: str, before_press=None, timeout_ms: int = STEP_TIMEOUT_MS) -> list[Press]:
    """Label cells with the keyboard alone: one class hotkey per cell, waiting for the next cell each time.

    `before_press(page, cell_id)` runs before each key press (the blinding check uses it).
    """
    focus_page(page)
    presses = []
    for key in keys:
        cell_id = current_cell(page)
        if before_press is not None:
            before_press(page, cell_id)
        start = time.monotonic()
        page.keyboard.press(key)
        _wait_cell_changed(page, cell_id, timeout_ms)
        presses.append(Press(cell_id, HOTKEY_CODES[key], time.monotonic() - start))
        wait_for_app(page, timeout_ms)
    return presses


def assert_no_own_read_shown(page: Page, cell_id: int) -> None:
    """Blinding: before this reader reads a cell, the page shows no read of it at all."""
    shown = page.get_by_text("Your read:").count()
    assert shown == 0, f"cell {cell_id}: the page shows a read ('Your read:') before this reader read it"


# --- Consensus --------------------------------------------------------------------------------

def settle_by_keys(page: Page, keys: str) -> list[int]:
    """On the Consensus page, settle the first waiting cells, one class hotkey each; returns their ids."""
    open_sidebar_page(page, "Consensus")
    focus_page(page)
    settled = []
    for key in keys:
        cell_id = current_cell(page)
        page.keyboard.press(key)
        # The "settled as" message is not shown once the queue is empty (the page stops first), so wait
        # for the next cell or the empty-queue note instead.
        _wait_cell_changed(page, cell_id, STEP_TIMEOUT_MS, done_text=QUEUE_EMPTY)
        wait_for_app(page)
        settled.append(cell_id)
        focus_page(page)
    return settled


# --- Train ------------------------------------------------------------------------------------

def retrain_classifier(page: Page, epochs: int = 1, timeout_ms: int = TRAIN_TIMEOUT_MS) -> str:
    """Queue a classifier run with `epochs` from the Train page and wait for "New version"; returns its text."""
    open_sidebar_page(page, "Train")
    page.get_by_role("tab", name="Classifier").click()
    panel = page.get_by_role("tabpanel", name="Classifier")
    panel.get_by_text("Advanced settings").click()
    number = panel.get_by_label(re.compile(r"^Epochs"))
    number.fill(str(epochs))
    number.press("Tab")
    panel.get_by_role("button", name="Retrain classifier").click()
    wait_for_app(page)
    page.get_by_text(re.compile(r"^Queued as job \d+")).wait_for(timeout=STEP_TIMEOUT_MS)
    new_version = page.get_by_text(re.compile(r"^New version "))
    new_version.wait_for(timeout=timeout_ms)
    return new_version.first.inner_text()


# --- Dashboard --------------------------------------------------------------------------------

def download_slide_report(page: Page, target: Path) -> Path:
    """Download the printable slide report from the Dashboard (one click); returns where it was saved."""
    open_sidebar_page(page, "Dashboard")
    button = page.get_by_role("button", name="Download Slide report (printable HTML)")
    with page.expect_download(timeout=STEP_TIMEOUT_MS) as download:
        button.click()
    download.value.save_as(target)
    return target
