"""Gold cells (issue 17): served unmarked from other slides, scored, never counted, never told apart."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mdsdys.accounts import auth
from mdsdys.errors import MdsdysError, PermissionDeniedError
from mdsdys.imaging.decode import encode_png, sha256_hex
from mdsdys.report import numbers as summary
from mdsdys.review import agreement, gold
from mdsdys.review import reads as review
from mdsdys.store.consensus import put_decision
from mdsdys.store.labels import final_labels
from mdsdys.store.patches import StoredImage, add_cell, add_patch
from mdsdys.store.slides import ensure_default_scheme, ensure_slide


def _slide(db, name: str, n: int) -> tuple[int, list[int]]:
    slide, _ = ensure_slide(db, name, "mds8")
    data = encode_png(np.random.default_rng(len(name)).integers(0, 255, (40, 40 * n, 3), dtype=np.uint8))
    patch_id, _ = add_patch(db, slide.id, StoredImage(sha256_hex(data), 40 * n, 40, "image/png", data), f"{name}.png")
    return slide.id, [add_cell(db, slide.id, patch_id, (i * 40, 5, 30, 30), "detected")[0] for i in range(n)]


@pytest.fixture
def study(db):
    """S1 with four cells settled by consensus and marked gold; S2 with six cells to read; a 50% gold rate."""
    ensure_default_scheme(db)
    root = auth.create_user(db, "boss", "password-r", "admin")
    judge = auth.create_user(db, "judge", "password-j", "adjudicator")
    ann = auth.create_user(db, "ann", "password-a", "reader")
    s1, gold_cells = _slide(db, "S1", 4)
    s2, cells = _slide(db, "S2", 6)
    for cell, code in zip(gold_cells, ("ED", "EN", "GN", "GD")):
        put_decision(db, cell, code, [], "borderline_morphology", "", judge.id)
        gold.mark_gold(db, judge, cell)
    gold.set_gold_rate(db, root, 0.5)
    return {"root": root, "judge": judge, "ann": ann, "s1": s1, "s2": s2, "gold": gold_cells, "cells": cells}


def _read_whole_queue(db, reader, slide_id: int, code: str = "EN") -> list[int]:
    served = []
    while (cell := review.next_cell(db, reader, slide_id, "slide")) is not None:
        served.append(cell)
        review.record_read(db, reader, cell, code, reading_slide_id=slide_id)
    return served


def test_only_settled_cells_become_gold_and_only_for_adjudicators(db, study) -> None:
    with pytest.raises(PermissionDeniedError):
        gold.mark_gold(db, study["ann"], study["gold"][0])
    with pytest.raises(MdsdysError, match="no consensus"):
        gold.mark_gold(db, study["judge"], study["cells"][0])
    assert {row["cell"] for row in gold.gold_choices(db, study["judge"]) if row["gold"]} == set(study["gold"])
    with pytest.raises(MdsdysError, match="0 to 0.5"):
        gold.set_gold_rate(db, study["root"], 0.9)
    with pytest.raises(PermissionDeniedError):
        gold.set_gold_rate(db, study["judge"], 0.1)


def test_gold_cells_from_other_slides_turn_up_in_the_queue_at_the_rate(db, study) -> None:
    served = _read_whole_queue(db, study["ann"], study["s2"])
    assert sorted(c for c in served if c in study["gold"]) == sorted(set(served) & set(study["gold"]))
    assert len(set(served) & set(study["gold"])) == 3  # 50% of six cells
    assert set(served) - set(study["gold"]) == set(study["cells"])
    # Reading S1 itself never serves S1's own gold cells as calibration.
    assert gold.planned_gold(db, study["ann"].id, study["s1"], 4) == 0


def test_a_calibration_read_never_counts_in_any_slides_numbers(db, study) -> None:
    before = {s.slide_id: (s.counts, s.labelled) for s in summary.dashboard(db, study["judge"], "human")}
    served = _read_whole_queue(db, study["ann"], study["s2"], code="BL")
    assert set(served) & set(study["gold"])
    after = {s.slide_id: (s.counts, s.labelled) for s in summary.dashboard(db, study["judge"], "human")}
    assert after[study["s1"]] == before[study["s1"]]  # S1's gold cells keep their consensus class only
    assert after[study["s2"]][1] == 6
    assert not {c.cell_id for c in final_labels(db, "mds8") if c.label.source != "consensus"} & set(study["gold"])
    assert agreement.panel_agreement(db, study["judge"], "mds8")["cells_read_twice"] == 0


def test_progress_moves_by_one_for_every_cell_gold_or_not(db, study) -> None:
    reader, slide_id = study["ann"], study["s2"]
    start = review.review_progress(db, reader, slide_id)
    assert start == {"cells": 9, "reviewed": 0, "remaining": 9}
    remaining = [start["remaining"]]
    while (cell := review.next_cell(db, reader, slide_id, "slide")) is not None:
        review.record_read(db, reader, cell, "EN", reading_slide_id=slide_id)
        remaining.append(review.review_progress(db, reader, slide_id)["remaining"])
    assert remaining == list(range(9, -1, -1))


def test_the_cell_view_does_not_tell_a_gold_cell_apart(db, study) -> None:
    reader, slide_id = study["ann"], study["s2"]
    served = _read_whole_queue(db, reader, slide_id)
    gold_cell = next(c for c in served if c in study["gold"])
    normal_cell = next(c for c in served if c not in study["gold"])
    views = [review.load_cell_view(db, reader, c, reading_slide_id=slide_id) for c in (gold_cell, normal_cell)]
    assert [v.slide for v in views] == ["S2", "S2"]
    assert all(v.label != v.cell.id and 100_000_000 <= v.label < 1_000_000_000 for v in views)
    assert [v.my_read.code for v in views] == ["EN", "EN"]
    assert {f.name for f in dataclasses.fields(views[0])} == {f.name for f in dataclasses.fields(views[1])}
    assert not any("gold" in f.name or "calib" in f.name for f in dataclasses.fields(views[0]))


def test_readers_are_scored_on_their_first_answer_and_only_adjudicators_see_it(db, study) -> None:
    reader, slide_id = study["ann"], study["s2"]
    served = _read_whole_queue(db, reader, slide_id)
    gold_served = [c for c in served if c in study["gold"]]
    truth = dict(zip(study["gold"], ("ED", "EN", "GN", "GD")))
    first = review.undo_read(db, reader, gold_served[0], reading_slide_id=slide_id)
    assert first is None and review.load_cell_view(db, reader, gold_served[0], reading_slide_id=slide_id).my_read is None
    review.record_read(db, reader, gold_served[0], truth[gold_served[0]], reading_slide_id=slide_id)  # no better
    [row] = gold.reader_scores(db, study["judge"])
    assert row["reader"] == "ann" and row["answers"] == 3
    assert row["accuracy"] == pytest.approx(sum(truth[c] == "EN" for c in gold_served) / 3)
    assert set(row["per_lineage"]) <= {"erythroid", "granulocytic"} and row["drift"][0]["answers"] == 3
    with pytest.raises(PermissionDeniedError):
        gold.reader_scores(db, reader)


def test_a_reader_whose_accuracy_drops_is_flagged() -> None:
    window = gold.DRIFT_WINDOW
    assert gold._dropped([True] * window * 2 + [False] * window)
    assert not gold._dropped([True] * window * 3)
    assert not gold._dropped([False] * window)  # too few answers to compare


def test_the_readers_page_shows_the_scores_to_an_adjudicator(db, study, home) -> None:
    from conftest import open_page
    _read_whole_queue(db, study["ann"], study["s2"])
    at = open_page("pages/8_Readers.py", study["judge"].id)
    assert not at.exception and not at.error
    frame = at.dataframe[0].value
    assert list(frame["reader"]) == ["ann"] and list(frame["gold cells read"]) == [3]
    refused = open_page("pages/8_Readers.py", study["ann"].id)
    assert refused.error and not refused.dataframe


def test_the_gold_queries_walk_the_gold_cells_not_every_cell(db, study) -> None:
    """At 555,052 cells a plan that scans `cells` cost 23 ms on every key press (bench/scale.py)."""
    from mdsdys.store import gold as gold_store

    captured = []
    db.conn.set_trace_callback(captured.append)
    gold_store.count_gold_elsewhere(db, 1)
    gold_store.gold_candidates(db, 1, 1)
    db.conn.set_trace_callback(None)
    for sql in captured:
        plan = " | ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall())
        assert "SCAN c" not in plan, plan
        assert "SCAN g" in plan, plan
