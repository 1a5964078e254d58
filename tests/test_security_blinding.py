"""Security of blinding (issue 15 items 7, 8, 12): an adjudicator who reads is blind like a reader,
a blind read is frozen once seen, and a reader's report and Home show no other reader's work."""

from __future__ import annotations

import csv
import io

import pytest
from conftest import open_page

from mdsdys.demo.study import build_demo
from mdsdys.errors import PermissionDeniedError, ReadFrozenError
from mdsdys.app import views
from mdsdys.report import export
from mdsdys.report import numbers as summary
from mdsdys.review import agreement, consensus, reads
from mdsdys.store.audit import list_audit
from mdsdys.store.cells import list_cells
from mdsdys.store.reads import read_history
from mdsdys.store.slides import list_slides
from mdsdys.store.users import find_user


@pytest.fixture
def study(db):
    build_demo(db, seed=0, patches_per_slide=1, training_cells_per_class=2)
    users = {n: find_user(db, n)[0] for n in ("admin", "reader1", "reader2", "adjudicator")}
    slide = next(s for s in list_slides(db) if list_cells(db, s.id) and s.case_id != "SYN-TRAIN")
    return users, slide, [c.id for c in list_cells(db, slide.id)]


def _csv_rows(data: bytes) -> dict[int, dict]:
    return {int(r["cell_id"]): r for r in csv.DictReader(io.StringIO(data.decode()))}


def test_an_adjudicator_reading_a_slide_does_not_see_a_single_read_in_any_view(db, study):
    users, slide, cells = study
    reads.record_read(db, users["reader1"], cells[0], "MD")        # the first reader's single read
    reads.record_read(db, users["adjudicator"], cells[1], "EN")    # the adjudicator reads this slide too
    judge = users["adjudicator"]
    counts = next(s for s in summary.dashboard(db, judge, "human") if s.slide_id == slide.id).counts
    assert counts.get("MD", 0) == 0 and counts.get("EN") == 1
    assert cells[0] not in summary.cell_labels(db, judge, slide.id, "human")           # the gallery
    assert summary.cell_labels(db, judge, slide.id, "final").get(cells[0]) != "MD" or \
        "MD" == _model_code(db, judge, slide.id, cells[0])
    row = _csv_rows(export.cells_csv(db, judge, slide.id))[cells[0]]
    assert "reader1" not in row["reads"] and row["final_source"] != "reader"


def test_the_same_views_show_the_read_to_someone_who_does_not_read_the_slide(db, study):
    users, slide, cells = study
    reads.record_read(db, users["reader1"], cells[0], "MD")
    assert summary.cell_labels(db, users["admin"], slide.id, "human")[cells[0]] == "MD"
    assert "reader1=MD" in _csv_rows(export.cells_csv(db, users["admin"], slide.id))[cells[0]]["reads"]


def test_once_the_adjudicator_has_read_the_cell_too_the_other_read_shows(db, study):
    users, slide, cells = study
    reads.record_read(db, users["reader1"], cells[0], "MD")
    reads.record_read(db, users["adjudicator"], cells[0], "MN")
    row = _csv_rows(export.cells_csv(db, users["adjudicator"], slide.id))[cells[0]]
    assert "reader1=MD" in row["reads"] and "adjudicator=MN" in row["reads"]


def _model_code(db, viewer, slide_id, cell_id):
    return summary.cell_labels(db, viewer, slide_id, "model").get(cell_id)


@pytest.fixture
def settled(db, study):
    """Readers may settle; two readers disagree on one cell."""
    users, slide, cells = study
    consensus.set_readers_may_settle(db, users["admin"], True)
    reads.record_read(db, users["reader1"], cells[0], "EN")
    reads.record_read(db, users["reader2"], cells[0], "ED")
    return users, slide, cells


def test_a_reader_who_has_seen_the_other_read_cannot_rewrite_their_blind_read(db, settled):
    users, _, cells = settled
    shown = consensus.unblinded_reads(db, users["reader1"], cells[0])
    assert {r.code for r in shown} == {"EN", "ED"}
    for change in (lambda: reads.record_read(db, users["reader1"], cells[0], "ED"),
                   lambda: reads.undo_read(db, users["reader1"], cells[0])):
        with pytest.raises(ReadFrozenError, match="Consensus page"):
            change()
    assert reads.load_cell_view(db, users["reader1"], cells[0]).my_read.code == "EN"
    assert [r.code for r in read_history(db, users["reader1"].id, cells[0])] == ["EN"]


def test_seeing_the_consensus_queue_freezes_the_reads_it_lists(db, settled):
    users, _, cells = settled
    assert [i.cell_id for i in consensus.consensus_queue(db, users["reader2"])] == [cells[0]]
    with pytest.raises(ReadFrozenError):
        reads.record_read(db, users["reader2"], cells[0], "EN")


def test_a_change_of_mind_is_a_consensus_decision_and_agreement_keeps_the_blind_reads(db, settled):
    users, slide, cells = settled
    decision = consensus.decide(db, users["reader1"], cells[0], "ED", [], "reader_error")
    assert decision.code == "ED" and decision.decided_by == "reader1"
    stats = agreement.reader_agreement(db, users["adjudicator"], users["reader1"].id, users["reader2"].id,
                                       slide.scheme_name, slide.id)
    assert stats["overall"]["agreement"] == 0.0        # the disagreement is still on record
    assert list_audit(db, action="consensus")[0]["username"] == "reader1"


def test_a_reader_who_has_not_seen_the_other_read_may_still_change_theirs(db, settled):
    users, _, cells = settled
    reads.record_read(db, users["reader1"], cells[0], "GN")
    assert reads.load_cell_view(db, users["reader1"], cells[0]).my_read.code == "GN"


def test_a_reader_s_report_names_no_other_reader(db, study):
    users, slide, cells = study
    reads.record_read(db, users["reader1"], cells[0], "EN")
    reads.record_read(db, users["adjudicator"], cells[1], "EN")
    report = export.slide_report_html(db, users["reader2"], slide.id, "model")
    assert "reader1" not in report and "Readers and adjudicators: -." in report
    assert "reader1" in export.slide_report_html(db, users["admin"], slide.id, "final")


def test_the_report_refuses_a_disabled_account_and_a_reader_s_final_labels(db, study):
    import dataclasses
    users, slide, _ = study
    with pytest.raises(PermissionDeniedError):
        export.slide_report_html(db, dataclasses.replace(users["reader1"], active=False), slide.id, "model")
    with pytest.raises(PermissionDeniedError):
        export.slide_report_html(db, users["reader1"], slide.id, "final")


def test_home_tells_a_reader_only_their_own_progress(db, study):
    users, slide, cells = study
    for cell in cells[:3]:
        reads.record_read(db, users["reader1"], cell, "EN")
    mine = {r["case_id"]: r for r in views.home_slides(db, users["reader2"])}[slide.case_id]
    assert "labelled_cells" not in mine and mine["my_reads"] == 0
    assert "reads" not in views.home_counts(db, users["reader2"])
    assert views.home_counts(db, users["reader2"])["your reads"] == 0
    senior = {r["case_id"]: r for r in views.home_slides(db, users["adjudicator"])}[slide.case_id]
    assert senior["labelled_cells"] == 3


def test_the_home_page_shows_a_reader_no_labelled_cells_column(db, study, home):
    users, slide, cells = study
    reads.record_read(db, users["reader1"], cells[0], "EN")
    at = open_page("app.py", users["reader2"].id)
    table = at.dataframe[0].value
    assert "Labelled cells" not in table.columns and "Read by you" in table.columns
    assert "Reads" not in {m.label for m in at.metric}
