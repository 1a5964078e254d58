"""The counting rule on a slide: a reader's own states, the settle queue and the admin's floors (issue 17)."""

from __future__ import annotations

import numpy as np
import pytest

from mdsdys import sequential
from mdsdys.accounts import admin, auth
from mdsdys.errors import MdsdysError, PermissionDeniedError
from mdsdys.imaging.decode import encode_png, sha256_hex
from mdsdys.review import counting
from mdsdys.review import reads as review
from mdsdys.schemes import default_scheme
from mdsdys.store.cells import save_proposals
from mdsdys.store.models import insert_model
from mdsdys.store.patches import StoredImage, add_cell, add_patch
from mdsdys.store.settings import count_floors
from mdsdys.store.slides import ensure_default_scheme, ensure_slide


@pytest.fixture
def slide_cells(db):
    """A slide with 12 cells: the model calls 0-5 erythroid (EN) and 6-11 granulocytic (GN)."""
    ensure_default_scheme(db)
    slide, _ = ensure_slide(db, "S1", "mds8")
    data = encode_png(np.random.default_rng(0).integers(0, 255, (60, 400, 3), dtype=np.uint8))
    patch_id, _ = add_patch(db, slide.id, StoredImage(sha256_hex(data), 400, 60, "image/png", data), "f.png")
    cells = [add_cell(db, slide.id, patch_id, (i * 30, 10, 28, 28), "detected")[0] for i in range(12)]
    model_id = insert_model(db, "classifier", "v1", None, "resnet18", "/m.pt", {}, {}, None)
    save_proposals(db, model_id, {c: {("EN" if i < 6 else "GN"): 0.9, "OT": 0.1} for i, c in enumerate(cells)})
    return slide, cells


def test_states_follow_the_counts_and_the_floors() -> None:
    floors = dict(sequential.WHO_FLOORS)
    states = counting.count_states(default_scheme(), {"EN": 200, "GN": 100, "GD": 100, None: 40}, floors)
    by_name = {s.name: s for s in states}
    assert [s.name for s in states] == ["erythroid", "granulocytic", "megakaryocytic", "blasts"]
    assert by_name["erythroid"].state == sequential.SETTLED_BELOW
    assert by_name["granulocytic"].state == sequential.SETTLED_ABOVE
    assert by_name["megakaryocytic"].n == 0 and by_name["megakaryocytic"].more_needed >= 30
    assert by_name["blasts"].n == 400 and not by_name["blasts"].settled  # None (unlabelled) is not counted


def test_a_reader_sees_only_their_own_count(db, slide_cells) -> None:
    slide, cells = slide_cells
    ann = auth.create_user(db, "ann", "password-a", "reader")
    bob = auth.create_user(db, "bob", "password-b", "reader")
    for cell in cells[:4]:
        review.record_read(db, ann, cell, "ED")
    assert {s.name: s.n for s in counting.reader_states(db, ann, slide.id)}["erythroid"] == 4
    assert {s.name: s.n for s in counting.reader_states(db, bob, slide.id)}["erythroid"] == 0


def test_settle_queue_reads_unsettled_lineages_first(db, slide_cells) -> None:
    slide, cells = slide_cells
    root = auth.create_user(db, "boss", "password-r", "admin")
    ann = auth.create_user(db, "ann", "password-a", "reader")
    assert review.next_cell(db, ann, slide.id, "settle") == cells[0]  # nothing settled: slide order
    for name in ("erythroid", "differential"):
        admin.set_count_floor(db, root, name, 0)
    for cell in cells[:6]:
        review.record_read(db, ann, cell, "EN")  # six normal erythroid cells...
    erythroid = counting.reader_states(db, ann, slide.id)[0]
    assert not erythroid.settled  # ...are nowhere near enough to settle below 10%
    assert review.next_cell(db, ann, slide.id, "settle") == cells[6]
    with pytest.raises(MdsdysError, match="Unknown queue"):
        review.next_cell(db, ann, slide.id, "sideways")


def test_settle_queue_skips_a_settled_lineage(db, slide_cells, monkeypatch) -> None:
    slide, cells = slide_cells
    ann = auth.create_user(db, "ann", "password-a", "reader")
    review.record_read(db, ann, cells[6], "GN")
    # Granulocytes settled, erythroid not: erythroid cells (0-5) first even though cell 6 is read.
    monkeypatch.setattr(counting, "reader_states", lambda db, viewer, slide_id: [
        sequential.lineage_state("erythroid", 0, 0, 0), sequential.lineage_state("granulocytic", 0, 500, 0)])
    assert review.next_cell(db, ann, slide.id, "settle") == cells[0]
    monkeypatch.setattr(counting, "reader_states", lambda db, viewer, slide_id: [
        sequential.lineage_state("erythroid", 0, 500, 0), sequential.lineage_state("granulocytic", 0, 0, 0)])
    assert review.next_cell(db, ann, slide.id, "settle") == cells[7]


def test_only_an_admin_changes_the_floors_and_it_is_audited(db) -> None:
    root = auth.create_user(db, "boss", "password-r", "admin")
    judge = auth.create_user(db, "judge", "password-j", "adjudicator")
    assert count_floors(db) == dict(sequential.WHO_FLOORS)
    with pytest.raises(PermissionDeniedError):
        admin.set_count_floor(db, judge, "erythroid", 100)
    with pytest.raises(MdsdysError, match="whole number"):
        admin.set_count_floor(db, root, "erythroid", -3)
    with pytest.raises(MdsdysError, match="no count called"):
        admin.set_count_floor(db, root, "lymphoid", 100)
    admin.set_count_floor(db, root, "megakaryocytic", 50)
    assert count_floors(db)["megakaryocytic"] == 50
    assert admin.audit_rows(db, root, action="setting_change")[0]["entity_id"] == "count_floor_megakaryocytic"


def test_a_cell_leaves_the_queues_once_it_has_the_reads_the_admin_wants(db, slide_cells) -> None:
    slide, cells = slide_cells
    root = auth.create_user(db, "boss", "password-r", "admin")
    ann, bob, cat = (auth.create_user(db, n, f"password-{n}", "reader") for n in ("ann", "bob", "cat"))
    review.record_read(db, ann, cells[0], "EN")
    review.record_read(db, bob, cells[0], "EN")
    assert review.next_cell(db, cat, slide.id, "slide") == cells[0]  # default: every reader reads every cell
    admin.set_reads_per_cell(db, root, 2)
    assert review.next_cell(db, cat, slide.id, "slide") == cells[1]
    admin.set_reads_per_cell(db, root, 3)
    assert review.next_cell(db, cat, slide.id, "slide") == cells[0]
    with pytest.raises(MdsdysError, match="whole number"):
        admin.set_reads_per_cell(db, root, -1)
    with pytest.raises(PermissionDeniedError):
        admin.set_reads_per_cell(db, ann, 3)


def test_dashboard_states_use_human_labels_for_adjudicators_and_own_reads_for_readers(db, slide_cells) -> None:
    slide, cells = slide_cells
    judge = auth.create_user(db, "judge", "password-j", "adjudicator")
    ann = auth.create_user(db, "ann", "password-a", "reader")
    bob = auth.create_user(db, "bob", "password-b", "reader")
    for cell in cells[:3]:
        review.record_read(db, ann, cell, "ED")
    review.record_read(db, bob, cells[5], "EN")
    assert {s.name: s.n for s in counting.slide_states(db, judge, slide.id)}["erythroid"] == 4
    assert {s.name: s.n for s in counting.slide_states(db, bob, slide.id)}["erythroid"] == 1


def test_the_printed_report_explains_the_counting_states(db, slide_cells) -> None:
    from mdsdys.report import export
    slide, cells = slide_cells
    judge = auth.create_user(db, "judge", "password-j", "adjudicator")
    html = export.slide_report_html(db, judge, slide.id)
    assert "Counting to a decision" in html and "about 200 more erythroid cells needed" in html
    assert "1 slide in 20" in html


def test_cli_count_prints_the_states_of_a_slide(db, slide_cells, home, capsys) -> None:
    from mdsdys import cli
    slide, cells = slide_cells
    assert cli.main(["count", "--slide", "S1", "--json"]) == 0
    rows = __import__("json").loads(capsys.readouterr().out)
    assert [r["count"] for r in rows] == ["erythroid", "granulocytic", "megakaryocytic", "blasts"]
    assert cli.main(["count", "--slide", "nope"]) != 0
