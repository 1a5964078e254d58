"""Take the README screenshot: the demo home page, logged in as the demo admin, 1400x900 PNG.

    python bench/screenshot.py [--out docs/screenshot.png]

Builds the synthetic demo study in a temporary folder, starts the real Streamlit server on it
the way the browser tests do (tests/browser/server.py), and drives Debian's Chromium.
Emoji in the page links need an emoji font (Debian: fonts-noto-color-emoji).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # for tests.browser; the tests are not an installed package

from playwright.sync_api import sync_playwright

from mdsdys.demo.study import DEMO_ACCOUNTS
from tests.browser.actions import login
from tests.browser.server import build_demo_home, running_server

log = logging.getLogger("screenshot")
CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1400, "height": 900}
# A README image should load fast on GitHub; a plain Streamlit page at 1400x900 is ~150 kB.
MAX_BYTES = 400_000


def take_screenshot(out: Path) -> Path:
    """Save the logged-in demo home page as a viewport-sized PNG at `out`."""
    username, password, _ = next(account for account in DEMO_ACCOUNTS if account[2] == "admin")
    with tempfile.TemporaryDirectory(prefix="mdsdys-screenshot-") as tmp:
        home = build_demo_home(Path(tmp))
        with running_server(home) as server, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
            page = browser.new_context(viewport=VIEWPORT).new_page()
            login(page, server.base_url, username, password)
            page.get_by_test_id("stDataFrame").get_by_text("SYN-001", exact=True).wait_for(state="attached")
            page.mouse.move(VIEWPORT["width"] - 10, VIEWPORT["height"] - 10)  # hover shows toolbars: move away
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))  # the viewport only: what a visitor sees first
            browser.close()
    return out


def main() -> int:
    """Take the screenshot and check its size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "screenshot.png")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = take_screenshot(args.out)
    size = out.stat().st_size
    log.info("Saved %s (%dx%d, %d kB)", out, VIEWPORT["width"], VIEWPORT["height"], size // 1000)
    if size > MAX_BYTES:
        log.error("%s is over %d kB; shrink the viewport or the page.", out, MAX_BYTES // 1000)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
