"""Agreement statistics against published worked examples (issue 17); undefined cases are None."""

from __future__ import annotations

import numpy as np
import pytest

from mdsdys import stats

# Fleiss (1971): 30 patients, 6 psychiatrists, 5 diagnoses (as in R irr's `diagnoses`); kappa 0.430.
FLEISS_1971 = np.array([
    [4, 4, 4, 4, 4, 4], [2, 2, 2, 5, 5, 5], [2, 3, 3, 3, 3, 5], [5, 5, 5, 5, 5, 5], [2, 2, 2, 4, 4, 4],
    [1, 1, 3, 3, 3, 3], [3, 3, 3, 3, 5, 5], [1, 1, 3, 3, 3, 4], [1, 1, 4, 4, 4, 4], [5, 5, 5, 5, 5, 5],
    [1, 4, 4, 4, 4, 4], [1, 2, 4, 4, 4, 4], [2, 2, 2, 3, 3, 3], [1, 4, 4, 4, 4, 4], [2, 2, 4, 4, 4, 5],
    [3, 3, 3, 3, 3, 5], [1, 1, 1, 4, 5, 5], [1, 1, 1, 1, 1, 2], [2, 2, 4, 4, 4, 4], [1, 3, 3, 5, 5, 5],
    [5, 5, 5, 5, 5, 5], [2, 4, 4, 4, 4, 4], [2, 2, 4, 5, 5, 5], [1, 1, 4, 4, 4, 4], [1, 4, 4, 4, 4, 5],
    [2, 2, 2, 2, 2, 4], [1, 1, 1, 1, 5, 5], [2, 2, 4, 4, 4, 4], [1, 3, 3, 3, 3, 3], [5, 5, 5, 5, 5, 5]])
# The textbook 10 items x 14 raters x 5 categories table (Wikipedia, "Fleiss' kappa"): kappa 0.210.
FOURTEEN_RATERS = np.array([
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])
# Gwet (2014) abstractors: two raters, 100 pregnancies as ectopic / AIU / NIU (irrCAC `cont3x3abstractors`).
ABSTRACTORS = np.array([[13, 0, 0], [0, 20, 7], [0, 4, 56]])
# Shrout & Fleiss (1979), Table 2: 6 targets x 4 judges.
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])
# Bland & Altman (1986), Table 1: PEFR (l/min), first Wright and first mini Wright reading of 17 subjects.
WRIGHT = [494, 395, 516, 434, 476, 557, 413, 442, 650, 433, 417, 656, 267, 478, 178, 423, 427]
MINI_WRIGHT = [512, 430, 520, 428, 500, 600, 364, 380, 658, 445, 432, 626, 260, 477, 259, 350, 451]


def _pairs_from_contingency(table: np.ndarray) -> list[tuple[int, int]]:
    return [(i, j) for i in range(table.shape[0]) for j in range(table.shape[1]) for _ in range(table[i, j])]


def test_fleiss_kappa_matches_fleiss_1971() -> None:
    table = stats.rating_table(FLEISS_1971.tolist(), [1, 2, 3, 4, 5])
    assert stats.fleiss_kappa(table) == pytest.approx(0.4302445, abs=1e-7)  # Fleiss: 0.430


def test_fleiss_kappa_matches_the_fourteen_rater_example() -> None:
    assert stats.fleiss_kappa(FOURTEEN_RATERS) == pytest.approx(0.210, abs=5e-4)


def test_gwet_ac1_matches_gwets_abstractor_example() -> None:
    pairs = _pairs_from_contingency(ABSTRACTORS)
    table = stats.rating_table([list(p) for p in pairs], [0, 1, 2])
    # Percent agreement 0.89; chance agreement (0.13*0.87 + 0.255*0.745 + 0.615*0.385) / 2 = 0.269925.
    assert stats.gwet_ac1(table) == pytest.approx((0.89 - 0.269925) / (1 - 0.269925), abs=1e-9)
    assert stats.gwet_ac1(table) == pytest.approx(0.8493, abs=1e-4)  # Gwet 2014 / irrCAC: 0.8493
    # On the same table Cohen's kappa is 0.7964 (irrCAC kappa2.table).
    assert stats.cohen_kappa([a for a, _ in pairs], [b for _, b in pairs]) == pytest.approx(0.7964094, abs=1e-7)


def test_ac1_survives_a_rare_class_where_kappa_collapses() -> None:
    """The kappa paradox: 118 both normal, 5 + 2 split, none both dysplastic."""
    pairs = [("N", "N")] * 118 + [("N", "D")] * 5 + [("D", "N")] * 2
    table = stats.rating_table([list(p) for p in pairs], ["N", "D"])
    kappa = stats.cohen_kappa([a for a, _ in pairs], [b for _, b in pairs])
    assert kappa == pytest.approx(-0.0234, abs=1e-4)
    assert stats.gwet_ac1(table) == pytest.approx(0.9408, abs=1e-4)


def test_icc_a1_matches_shrout_and_fleiss_1979() -> None:
    assert stats.icc_agreement(SHROUT_FLEISS) == pytest.approx(0.29, abs=0.005)  # ICC(2,1) in their Table 4


def test_icc_drops_slides_missing_a_reader_and_is_undefined_without_spread() -> None:
    with_gap = np.vstack([SHROUT_FLEISS, [np.nan, 1, 2, 3]]).astype(float)
    assert stats.icc_agreement(with_gap) == pytest.approx(stats.icc_agreement(SHROUT_FLEISS))
    assert stats.icc_agreement(np.full((4, 2), 0.1)) is None
    assert stats.icc_agreement(np.array([[0.1, 0.2]])) is None


def test_bland_altman_matches_bland_and_altman_1986() -> None:
    result = stats.bland_altman(WRIGHT, MINI_WRIGHT, z=2)
    assert result["bias"] == pytest.approx(-2.1, abs=0.05)
    assert result["sd"] == pytest.approx(38.8, abs=0.05)
    assert result["low"] == pytest.approx(-79.7, abs=0.1) and result["high"] == pytest.approx(75.5, abs=0.1)
    assert stats.bland_altman([1.0], [2.0]) is None
    with pytest.raises(ValueError):
        stats.bland_altman([1.0, 2.0], [1.0])


def test_undefined_cases_are_none_not_a_number() -> None:
    one_class = stats.rating_table([["N", "N", "N"]] * 4, ["N"])
    assert stats.fleiss_kappa(one_class) is None and stats.gwet_ac1(one_class) is None
    no_second_read = stats.rating_table([["N", None], ["D", None]], ["N", "D"])
    assert stats.fleiss_kappa(no_second_read) is None and stats.gwet_ac1(no_second_read) is None
    all_normal = stats.rating_table([["N", "N"]] * 5, ["N", "D"])
    assert stats.fleiss_kappa(all_normal) is None  # chance agreement is total
    assert stats.gwet_ac1(all_normal) == pytest.approx(1.0)  # AC1 is defined: perfect agreement
    with pytest.raises(ValueError):
        stats.rating_table([["X"]], ["N", "D"])
