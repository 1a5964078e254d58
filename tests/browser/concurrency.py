"""Several readers reviewing at once in their own browsers, and a check that the store kept every read.

Used by bench/load.py (the figures) and test_load_browser.py (the short assertion). Each session runs in
its own thread with its own sync_playwright and Chromium, because Playwright's sync API is bound to a thread.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mdsdys.accounts import auth
from mdsdys.registry.retrain import queue_training
from mdsdys.store import connect
from mdsdys.store.jobs import get_job, request_cancel
from mdsdys.store.users import find_user

from . import steps
from .conftest import CHROMIUM
from .server import settings_for
from .store_checks import current_reads, read_rows

LOCKED = "database is locked"
# A key press the server never receives (the page still shows the cell, and the store has no read of it)
# loses nothing: the reader sees the same cell and presses again, and so does a session here, up to
# MAX_REPRESSES times. A press that was saved but left the page on its cell is a failure.
PRESS_WAIT_MS = 30_000
MAX_REPRESSES = 2


@dataclass
class Session:
    """What one reader's browser submitted, and what went wrong on its page."""

    username: str
    presses: list[steps.Press] = field(default_factory=list)
    attempted: list[tuple[int, str]] = field(default_factory=list)  # (cell, code) of every key pressed
    repressed: int = 0  # presses that never reached the server, so were pressed again
    locked_errors: int = 0
    exception_boxes: int = 0
    error: str | None = None


def create_readers(home: Path, prefix: str, count: int, password: str = "load-reader-pass") -> list[str]:
    """Create `count` reader accounts named <prefix>-<i> (skipping existing ones); returns their names."""
    names = [f"{prefix}-{i}" for i in range(1, count + 1)]
    with connect(home / "labels.db") as db:
        for name in names:
            if find_user(db, name) is None:
                auth.create_user(db, name, password, "reader", by=None)
    return names


def queue_long_training(home: Path, epochs: int) -> int:
    """Queue a classifier run as the demo adjudicator, long enough to keep the worker busy; returns its job id."""
    with connect(home / "labels.db") as db:
        adjudicator = find_user(db, "adjudicator")[0]
    return queue_training(settings_for(home), adjudicator, "classifier", {"epochs": epochs})


def job_state(home: Path, job_id: int) -> str:
    """A job's state now (queued, running, done, failed, cancelled)."""
    with connect(home / "labels.db") as db:
        return get_job(db, job_id).state


def cancel_job(home: Path, job_id: int, wait_s: float = 120.0) -> str:
    """Ask the worker to stop a job and wait until it has (it writes to the store as it stops); returns its state."""
    with connect(home / "labels.db") as db:
        request_cancel(db, job_id)
    deadline = time.monotonic() + wait_s
    while job_state(home, job_id) in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(1)
    return job_state(home, job_id)


def _scan(session: Session, page) -> None:
    text = page.locator("body").inner_text()
    session.locked_errors += text.count(LOCKED)
    session.exception_boxes += steps.exception_count(page)


def _press(home: Path, session: Session, page, key: str) -> None:
    """Press one class key and wait for the next cell; press again if the first never reached the server."""
    for attempt in range(MAX_REPRESSES + 1):
        cell = steps.current_cell(page)
        session.attempted.append((cell, steps.HOTKEY_CODES[key]))
        try:
            session.presses += steps.review_by_keys(page, key, timeout_ms=PRESS_WAIT_MS)
            return
        except steps.PageStuck:
            if attempt == MAX_REPRESSES or cell in current_reads(home, session.username):
                raise
            session.repressed += 1


def _run_session(base_url: str, home: Path, session: Session, password: str, presses: int, seed: int) -> None:
    from playwright.sync_api import sync_playwright

    keys = "".join(random.Random(seed).choice("12345678") for _ in range(presses))
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
            try:
                _context, page = steps.new_page(browser)  # closed with the browser
                steps.login_as(page, base_url, session.username, password)
                steps.open_review(page)
                for key in keys:  # one at a time, so a failure keeps the presses that went through
                    _press(home, session, page, key)
                    _scan(session, page)
            finally:
                browser.close()
    except Exception as exc:  # noqa: BLE001 - a session's failure is a result to report, not a crash
        session.error = f"{type(exc).__name__}: {str(exc)[:300]}"


def run_sessions(base_url: str, home: Path, usernames: list[str], presses: int,
                 password: str = "load-reader-pass") -> list[Session]:
    """Each reader reviews `presses` cells by keyboard in their own browser, all at once, on the server
    at `base_url` whose store is in `home`."""
    sessions = [Session(name) for name in usernames]
    threads = [threading.Thread(target=_run_session, args=(base_url, home, s, password, presses, i), daemon=True)
               for i, s in enumerate(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sessions


def check_store(home: Path, session: Session) -> dict[str, int]:
    """lost: confirmed presses (the page moved on) whose read is not the reader's current read in the store;
    duplicated: read rows of a cell beyond the key presses made on it; unconfirmed: presses after which the
    page never moved on (their read may or may not be stored), less those pressed again because the
    server never received them."""
    submitted = {press.cell_id: press.code for press in session.presses}
    current = current_reads(home, session.username)
    lost = sum(1 for cell, code in submitted.items() if current.get(cell) != code)
    rows_per_cell = Counter(cell for cell, _, _ in read_rows(home, session.username))
    pressed_per_cell = Counter(cell for cell, _ in session.attempted)
    duplicated = sum(max(n - pressed_per_cell[cell], 0) for cell, n in rows_per_cell.items())
    unconfirmed = len(session.attempted) - len(session.presses) - session.repressed
    return {"lost": lost, "duplicated": duplicated, "unconfirmed": unconfirmed}


def summarise(home: Path, sessions: list[Session]) -> dict:
    """One row of the load table: sessions, presses, p50/p95 round trip, lost, duplicated, locked errors."""
    times = sorted(p.round_trip_s for s in sessions for p in s.presses)
    checks = [check_store(home, s) for s in sessions]
    quantile = (lambda q: statistics.quantiles(times, n=100)[q - 1]) if len(times) >= 2 else (lambda q: float("nan"))
    return {
        "sessions": len(sessions), "presses": len(times),
        "p50_s": round(quantile(50), 3), "p95_s": round(quantile(95), 3), "max_s": round(max(times, default=0), 3),
        "lost": sum(c["lost"] for c in checks), "unconfirmed": sum(c["unconfirmed"] for c in checks),
        "duplicated": sum(c["duplicated"] for c in checks), "repressed": sum(s.repressed for s in sessions),
        "locked_errors": sum(s.locked_errors for s in sessions),
        "exception_boxes": sum(s.exception_boxes for s in sessions),
        "session_errors": [f"{s.username}: {s.error}" for s in sessions if s.error],
    }
