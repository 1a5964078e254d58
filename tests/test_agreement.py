"""Reader agreement: kappa against hand-computed values, per lineage and class, and slide decisions."""

import numpy as np
import pytest

from mdsdys.accounts import auth
from mdsdys.errors import PermissionDeniedError
from mdsdys.imaging.decode import encode_png, sha256_hex
from mdsdys.review import agreement, consensus, reads
from mdsdys.store.cells import save_proposals
from mdsdys.store.models import insert_model
from mdsdys.store.patches import StoredImage, add_cell, add_patch
from mdsdys.store.slides import ensure_default_scheme, ensure_slide

A = ["EN", "EN", "EN", "EN", "EN", "GN", "GN", "GN", "GN", "GN"]
B = ["EN", "EN", "EN", "EN", "GN", "GN", "GN", "GN", "GN", "EN"]


@pytest.fixture
def pair(db):
    ensure_default_scheme(db)
    slide, _ = ensure_slide(db, "S1", "mds8")
    data = encode_png(np.zeros((20, 400, 3), np.uint8))
    patch_id, _ = add_patch(db, slide.id, StoredImage(sha256_hex(data), 400, 20, "image/png", data), "f.png")
    cells = [add_cell(db, slide.id, patch_id, (i * 20, 0, 10, 10), "detected")[0] for i in range(10)]
    ann = auth.create_user(db, "ann", "password-a", "reader")
    bob = auth.create_user(db, "bob", "password-b", "reader")
    judge = auth.create_user(db, "judge", "password-j", "adjudicator")
    for cell, a, b in zip(cells, A, B):
        reads.record_read(db, ann, cell, a)
        reads.record_read(db, bob, cell, b)
    return slide, cells, ann, bob, judge


def test_overall_kappa_matches_the_hand_computed_value(db, pair):
    _, _, ann, bob, judge = pair
    result = agreement.reader_agreement(db, judge, ann.id, bob.id, "mds8")
    # observed 8/10; chance 0.5*0.5 + 0.5*0.5 = 0.5; kappa = (0.8 - 0.5) / (1 - 0.5) = 0.6
    assert result["overall"]["kappa"] == pytest.approx(0.6) and result["overall"]["agreement"] == 0.8
    assert result["overall"]["n"] == 10
    en, gn = result["codes"].index("EN"), result["codes"].index("GN")
    assert result["confusion"][en][en] == 4 and result["confusion"][en][gn] == 1 and result["confusion"][gn][en] == 1


def test_per_class_and_per_lineage_agreement(db, pair):
    _, _, ann, bob, judge = pair
    result = agreement.reader_agreement(db, judge, ann.id, bob.id, "mds8")
    assert result["per_class"]["EN"]["kappa"] == pytest.approx(0.6)
    assert result["per_class"]["BL"]["agreement"] == 1.0
    assert result["per_lineage"]["erythroid"]["n"] == 4 and result["per_lineage"]["erythroid"]["agreement"] == 1.0


def test_each_reader_against_consensus_and_the_model_against_final_labels(db, pair):
    _, cells, ann, bob, judge = pair
    consensus.decide(db, judge, cells[4], "GN", [], "reader_error")
    consensus.decide(db, judge, cells[9], "GN", [], "reader_error")
    assert agreement.against_consensus(db, judge, ann.id)["agreement"] == 0.5
    assert agreement.against_consensus(db, judge, bob.id)["agreement"] == 0.5
    model = insert_model(db, "classifier", "v1", None, "resnet18", "/m.pt", {}, {}, None)
    save_proposals(db, model, {c: {code: 1.0} for c, code in zip(cells, A)})
    versus_model = agreement.model_against_final(db, judge, "mds8")
    # Final labels: 8 agreed + 2 consensus (GN, GN) = A except cell 4 -> 9/10 agree with the model (A).
    assert versus_model["n"] == 10 and versus_model["agreement"] == 0.9 and versus_model["cellavision_kappa"] == 0.52


def test_decision_level_agreement_per_slide(db, pair):
    slide, cells, ann, bob, judge = pair
    rows = agreement.decision_agreement(db, judge, ann.id, bob.id)
    assert rows[0]["slide"] == "S1" and rows[0]["same blast band"] is True
    assert rows[0]["erythroid same side of 10%"] is True  # both 0% erythroid dysplasia


def test_agreement_views_are_for_adjudicators(db, pair):
    _, _, ann, bob, _ = pair
    with pytest.raises(PermissionDeniedError):
        agreement.reader_agreement(db, ann, ann.id, bob.id, "mds8")


def test_agreement_view_renders_on_the_consensus_page(db, pair, home):
    from conftest import open_page
    _, _, _, _, judge = pair
    at = open_page("pages/4_Consensus.py", judge.id)
    at.radio(key="consensus_view").set_value("Agreement statistics").run()
    assert not at.exception and not at.error
    kappa = {m.label: m.value for m in at.metric}["Cohen's kappa (95% CI)"]
    # A handful of pairs: no kappa is shown without enough cells, but always its n (issue 14).
    assert kappa.startswith("too few cells to estimate (n=") or kappa.startswith("0.60 (")
