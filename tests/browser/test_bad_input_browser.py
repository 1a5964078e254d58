"""Bad uploads through the real Import page (issue 8): each bad file is named with a reason, good ones
are imported, a zip that climbs out of its folder is refused, and an over-size upload gets a message."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from PIL import Image

from mdsdys.store import connect

from . import steps
from .actions import EXCEPTION_BOX, files_input, save_screenshot, wait_for_app
from .server import build_demo_home, start_server, stop_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

expect = pytest.importorskip(
    "playwright.sync_api", reason="browser tests need the playwright package: pip install -e '.[dev]'").expect
pytestmark = pytest.mark.browser

UNICODE_NAME = "Färbung 骨髄 🔬.png"


def _png(seed: int, size: int = 64) -> bytes:
    image = Image.new("RGB", (size, size), (200, 100 + seed, 150))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _file(name: str, data: bytes, mime: str = "image/png") -> dict:
    return {"name": name, "mimeType": mime, "buffer": data}


def _import(page: Page, slide: str, files: list[dict]) -> None:
    steps.open_sidebar_page(page, "Import")
    page.get_by_label("New slide name").fill(slide)
    files_input(page).set_input_files(files)
    page.wait_for_timeout(1000)  # the uploader sends each file to the server before the form may submit
    page.get_by_role("button", name="Import").click()
    wait_for_app(page)


def _slide_fields(home: Path, slide: str) -> int:
    with connect(home / "labels.db") as db:
        return db.execute("SELECT COUNT(*) FROM patches p JOIN slides s ON s.id = p.slide_id "
                          "WHERE s.case_id = ?", [slide]).fetchone()[0]


def test_import_names_each_bad_file_and_keeps_the_good_ones(browser: Browser, small_upload_server: tuple[str, Path]) -> None:
    app_server, demo_home = small_upload_server
    good = _png(1)
    files = [
        _file("good.png", good),
        _file("empty.jpg", b"", "image/jpeg"),
        _file("notes.jpg", b"this is a text file, not a JPEG\n", "image/jpeg"),
        _file("truncated.png", _png(2, 256)[:300]),
        _file(UNICODE_NAME, _png(3)),
    ]
    context, page = steps.new_page(browser)
    try:
        steps.login_as(page, app_server, "admin")
        _import(page, "BAD-INPUT-1", files)
        save_screenshot(page, "issue8-import-bad-files")
        expect(page.locator(EXCEPTION_BOX)).to_have_count(0)
        alert = page.get_by_test_id("stAlert").first
        expect(alert).to_be_visible()
        errors = page.get_by_test_id("stAlert")
        for bad in ("empty.jpg", "notes.jpg", "truncated.png"):
            expect(errors.filter(has_text=bad).first).to_be_visible()
        shown = " ".join(errors.all_inner_texts())
        assert "good.png" not in shown and UNICODE_NAME not in shown
    finally:
        context.close()
    assert _slide_fields(demo_home, "BAD-INPUT-1") == 2


def test_zip_with_a_path_outside_its_folder_gets_a_clear_error(browser: Browser, small_upload_server: tuple[str, Path]) -> None:
    app_server, _ = small_upload_server
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../evil.png", _png(4))
    context, page = steps.new_page(browser)
    try:
        steps.login_as(page, app_server, "admin")
        _import(page, "BAD-INPUT-ZIP", [_file("fields.zip", buffer.getvalue(), "application/zip")])
        save_screenshot(page, "issue8-import-evil-zip")
        expect(page.locator(EXCEPTION_BOX)).to_have_count(0)
        alerts = page.get_by_test_id("stAlert")
        expect(alerts.filter(has_text="evil.png").or_(alerts.filter(has_text="zip")).first).to_be_visible()
    finally:
        context.close()


@pytest.fixture(scope="module")
def small_upload_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A server of this module's own (its new slides would change the shared demo's counts), whose uploads
    are capped at 1 MB both by Streamlit and by the app; returns its URL and home."""
    home = build_demo_home(tmp_path_factory.mktemp("small-upload-home"))
    server = start_server(home, extra_args=["--server.maxUploadSize", "1"], extra_env={"MDSDYS_MAX_UPLOAD_MB": "1"})
    try:
        yield server.base_url, home
    finally:
        stop_server(server)


def test_upload_over_the_size_limit_gets_a_clear_message(browser: Browser, small_upload_server: tuple[str, Path]) -> None:
    too_big = _png(5) + b"\0" * (2 * 1024 * 1024)  # 2 MB
    context, page = steps.new_page(browser)
    try:
        steps.login_as(page, small_upload_server[0], "admin")
        steps.open_sidebar_page(page, "Import")
        files_input(page).set_input_files([_file("big.png", too_big)])
        page.wait_for_timeout(1000)
        message = page.get_by_text("1.0MB or smaller").or_(page.get_by_text("too large")).or_(page.get_by_text("1 MB"))
        expect(message.first).to_be_visible()
        save_screenshot(page, "issue8-import-too-big")
        expect(page.locator(EXCEPTION_BOX)).to_have_count(0)
    finally:
        context.close()
