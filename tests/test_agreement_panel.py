"""Agreement among every reader of a cell and of the slide-level dysplasia % (issue 17)."""

from __future__ import annotations

import numpy as np
import pytest

from mdsdys import stats
from mdsdys.accounts import auth
from mdsdys.errors import PermissionDeniedError
from mdsdys.imaging.decode import encode_png, sha256_hex
from mdsdys.review import agreement
from mdsdys.review import reads as review
from mdsdys.store.patches import StoredImage, add_cell, add_patch
from mdsdys.store.slides import ensure_default_scheme, ensure_slide


def _slide(db, name: str, n: int) -> list[int]:
    slide, _ = ensure_slide(db, name, "mds8")
    data = encode_png(np.random.default_rng(len(name)).integers(0, 255, (40, 40 * n, 3), dtype=np.uint8))
    patch_id, _ = add_patch(db, slide.id, StoredImage(sha256_hex(data), 40 * n, 40, "image/png", data), f"{name}.png")
    return [add_cell(db, slide.id, patch_id, (i * 40, 5, 30, 30), "detected")[0] for i in range(n)]


@pytest.fixture
def panel(db):
    ensure_default_scheme(db)
    readers = [auth.create_user(db, name, f"password-{name}", "reader") for name in ("ann", "bob", "cat")]
    judge = auth.create_user(db, "judge", "password-j", "adjudicator")
    return readers, judge


def test_fleiss_kappa_needs_three_readers_and_matches_the_statistic(db, panel) -> None:
    (ann, bob, cat), judge = panel
    cells = _slide(db, "S1", 4)
    reads = [("EN", "EN", "EN"), ("ED", "EN", "ED"), ("GN", "GN", "GN"), ("GD", "GN", "GN")]
    for cell, codes in zip(cells, reads):
        for reader, code in zip((ann, bob, cat), codes):
            review.record_read(db, reader, cell, code)
    result = agreement.panel_agreement(db, judge, "mds8")
    table = stats.rating_table(reads, ["EN", "ED", "GN", "GD", "MN", "MD", "BL", "OT"])
    assert result["cells_read_by_three"] == 4
    assert result["fleiss_kappa"] == pytest.approx(stats.fleiss_kappa(table))
    assert result["ac1_panel"] == pytest.approx(stats.gwet_ac1(table))
    with pytest.raises(PermissionDeniedError):
        agreement.panel_agreement(db, ann, "mds8")


def test_two_readers_give_no_fleiss_kappa(db, panel) -> None:
    (ann, bob, _), judge = panel
    cell = _slide(db, "S1", 1)[0]
    review.record_read(db, ann, cell, "EN")
    review.record_read(db, bob, cell, "EN")
    result = agreement.panel_agreement(db, judge, "mds8")
    assert result["fleiss_kappa"] is None and result["cells_read_twice"] == 1


def test_slide_percentages_give_icc_and_bland_altman(db, panel) -> None:
    (ann, bob, _), judge = panel
    plan = {"S1": (["ED"] * 2 + ["EN"] * 8, ["ED"] * 1 + ["EN"] * 9),
            "S2": (["ED"] * 5 + ["EN"] * 5, ["ED"] * 6 + ["EN"] * 4),
            "S3": (["EN"] * 10, ["EN"] * 10)}
    for name, (a_codes, b_codes) in plan.items():
        cells = _slide(db, name, 10)
        for cell, a, b in zip(cells, a_codes, b_codes):
            review.record_read(db, ann, cell, a)
            review.record_read(db, bob, cell, b)
    result = agreement.slide_percent_agreement(db, judge, [ann.id, bob.id], "mds8")
    erythroid = result["erythroid"]
    assert erythroid["slides"] == 3
    assert erythroid["icc"] == pytest.approx(stats.icc_agreement(np.array([[20, 10], [50, 60], [0, 0]])))
    assert erythroid["bland_altman"]["bias"] == pytest.approx(0.0)
    assert result["granulocytic"]["slides"] == 0 and result["granulocytic"]["icc"] is None
    assert result["granulocytic"]["bland_altman"] is None
