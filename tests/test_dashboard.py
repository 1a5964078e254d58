"""Slide numbers: dysplasia % with Wilson intervals and WHO calls, blast bands, M:E, label sources."""

import math

import pytest

from mdsdys.accounts import auth
from mdsdys.report import numbers as dashboard
from mdsdys.review import reads
from mdsdys.schemes import default_scheme
from mdsdys.store.cells import save_proposals
from mdsdys.store.models import insert_model
from mdsdys.store.patches import StoredImage, add_cell, add_patch
from mdsdys.store.slides import ensure_default_scheme, ensure_slide

SCHEME = default_scheme()


def _summary(counts):
    return dashboard.summarise_slide(1, "S1", None, SCHEME, counts)


def _lineage(summary, name):
    return next(d for d in summary.dysplasia if d.lineage == name)


def test_a_slide_with_no_cells_has_no_percentages_and_is_indeterminate():
    s = _summary({})
    assert s.nucleated == 0 and s.me_ratio is None and s.blast_band is None
    ery = _lineage(s, "erythroid")
    assert ery.share.value is None and (ery.share.low, ery.share.high) == (0.0, 1.0)
    assert ery.flag == dashboard.INDETERMINATE


def test_all_dysplastic_erythroid_is_clearly_over_the_line():
    ery = _lineage(_summary({"ED": 200}), "erythroid")
    assert ery.share.value == 1.0 and ery.flag == ">=10%"
    assert ery.share.low == pytest.approx(0.98116, abs=1e-4)  # Wilson, z = 1.96, hand-computed


def test_an_interval_straddling_ten_percent_is_indeterminate():
    gran = _lineage(_summary({"GN": 225, "GD": 25}), "granulocytic")
    assert gran.share.value == pytest.approx(0.10)
    assert gran.share.low < 0.10 < gran.share.high and gran.flag == dashboard.INDETERMINATE


def test_a_low_rate_on_enough_cells_is_below_the_line():
    gran = _lineage(_summary({"GN": 240, "GD": 10}), "granulocytic")
    assert gran.share.high < 0.10 and gran.flag == "<10%"


def test_too_few_megakaryocytes_is_indeterminate_even_at_100_percent():
    assert _lineage(_summary({"MD": 29}), "megakaryocytic").flag == dashboard.INDETERMINATE
    assert _lineage(_summary({"MD": 30}), "megakaryocytic").flag == ">=10%"


@pytest.mark.parametrize("blasts, band", [(4, "<5%"), (5, "5-9%"), (9, "5-9%"), (10, "10-19%"), (20, ">=20%")])
def test_blast_bands_at_the_who_limits(blasts, band):
    s = _summary({"BL": blasts, "OT": 100 - blasts})
    assert s.blasts.value == pytest.approx(blasts / 100) and s.blast_band == band


def test_me_ratio_counts_granulocytic_over_erythroid_cells():
    s = _summary({"GN": 30, "GD": 10, "EN": 15, "ED": 5, "BL": 3})
    assert s.me_ratio == pytest.approx(2.0) and s.nucleated == 63


def test_unlabelled_cells_count_as_nucleated_but_not_in_percentages():
    s = _summary({None: 50, "EN": 50})
    assert s.nucleated == 100 and s.labelled == 50 and s.reviewed_fraction == 0.5
    assert s.blasts.n == 50


def test_label_sources_differ_where_readers_overrule_the_model(db):
    ensure_default_scheme(db)
    slide, _ = ensure_slide(db, "S1", "mds8")
    patch_id, _ = add_patch(db, slide.id, StoredImage("x", 100, 100, "image/png", b"x"), "f.png")
    cells = [add_cell(db, slide.id, patch_id, (i, 0, 5, 5), "detected")[0] for i in range(4)]
    model = insert_model(db, "classifier", "v1", None, "resnet18", "/m.pt", {}, {}, None)
    save_proposals(db, model, {c: {"EN": 0.9, "ED": 0.1} for c in cells})
    ann = auth.create_user(db, "ann", "password-a", "reader")
    reads.record_read(db, ann, cells[0], "ED")
    judge = auth.create_user(db, "judge", "password-j", "adjudicator")
    by_source = {src: dashboard.dashboard(db, judge, src)[0] for src in ("final", "human", "model")}
    assert by_source["model"].counts == {"EN": 4}
    assert by_source["final"].counts == {"ED": 1, "EN": 3}
    assert by_source["human"].counts == {"ED": 1} and by_source["human"].labelled == 1
    assert math.isclose(_lineage(by_source["final"], "erythroid").share.value, 0.25)


def test_readers_see_only_model_numbers_so_blinding_holds(db):
    from mdsdys.errors import PermissionDeniedError
    ann = auth.create_user(db, "ann", "password-a", "reader")
    assert dashboard.allowed_sources(ann) == ("model",)
    with pytest.raises(PermissionDeniedError):
        dashboard.dashboard(db, ann, "final")
    assert dashboard.dashboard(db, ann, "model") == []


def test_fast_slide_counts_match_the_reference_precedence_on_random_labels(db):
    """The dashboard's SQL shortcut must count exactly what resolve_final_label gives cell by cell."""
    import random
    from collections import Counter

    from mdsdys.store.cells import list_cells, model_labels
    from mdsdys.store.consensus import put_decision
    from mdsdys.store.dashboard import label_counts
    from mdsdys.store.labels import final_labels
    from mdsdys.store.reads import put_read
    from mdsdys.store.users import insert_user
    rng = random.Random(7)
    ensure_default_scheme(db)
    model = insert_model(db, "classifier", "v1", None, "resnet18", "/m.pt", {}, {}, None)
    readers = [insert_user(db, f"r{i}", "reader", "h") for i in range(3)]
    codes = list(SCHEME.codes)
    for s in range(3):
        slide, _ = ensure_slide(db, f"S{s}", "mds8")
        patch_id, _ = add_patch(db, slide.id, StoredImage(f"sha{s}", 100, 100, "image/png", b"x"), "f.png")
        cells = [add_cell(db, slide.id, patch_id, (i, s, 5, 5), "detected")[0] for i in range(60)]
        save_proposals(db, model, {c: {rng.choice(codes): 1.0} for c in cells if rng.random() < 0.8})
        for cell in cells:
            for reader in rng.sample(readers, rng.choice([0, 0, 1, 2, 3])):
                put_read(db, cell, reader.id, rng.choice(codes[:3]))
            if rng.random() < 0.1:
                put_decision(db, cell, rng.choice(codes), [], "other", "x", readers[0].id)
    for source in ("final", "human", "model"):
        fast = label_counts(db, source)
        for slide_id in fast:
            if source == "model":
                reference = Counter(model_labels(db, slide_id).values())
            else:
                labels = final_labels(db, "mds8", slide_id, human_only=source == "human")
                reference = Counter(c.label.code for c in labels)
            total = len(list_cells(db, slide_id))
            unlabelled = total - sum(reference.values())
            expected = dict(reference) | ({None: unlabelled} if unlabelled else {})
            assert fast[slide_id] == expected, (source, slide_id)
