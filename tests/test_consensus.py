"""Consensus: which cells need it, who sees what, and the decision record."""

import numpy as np
import pytest
from conftest import open_page

from mdsdys.accounts import auth
from mdsdys.errors import MdsdysError, PermissionDeniedError
from mdsdys.imaging.decode import encode_png, sha256_hex
from mdsdys.registry import retrain
from mdsdys.review import consensus
from mdsdys.review import reads as review
from mdsdys.store.audit import list_audit
from mdsdys.store.cells import save_proposals
from mdsdys.store.labels import final_labels
from mdsdys.store.models import insert_model
from mdsdys.store.patches import StoredImage, add_cell, add_patch
from mdsdys.store.reads import own_read
from mdsdys.store.slides import ensure_default_scheme, ensure_slide
from mdsdys.review.gold import cell_label


@pytest.fixture
def readers(db):
    """Five cells read by ann and bob: same, class-only differences, dysplastic differences, one unread by bob."""
    ensure_default_scheme(db)
    slide, _ = ensure_slide(db, "S1", "mds8")
    data = encode_png(np.zeros((60, 200, 3), np.uint8))
    patch_id, _ = add_patch(db, slide.id, StoredImage(sha256_hex(data), 200, 60, "image/png", data), "f.png")
    cells = [add_cell(db, slide.id, patch_id, (i * 40, 5, 30, 30), "detected")[0] for i in range(5)]
    ann = auth.create_user(db, "ann", "password-a", "reader")
    bob = auth.create_user(db, "bob", "password-b", "reader")
    judge = auth.create_user(db, "judge", "password-j", "adjudicator")
    pairs = [("EN", "EN"), ("EN", "GN"), ("EN", "ED"), ("GD", "GN"), ("BL", None)]
    for cell, (a, b) in zip(cells, pairs):
        review.record_read(db, ann, cell, a)
        if b:
            review.record_read(db, bob, cell, b)
    model = insert_model(db, "classifier", "v1", None, "resnet18", "/m.pt", {}, {}, None)
    save_proposals(db, model, {cells[0]: {"GN": 0.8, "EN": 0.2}})
    return slide, cells, ann, bob, judge


def _ids(items):
    return [item.cell_id for item in items]


def test_queues_hold_the_constructed_cases(db, readers):
    _, cells, _, _, judge = readers
    assert _ids(consensus.consensus_queue(db, judge, "disagree_class")) == cells[1:4]
    assert _ids(consensus.consensus_queue(db, judge, "disagree_dysplastic")) == [cells[2], cells[3]]
    assert _ids(consensus.consensus_queue(db, judge, "agree_not_model")) == [cells[0]]


def test_a_decision_leaves_the_queue_and_the_reads_unchanged(db, readers):
    _, cells, ann, bob, judge = readers
    decision = consensus.decide(db, judge, cells[2], "ED", ["nuclear budding"], "borderline_morphology")
    assert decision.code == "ED" and decision.decided_by == "judge"
    assert cells[2] not in _ids(consensus.consensus_queue(db, judge, "disagree_class"))
    assert own_read(db, ann.id, cells[2]).code == "EN" and own_read(db, bob.id, cells[2]).code == "ED"
    final = {c.cell_id: c.label for c in final_labels(db, "mds8")}
    assert final[cells[2]].source == "consensus" and final[cells[0]].source == "agreed"
    assert final[cells[4]].source == "single"


def test_other_needs_free_text_and_the_reason_must_be_known(db, readers):
    _, cells, _, _, judge = readers
    with pytest.raises(MdsdysError, match="needs a few words"):
        consensus.decide(db, judge, cells[1], "EN", [], "other")
    with pytest.raises(MdsdysError, match="Choose a reason"):
        consensus.decide(db, judge, cells[1], "EN", [], "because")
    assert consensus.decide(db, judge, cells[1], "EN", [], "other", "smudged").reason_text == "smudged"


def test_readers_settle_only_when_the_admin_allows_and_only_cells_they_read(db, readers):
    _, cells, ann, bob, _ = readers
    admin = auth.create_user(db, "boss", "password-x", "admin")
    with pytest.raises(PermissionDeniedError):
        consensus.consensus_queue(db, ann, "disagree_class")
    consensus.set_readers_may_settle(db, admin, True)
    carl = auth.create_user(db, "carl", "password-c", "reader", by=admin)
    assert _ids(consensus.consensus_queue(db, ann, "disagree_class")) == cells[1:4]
    assert consensus.consensus_queue(db, carl, "disagree_class") == []
    with pytest.raises(PermissionDeniedError, match="Read this cell yourself"):
        consensus.unblinded_reads(db, carl, cells[1])


def test_a_cell_with_one_read_stays_blind_even_for_adjudicators(db, readers):
    _, cells, _, _, judge = readers
    with pytest.raises(PermissionDeniedError, match="fewer than two reads"):
        consensus.unblinded_reads(db, judge, cells[4])


def test_consensus_is_audited_with_before_and_after(db, readers):
    _, cells, _, _, judge = readers
    consensus.decide(db, judge, cells[3], "GD", [], "reader_error")
    consensus.decide(db, judge, cells[3], "GN", [], "stain_artefact")
    rows = list_audit(db, action="consensus")
    assert len(rows) == 2 and '"GD"' in rows[0]["before"] and '"GN"' in rows[0]["after"]


def test_adjudicator_settles_from_the_keyboard_in_apptest(db, readers, home):
    _, cells, ann, bob, judge = readers
    at = open_page("pages/4_Consensus.py", judge.id)
    assert not at.exception and not at.error
    at.button(key="consensus_class_GN").click().run()
    assert not at.exception and not at.error
    final = {c.cell_id: c.label for c in final_labels(db, "mds8")}
    assert final[cells[1]].code == "GN" and final[cells[1]].source == "consensus"
    assert any(f"Cell {cell_label(db, cells[2])}" in c.value for c in at.caption)


def test_audit_rows_cover_each_kind_of_action_so_far(db, readers):
    _, cells, ann, _, judge = readers
    admin = auth.create_user(db, "boss", "password-x", "admin")
    auth.authenticate(db, "ann", "password-a")
    with pytest.raises(MdsdysError):
        auth.authenticate(db, "ann", "wrong-password")
    review.record_read(db, ann, cells[0], "GN")
    consensus.decide(db, judge, cells[1], "GN", [], "reader_error")
    auth.change_role(db, admin, ann.id, "adjudicator")
    actions = {row["action"] for row in list_audit(db)}
    assert {"user_create", "login", "login_failed", "read", "read_change", "consensus", "user_role"} <= actions


def test_admin_audit_view_filters_and_exports_csv(db, readers):
    from mdsdys.accounts import admin as admin_actions
    _, cells, ann, _, judge = readers
    boss = auth.create_user(db, "boss", "password-x", "admin")
    rows = admin_actions.audit_rows(db, boss, action="read", username="ann")
    assert rows and all(r["action"] == "read" and r["username"] == "ann" for r in rows)
    text = admin_actions.audit_csv(rows).decode()
    assert text.splitlines()[0].startswith("id,at,username,action")
    assert len(text.splitlines()) == len(rows) + 1
    with pytest.raises(PermissionDeniedError):
        admin_actions.audit_rows(db, judge)


@pytest.mark.slow
def test_one_audit_row_for_each_kind_of_action(db, home, tmp_path):
    """Reads, consensus, masks, imports, exports, training, promotion, rollback, accounts and logins."""
    from conftest import image_bytes

    from mdsdys.annotate import masks
    from mdsdys.config import load_settings
    from mdsdys.demo.study import build_demo
    from mdsdys.ingest import importer
    from mdsdys.registry import promotion
    from mdsdys.report import export
    from mdsdys.segment import train
    from mdsdys.store.models import list_models
    from mdsdys.store.patches import annotation_queue
    from mdsdys.store.slides import list_slides
    build_demo(db, seed=0, patches_per_slide=4, training_cells_per_class=3)
    boss = auth.authenticate(db, "admin", "demo-admin-pass")
    with pytest.raises(MdsdysError):
        auth.authenticate(db, "reader1", "wrong-password")
    judge = auth.authenticate(db, "adjudicator", "demo-adjudicator")
    reader = auth.authenticate(db, "reader1", "demo-reader-1")
    new = auth.create_user(db, "carl", "password-c", "reader", by=boss)
    auth.change_role(db, boss, new.id, "adjudicator")
    slide = list_slides(db)[0]
    field = importer.import_patches(db, slide.case_id, [importer.SourceFile("x.png", lambda: image_bytes(9))])
    assert field.added == 1
    first = annotation_queue(db)[0]
    masks.save_annotation(db, reader, first["id"], np.full((first["height"], first["width"]), 255, np.uint8))
    cell = db.execute("SELECT id FROM cells WHERE slide_id = ? LIMIT 1", [slide.id]).fetchone()[0]
    review.record_read(db, reader, cell, "EN")
    review.record_read(db, reader, cell, "ED")
    review.record_read(db, auth.authenticate(db, "reader2", "demo-reader-2"), cell, "GN")
    consensus.decide(db, judge, cell, "ED", [], "reader_error")
    export.cells_csv(db, judge, slide.id)
    config = train.SegTrainConfig(epochs=1, steps_per_epoch=1, batch_size=2, crop=64, max_seconds=None)
    retrain.train_segmenter_from_store(load_settings(), config, boss)
    retrain.train_segmenter_from_store(load_settings(), config, boss)
    first_model, second_model = sorted(m.id for m in list_models(db, "segmenter"))
    promotion.promote(db, load_settings(), boss, second_model, force=True, start_worker=False)
    promotion.rollback(db, load_settings(), boss, first_model, start_worker=False)
    actions = {row["action"] for row in list_audit(db, limit=10_000)}
    assert {"login", "login_failed", "user_create", "user_role", "import_patches", "import_cells", "mask_save",
            "read", "read_change", "consensus", "export", "model_train", "model_promote", "model_rollback",
            "job_queue"} <= actions
