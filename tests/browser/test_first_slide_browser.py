"""A lab's first slide in Chromium, on real smear fields (issue 14, "Done when").

A fresh store (one admin, no segmenter of its own, a small classifier): import six real BCCD fields
on the Import page, and cells and proposals appear with no other action (the page starts the worker,
the shipped starter segmenter detects, the classifier proposes); review a few cells from the keyboard;
download the slide report and check it says where its labels come from; reload and stay logged in.

The classifier is tiny and trained on the project's synthetic cells: its proposals are wrong for blood
fields, and that is fine here, since the test is about the loop and the labels' provenance, not accuracy.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from mdsdys.accounts import auth
from mdsdys.config import STARTER_SEGMENTER
from mdsdys.store import connect

from . import steps
from .actions import assert_no_exception, files_input, open_sidebar_page, save_screenshot, wait_for_app
from .server import start_server, stop_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser

expect = pytest.importorskip(
    "playwright.sync_api", reason="browser tests need the playwright package: pip install -e '.[dev]'").expect
pytestmark = [pytest.mark.browser, pytest.mark.slow]

BCCD = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "bccd_nuclei" / "images"
SLIDE = "BCCD-FIRST"
ADMIN, PASSWORD = "labadmin", "a-long-admin-password"
FIELDS = 6  # about one white cell a field: enough that some cells stay the model's alone
READS = "11"  # two cells read as EN from the keyboard
# The worker starts, imports torch, runs the starter on six 640x480 fields and proposes, on 2 shared cores.
DETECTION_TIMEOUT_MS = 150_000


def _fields() -> list[Path]:
    if not BCCD.is_dir():
        pytest.skip(f"real smear fields not found at {BCCD} (../shared/data is absent on a user's machine)")
    if not STARTER_SEGMENTER.is_file():
        pytest.skip(f"the shipped starter segmenter is missing at {STARTER_SEGMENTER}")
    return sorted(BCCD.glob("*.jpg"))[:FIELDS]


def _fresh_home(home: Path) -> None:
    """An empty store with one admin and a tiny active mds8 classifier; no segmenter, so the starter serves."""
    from mdsdys.classify.classifier import CellSample
    from mdsdys.classify.train import ClsTrainConfig, train_classifier
    from mdsdys.demo.synth import generate_cell
    from mdsdys.registry.versions import register_model
    from mdsdys.schemes import default_scheme
    from mdsdys.store.slides import ensure_default_scheme

    scheme = default_scheme()
    rng = np.random.default_rng(0)
    samples = [CellSample(generate_cell(rng, code, 40)[0], code, f"SYN-{k % 2}", len(scheme.codes) * k + i + 1)
               for k in range(4) for i, code in enumerate(scheme.codes)]
    config = ClsTrainConfig(input_size=32, epochs=2, batch_size=16, patience=2)
    checkpoint = train_classifier(samples, scheme, config).checkpoint
    with connect(home / "labels.db") as db:
        auth.create_user(db, ADMIN, PASSWORD, "admin")
        ensure_default_scheme(db)  # a new store has no scheme yet; the classifier must be mds8's
        register_model(db, home / "models", checkpoint)


def _slide_counts(home: Path) -> tuple[int, int]:
    """(cells, cells with a proposal) on the imported slide."""
    with connect(home / "labels.db") as db:
        return db.execute(
            "SELECT COUNT(*), COUNT(p.cell_id) FROM cells c JOIN slides s ON s.id = c.slide_id "
            "LEFT JOIN (SELECT DISTINCT cell_id FROM proposals) p ON p.cell_id = c.id WHERE s.case_id = ?",
            [SLIDE]).fetchone()


def test_real_fields_are_imported_detected_proposed_reviewed_and_reported_and_a_reload_keeps_the_login(
        browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> None:
    fields = _fields()
    home = tmp_path_factory.mktemp("first-slide-home")
    _fresh_home(home)
    server = start_server(home, extra_env={"MDSDYS_DEMO": "0"})
    context, page = steps.new_page(browser)
    started = time.monotonic()
    try:
        steps.login_as(page, server.base_url, ADMIN, PASSWORD)
        open_sidebar_page(page, "Import")
        page.get_by_label("New slide name").fill(SLIDE)
        files_input(page).set_input_files([str(path) for path in fields])
        page.wait_for_timeout(1500)  # the uploader sends the files to the server before the form may submit
        page.get_by_role("button", name="Import").click()
        wait_for_app(page)
        expect(page.get_by_text(f"Cells are being detected on {SLIDE}")).to_be_visible()
        # No other action: the page's progress fragment reports detection, then proposals, by itself.
        done = page.get_by_text(re.compile(rf"{SLIDE}: cells detected \(\d+ new\), \d+ proposed"))
        done.wait_for(timeout=DETECTION_TIMEOUT_MS)
        save_screenshot(page, "issue14-first-slide-import")
        assert_no_exception(page, "the Import page")
        cells, proposed = _slide_counts(home)
        assert cells > len(READS) and proposed == cells, (cells, proposed)

        steps.open_review(page)
        presses = steps.review_by_keys(page, READS)
        assert len({press.cell_id for press in presses}) == len(READS)
        assert_no_exception(page, "the Review page")

        report = steps.download_slide_report(page, home / "report.html").read_text()
        sources = re.search(r"Where the labels come from:</b> (\d+) cells: (\d+) human-read, 0 settled by "
                            r"consensus, (\d+) model-only \(model proposals, not verified\)", report)
        assert sources, "the report does not say where its labels come from"
        assert [int(n) for n in sources.groups()] == [cells, len(READS), cells - len(READS)]
        assert "Partly model proposals, not verified" in report.split("</title>")[0]  # in its title too
        save_screenshot(page, "issue14-first-slide-dashboard")

        page.reload()  # F5: a new Streamlit session; the cookie keeps the login and the URL the page
        wait_for_app(page)
        expect(page.get_by_text(f"Logged in as {ADMIN}")).to_be_visible()
        expect(page.get_by_role("heading", name="Slide dashboard", exact=True)).to_be_visible()
        expect(page.get_by_role("button", name="Log in")).to_have_count(0)
        assert_no_exception(page, "the Dashboard after a reload")
    finally:
        context.close()
        stop_server(server)
    print(f"first slide in the browser: {time.monotonic() - started:.0f} s, {cells} cells on {FIELDS} fields")
