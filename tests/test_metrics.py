"""Metrics against values worked out by hand (the paper's Table 3, kappa, Wilson)."""

import json
import math

import numpy as np
import pytest

from mdsdys import stats


def test_table3_counts_for_one_class_against_the_rest():
    positive = np.array([1, 1, 0, 0, 0], bool)
    predicted = np.array([1, 0, 1, 0, 0], bool)  # tp 1, fn 1, fp 1, tn 2
    row = stats.binary_table3(positive, predicted, np.array([0.9, 0.2, 0.8, 0.1, 0.3]))
    assert row["sensitivity"] == pytest.approx(0.5)
    assert row["specificity"] == pytest.approx(2 / 3)
    assert row["accuracy"] == pytest.approx(3 / 5)
    assert row["ppv"] == pytest.approx(0.5)
    assert row["npv"] == pytest.approx(2 / 3)
    assert row["f1"] == pytest.approx(0.5)
    assert row["support"] == 2


def test_auc_counts_a_tied_positive_negative_pair_as_half():
    # Pairs (pos, neg): (0.8, 0.8) tie = 0.5, (0.8, 0.2) = 1, (0.4, 0.8) = 0, (0.4, 0.2) = 1 -> 2.5 / 4.
    auc = stats.roc_auc(np.array([1, 0, 1, 0], bool), np.array([0.8, 0.8, 0.4, 0.2]))
    assert auc == pytest.approx(0.625)


def test_auc_is_one_for_a_perfect_ranking_and_nan_without_negatives():
    assert stats.roc_auc(np.array([1, 1, 0], bool), np.array([0.9, 0.8, 0.1])) == pytest.approx(1.0)
    assert math.isnan(stats.roc_auc(np.array([1, 1], bool), np.array([0.9, 0.8])))


def test_average_precision_by_hand():
    # Ranked: +, -, +, - -> precision 1 at recall 0.5, 2/3 at recall 1: AP = 0.5 * 1 + 0.5 * 2/3.
    ap = stats.average_precision(np.array([1, 0, 1, 0], bool), np.array([0.9, 0.8, 0.7, 0.1]))
    assert ap == pytest.approx(0.5 + 1 / 3)


def test_average_precision_takes_tied_scores_as_one_threshold():
    # Scores 0.5 (+), 0.5 (-) tie: precision 1/2 at recall 1/2, then 2/3 at recall 1.
    ap = stats.average_precision(np.array([1, 0, 1], bool), np.array([0.5, 0.5, 0.2]))
    assert ap == pytest.approx(0.25 + 1 / 3)


def test_roc_curve_runs_from_origin_to_one_one():
    fpr, tpr, _ = stats.roc_curve(np.array([1, 0, 1, 0], bool), np.array([0.8, 0.8, 0.4, 0.2]))
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_confusion_rows_are_truth_and_macro_f1_by_hand():
    y_true, y_pred = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2])
    assert stats.confusion_matrix(y_true, y_pred, 3).tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert stats.macro_f1(y_true, y_pred, 3) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_macro_f1_ignores_a_class_neither_present_nor_predicted():
    assert stats.macro_f1(np.array([0, 1]), np.array([0, 1]), 5) == pytest.approx(1.0)


def test_cohen_kappa_by_hand():
    # Observed 3/4; chance 0.5 * 0.25 + 0.5 * 0.75 = 0.5; kappa = (0.75 - 0.5) / 0.5.
    assert stats.cohen_kappa(["A", "A", "B", "B"], ["A", "B", "B", "B"], ["A", "B"]) == pytest.approx(0.5)


def test_cohen_kappa_is_one_for_perfect_agreement_and_nan_when_chance_agreement_is_total():
    assert stats.cohen_kappa(["EN", "ED", "GN"], ["EN", "ED", "GN"]) == pytest.approx(1.0)
    assert math.isnan(stats.cohen_kappa(["EN", "EN"], ["EN", "EN"]))


def test_cohen_kappa_below_zero_for_systematic_disagreement():
    assert stats.cohen_kappa(["A", "B", "A", "B"], ["B", "A", "B", "A"]) == pytest.approx(-1.0)


def test_percent_agreement():
    assert stats.percent_agreement(["A", "A", "B", "B"], ["A", "B", "B", "B"]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="paired"):
        stats.percent_agreement(["A"], ["A", "B"])


@pytest.mark.parametrize("k, n, expected", [
    (0, 10, (0.0, 0.2775)),     # none of 10: the interval still reaches 28%
    (10, 10, (0.7225, 1.0)),    # all of 10
    (8, 100, (0.0411, 0.1500)),  # 8% of 100 cells straddles the 10% dysplasia threshold
])
def test_wilson_interval(k, n, expected):
    low, high = stats.wilson_interval(k, n)
    assert low == pytest.approx(expected[0], abs=5e-4)
    assert high == pytest.approx(expected[1], abs=5e-4)


def test_wilson_interval_of_nothing_is_everything_and_bad_counts_are_refused():
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        stats.wilson_interval(5, 3)


def test_expected_calibration_error_by_hand():
    proba = np.array([[0.9, 0.1], [0.6, 0.4]])
    # Right at confidence 0.9 (gap 0.1), wrong at 0.6 (gap 0.6): ECE = (0.1 + 0.6) / 2.
    assert stats.expected_calibration_error(np.array([0, 1]), proba) == pytest.approx(0.35)
    bins = stats.reliability_bins(np.array([0, 1]), proba)
    assert [(b["count"], b["accuracy"]) for b in bins] == [(1, 0.0), (1, 1.0)]


def test_classification_report_is_strict_json_after_jsonable():
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.6, 0.1]])
    report = stats.jsonable(stats.classification_report(np.array([0, 1, 0]), proba, ["EN", "ED", "GN"]))
    text = json.dumps(report, allow_nan=False)  # class GN is absent: its AUC is NaN -> null
    assert report["per_class"]["GN"]["auc"] is None
    assert set(stats.TABLE3) <= set(json.loads(text)["per_class"]["EN"])
    assert report["accuracy"] == pytest.approx(2 / 3)
