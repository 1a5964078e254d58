"""The server killed in the middle of a browser import (issue 8): whole batches survive, the store stays
consistent, nothing committed before is lost, and importing the same zip again completes the slide."""

from __future__ import annotations

import io
import os
import signal
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

from mdsdys.ingest.importer import BATCH
from mdsdys.store import check_integrity, connect
from mdsdys.store.stats import store_counts

from . import steps
from .actions import files_input, save_screenshot, wait_for_app
from .server import build_demo_home, start_server, stop_server, worker_pids

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

expect = pytest.importorskip(
    "playwright.sync_api", reason="browser tests need the playwright package: pip install -e '.[dev]'").expect
pytestmark = pytest.mark.browser

FIELDS = 400
SLIDE = "KILLED-IMPORT"


def _zip_of_fields(count: int) -> bytes:
    rng = np.random.default_rng(3)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(count):
            pixels = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
            image = io.BytesIO()
            Image.fromarray(pixels).save(image, format="PNG")
            archive.writestr(f"fields/f{i:04d}.png", image.getvalue())
    return buffer.getvalue()


def _slide_fields(home: Path) -> int:
    with connect(home / "labels.db") as db:
        return db.execute("SELECT COUNT(*) FROM patches p JOIN slides s ON s.id = p.slide_id "
                          "WHERE s.case_id = ?", [SLIDE]).fetchone()[0]


def _start_import(page: Page, data: bytes) -> None:
    steps.open_sidebar_page(page, "Import")
    page.get_by_label("New slide name").fill(SLIDE)
    files_input(page).set_input_files([{"name": "fields.zip", "mimeType": "application/zip",
                                                         "buffer": data}])
    page.wait_for_timeout(1500)  # the uploader sends the file to the server before the form may submit
    page.get_by_role("button", name="Import").click()


def test_a_server_killed_mid_import_keeps_whole_batches_and_a_second_import_completes(
        browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> None:
    home = build_demo_home(tmp_path_factory.mktemp("killed-import-home"))
    with connect(home / "labels.db") as db:
        before = store_counts(db)
    data = _zip_of_fields(FIELDS)
    server = start_server(home)
    context, page = steps.new_page(browser)
    try:
        steps.login_as(page, server.base_url, "admin")
        _start_import(page, data)
        deadline = time.monotonic() + 120
        while _slide_fields(home) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(server.process.pid, signal.SIGKILL)  # the server and anything it started, at once
        server.process.wait(timeout=30)
    finally:
        context.close()
        stop_server(server)

    check_integrity(home / "labels.db")
    partial = _slide_fields(home)
    assert 0 < partial < FIELDS and partial % BATCH == 0, partial
    with connect(home / "labels.db") as db:
        after_kill = store_counts(db)
    assert all(after_kill[key] == before[key] for key in ("reads", "masks", "cells", "consensus"))

    server = start_server(home)  # the same store, after the crash
    context, page = steps.new_page(browser)
    try:
        steps.login_as(page, server.base_url, "admin")
        _start_import(page, data)
        wait_for_app(page, timeout_ms=180_000)
        expect(page.get_by_text(f"{FIELDS - partial} added, {partial} already present")).to_be_visible()
        save_screenshot(page, "issue8-import-after-server-kill")
    finally:
        context.close()
        stop_server(server)
    assert _slide_fields(home) == FIELDS
    assert worker_pids(home) == []  # its detection of the 400 fields stops with the server (tests/browser/server.py)
