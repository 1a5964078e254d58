"""'Can't assess' as a read (issue 17): out of the counts and training, counted per slide, to consensus."""

from __future__ import annotations

import numpy as np
import pytest

from mdsdys.accounts import auth
from mdsdys.errors import MdsdysError, SchemeError
from mdsdys.imaging.decode import encode_png, sha256_hex
from mdsdys.schemes import UNASSESSABLE, LabelClass, LabelScheme, validate_scheme
from mdsdys.report import numbers as summary
from mdsdys.review import consensus, counting
from mdsdys.review import reads as review
from mdsdys.store.labels import final_labels
from mdsdys.store.patches import StoredImage, add_cell, add_patch
from mdsdys.store.slides import ensure_default_scheme, ensure_slide


@pytest.fixture
def two_readers(db):
    ensure_default_scheme(db)
    slide, _ = ensure_slide(db, "S1", "mds8")
    data = encode_png(np.random.default_rng(0).integers(0, 255, (40, 160, 3), dtype=np.uint8))
    patch_id, _ = add_patch(db, slide.id, StoredImage(sha256_hex(data), 160, 40, "image/png", data), "f.png")
    cells = [add_cell(db, slide.id, patch_id, (i * 40, 5, 30, 30), "detected")[0] for i in range(4)]
    ann = auth.create_user(db, "ann", "password-a", "reader")
    bob = auth.create_user(db, "bob", "password-b", "reader")
    judge = auth.create_user(db, "judge", "password-j", "adjudicator")
    return slide, cells, ann, bob, judge


def test_a_cant_assess_read_needs_a_known_reason(db, two_readers) -> None:
    _, cells, ann, _, _ = two_readers
    with pytest.raises(MdsdysError, match="Say why"):
        review.record_unassessable(db, ann, cells[0], "ugly")
    read = review.record_unassessable(db, ann, cells[0], "out_of_focus")
    assert read.code == UNASSESSABLE and read.tags == ("out_of_focus",)
    assert review.describe_read(read) == "can't assess: out of focus"
    assert review.undo_read(db, ann, cells[0]) is None  # undo works as for any read


def test_cant_assess_cells_leave_the_counts_and_are_counted_per_slide(db, two_readers) -> None:
    slide, cells, ann, bob, judge = two_readers
    for reader in (ann, bob):
        review.record_unassessable(db, reader, cells[0], "debris")
        review.record_read(db, reader, cells[1], "EN")
    row = next(s for s in summary.dashboard(db, judge, "human") if s.slide_id == slide.id)
    assert row.unassessable == 1 and row.nucleated == 3 and row.labelled == 1
    assert summary.summary_table([row])[0]["can't assess"] == 1
    assert {s.name: s.n for s in counting.reader_states(db, ann, slide.id)}["erythroid"] == 1


def test_cant_assess_cells_never_reach_a_training_set(db, two_readers, monkeypatch) -> None:
    from mdsdys.classify import proposals
    slide, cells, ann, _, _ = two_readers
    review.record_unassessable(db, ann, cells[0], "broken_cell")
    review.record_read(db, ann, cells[1], "GN")
    assert UNASSESSABLE in {c.label.code for c in final_labels(db, "mds8", human_only=True)}
    samples = proposals.training_samples(db, "mds8")
    assert [s.cell_id for s in samples] == [cells[1]]


def test_cant_assess_against_a_class_goes_to_consensus_and_can_be_settled_so(db, two_readers) -> None:
    slide, cells, ann, bob, judge = two_readers
    review.record_unassessable(db, ann, cells[0], "overlap")
    review.record_read(db, bob, cells[0], "ED")
    for queue in ("disagree_class", "disagree_dysplastic"):
        assert [i.cell_id for i in consensus.consensus_queue(db, judge, queue)] == [cells[0]]
    with pytest.raises(MdsdysError, match="one reason"):
        consensus.decide(db, judge, cells[0], UNASSESSABLE, [], "overlapping_cells")
    consensus.decide(db, judge, cells[0], UNASSESSABLE, ["overlap"], "overlapping_cells")
    row = next(s for s in summary.dashboard(db, judge, "final") if s.slide_id == slide.id)
    assert row.unassessable == 1


def test_no_scheme_may_use_the_cant_assess_code_or_key() -> None:
    base = [LabelClass("A", "a", "erythroid", False, "1", "#000000"), LabelClass("B", "b", "other", None, "2", "#000000")]
    with pytest.raises(SchemeError, match="kept for can't-assess"):
        validate_scheme(LabelScheme("s", (*base, LabelClass(UNASSESSABLE, "x", "other", None, "3", "#000000"))))
    with pytest.raises(SchemeError, match="action keys"):
        validate_scheme(LabelScheme("s", (*base, LabelClass("C", "c", "other", None, "x", "#000000"))))
