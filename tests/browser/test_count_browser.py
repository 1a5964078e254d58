"""Issue 17 in Chromium: lineage states update as a reader labels, the "settle this slide" queue, gold
cells that turn up in the queue and score on the Readers view, and a reader who cannot tell them apart."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from mdsdys.accounts import admin, auth
from mdsdys.demo.study import DEMO_ACCOUNTS
from mdsdys.imaging.decode import encode_png, sha256_hex
from mdsdys.review import gold
from mdsdys.store import connect
from mdsdys.store.cells import save_proposals
from mdsdys.store.consensus import put_decision
from mdsdys.store.models import insert_model
from mdsdys.store.patches import StoredImage, add_cell, add_patch
from mdsdys.store.slides import ensure_default_scheme, ensure_slide

from . import steps
from .actions import assert_no_exception, open_sidebar_page, save_screenshot, wait_for_app
from .server import start_server, stop_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright package: pip install -e '.[dev]'")
pytestmark = pytest.mark.browser

# CAL-1, the slide read: the model calls cells 0-1 others, 2-5 megakaryocytic, 6-9 erythroid.
PROPOSED = ["OT", "OT", "MN", "MN", "MN", "MN", "EN", "EN", "EN", "EN"]
SETTLE_ORDER = [2, 3, 4, 5, 6, 7, 8, 9, 0, 1]  # unsettled lineages' cells first, each group in slide order


def _slide(db, name: str, n: int) -> list[int]:
    slide, _ = ensure_slide(db, name, "mds8")
    data = encode_png(np.random.default_rng(len(name)).integers(60, 200, (64, 64 * n, 3), dtype=np.uint8))
    patch_id, _ = add_patch(db, slide.id, StoredImage(sha256_hex(data), 64 * n, 64, "image/png", data), f"{name}.png")
    return [add_cell(db, slide.id, patch_id, (i * 64 + 8, 8, 48, 48), "detected")[0] for i in range(n)]


@pytest.fixture(scope="module")
def count_study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, dict]]:
    """Its own store and server: the demo accounts, a slide to read, three gold cells on another slide,
    a 20% gold rate and no minimum count for megakaryocytes (so eight MD reads settle the lineage)."""
    home = tmp_path_factory.mktemp("count-home")
    with connect(home / "labels.db") as db:
        ensure_default_scheme(db)
        users = {name: auth.create_user(db, name, password, role) for name, password, role in DEMO_ACCOUNTS}
        cells = _slide(db, "CAL-1", 10)
        gold_cells = _slide(db, "GOLD-SRC", 3)
        model_id = insert_model(db, "classifier", "v1", None, "resnet18", "/m.pt", {}, {}, None)
        save_proposals(db, model_id, {c: {code: 0.8, "BL": 0.2} for c, code in zip(cells, PROPOSED)})
        for cell, code in zip(gold_cells, ("GN", "ED", "MN")):
            put_decision(db, cell, code, [], "borderline_morphology", "", users["adjudicator"].id)
            gold.mark_gold(db, users["adjudicator"], cell)
        gold.set_gold_rate(db, users["admin"], 0.2)  # 2 gold cells among CAL-1's 10
        admin.set_count_floor(db, users["admin"], "megakaryocytic", 0)
        labels = {gold.cell_label(db, c): c for c in [*cells, *gold_cells]}
    server = start_server(home)
    try:
        yield server.base_url, home, {"cells": cells, "gold": gold_cells, "labels": labels}
    finally:
        stop_server(server)


def _state(page: Page, lineage: str) -> str:
    """The lineage's state in the 'Your count' line above the cell (it reruns with the cell panel)."""
    text = page.get_by_text(re.compile(r"^Your count:")).first.inner_text()
    return re.search(rf"{lineage}: ([^·]+)", text).group(1).strip()


def test_states_settle_queue_and_gold_cells_in_chromium(browser: Browser, count_study) -> None:
    base_url, home, study = count_study
    context, page = steps.new_page(browser)
    try:
        steps.login_as(page, base_url, "reader1")
        steps.open_review(page, "Settle this slide")
        first_state = _state(page, "megakaryocytic")
        assert "more megakaryocytic cells needed" in first_state
        shown, states, progress = [], [first_state], []
        steps.focus_page(page)
        while not page.get_by_text(steps.ALL_READ).count():
            label = steps.current_cell(page)
            caption = page.get_by_text(steps.CELL_CAPTION).first.inner_text()
            main = page.locator("[data-testid='stMain']").first.inner_text().lower()
            shown.append(label)
            # Blinding: the same slide in every caption, no cell id in the URL, no word that tells.
            assert caption.endswith("slide CAL-1"), caption
            assert "cell=" not in page.url and "gold" not in main and "calibration" not in main
            progress.append(re.search(r"(\d+) left", main).group(1))
            page.keyboard.press("6")  # MD: dysplastic megakaryocyte
            steps._wait_cell_changed(page, label, steps.STEP_TIMEOUT_MS)
            wait_for_app(page)
            states.append(_state(page, "megakaryocytic"))
            assert len(shown) <= 12, "the queue served more cells than the slide and its gold cells"
        save_screenshot(page, "issue17-reader-settled-megakaryocytes")
        assert_no_exception(page, "the Review page")
        # The lineage state changed as the reader labelled, and settled above 10%.
        assert len(set(states)) >= 3 and states[-1] == "settled: >=10% dysplastic"
        # Progress fell by one for every cell shown, gold or not.
        assert [int(p) for p in progress] == list(range(12, 0, -1))
        # The settle queue read the unsettled lineages' cells first; two gold cells turned up among them.
        cells = [study["labels"][label] for label in shown]
        assert [c for c in cells if c in study["cells"]] == [study["cells"][i] for i in SETTLE_ORDER]
        assert len([c for c in cells if c in study["gold"]]) == 2
        # A reader's sidebar has no Readers link (issue 14), and the page typed as an address refuses.
        assert page.get_by_test_id("stSidebarNav").get_by_role("link", name="Readers", exact=True).count() == 0
        page.goto(f"{base_url}/Readers")
        wait_for_app(page)
        page.get_by_text(re.compile("reader1 is a reader")).first.wait_for()
    finally:
        context.close()

    context, page = steps.new_page(browser)
    try:
        steps.login_as(page, base_url, "adjudicator")
        open_sidebar_page(page, "Readers")
        page.get_by_text(re.compile(r"reader1: 2 gold cells read")).wait_for(timeout=steps.STEP_TIMEOUT_MS)
        save_screenshot(page, "issue17-readers-view")
        assert_no_exception(page, "the Readers page")
    finally:
        context.close()
