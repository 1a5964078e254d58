"""Where every label comes from (issue 14 item 2): model-only numbers are never called final or labelled."""

import csv
import io
import re

import pytest

from mdsdys.accounts import auth
from mdsdys.report import export, provenance
from mdsdys.report import numbers as dashboard
from mdsdys.review import reads
from mdsdys.store.consensus import put_decision
from mdsdys.store.cells import save_proposals
from mdsdys.store.models import insert_model
from mdsdys.store.patches import StoredImage, add_cell, add_patch
from mdsdys.store.slides import ensure_default_scheme, ensure_slide

# Words that claim a person stood behind a number.
HUMAN_WORDS = re.compile(r"\b(final|labell?ed)\b", re.IGNORECASE)


@pytest.fixture
def slide(db):
    """A slide of 6 cells, every one with a model proposal; returns (slide id, cell ids, adjudicator, reader)."""
    ensure_default_scheme(db)
    slide, _ = ensure_slide(db, "BM-1", "mds8")
    patch_id, _ = add_patch(db, slide.id, StoredImage("sha", 100, 100, "image/png", b"x"), "f.png")
    cells = [add_cell(db, slide.id, patch_id, (i * 10, 0, 8, 8), "detected")[0] for i in range(6)]
    model = insert_model(db, "classifier", "v1", None, "resnet18", "/m.pt", {}, {}, None)
    save_proposals(db, model, {c: {"ED": 0.8, "EN": 0.2} for c in cells})
    judge = auth.create_user(db, "judge", "password-j", "adjudicator")
    reader = auth.create_user(db, "ann", "password-a", "reader")
    return slide.id, cells, judge, reader


def _visible_text(html: str) -> str:
    """The report's words people read: tags, scripts and styles removed."""
    html = re.sub(r"<script.*?</script>|<style.*?</style>", "", html, flags=re.S)
    return re.sub(r"<[^>]+>", " ", html)


@pytest.mark.parametrize("source", ["final", "model"])
def test_a_slide_no_one_has_read_is_never_called_final_or_labelled(db, slide, source):
    slide_id, _, judge, _ = slide
    sources = provenance.label_sources(db)
    rows = dashboard.summary_table(dashboard.dashboard(db, judge, source), sources, source)
    assert not any(HUMAN_WORDS.search(column) for column in rows[0])
    assert rows[0]["human-read"] == 0 and rows[0]["model-only"] == 6 and rows[0]["model share %"] == 100.0
    title = provenance.source_title(source, sources[slide_id])
    assert "Model proposals, not verified" in title and not HUMAN_WORDS.search(title)
    report = export.slide_report_html(db, judge, slide_id, source)
    assert "Model proposals, not verified" in report.split("<title>")[1].split("</title>")[0]
    assert 'class="banner model"' in report  # the banner repeats on every printed page
    assert not HUMAN_WORDS.search(_visible_text(report))
    cells_csv = list(csv.DictReader(io.StringIO(export.cells_csv(db, judge, slide_id).decode())))
    assert all(row["final_class"] == "" and row["model_class"] == "ED" for row in cells_csv)
    assert {row["final_source"] for row in cells_csv} == {"model proposal only, not verified"}


def test_sources_count_human_reads_consensus_and_model_only_per_slide(db, slide):
    slide_id, cells, judge, reader = slide
    other = auth.create_user(db, "bob", "password-b", "reader")
    reads.record_read(db, reader, cells[0], "EN")  # one read
    reads.record_read(db, reader, cells[1], "EN")
    reads.record_read(db, other, cells[1], "ED")  # readers disagree: the model stands in for 'final'
    put_decision(db, cells[2], "EN", [], "other", "settled at the microscope", judge.id)
    counted = provenance.label_sources(db)[slide_id]
    assert (counted.human_read, counted.consensus, counted.model_only, counted.disputed) == (2, 1, 3, 1)
    assert counted.model_cells("final") == 4 and counted.model_share("final") == pytest.approx(4 / 6)
    title = provenance.source_title("final", counted)
    assert title.startswith("Partly model proposals, not verified") and "4 of 6" in title
    assert counted.model_share("human") == 0.0
    assert provenance.source_title("human", counted).startswith("Human labels")
    sentence = provenance.source_sentence(counted)
    assert "2 human-read" in sentence and "1 settled by consensus" in sentence and "3 model-only" in sentence


def test_the_review_state_filter_counts_cells_read_by_a_person_not_proposals(db, slide):
    slide_id, cells, judge, reader = slide
    summaries = dashboard.dashboard(db, judge, "model")
    sources = provenance.label_sources(db)
    assert dashboard.filter_summaries(summaries, ["(none)"], "no cell read", sources)
    assert not dashboard.filter_summaries(summaries, ["(none)"], "every cell read", sources)
    reads.record_read(db, reader, cells[0], "EN")
    sources = provenance.label_sources(db)
    assert dashboard.filter_summaries(summaries, ["(none)"], "partly read", sources)
