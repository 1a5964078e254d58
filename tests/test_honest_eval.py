"""Honest evaluation (issue 14 item 3): stable splits, enough training labels, n and 95% intervals."""

import numpy as np
import pytest

from mdsdys import stats
from mdsdys.stats import MIN_CELLS_FOR_PAPER, paper_note, table3_rows
from mdsdys.classify.train import check_training_counts
from mdsdys.errors import TrainingDataError
from mdsdys.splits import split_samples

CODES = ["EN", "ED", "GN", "GD", "MN", "MD", "BL", "OT"]


def _perfect(y: np.ndarray) -> np.ndarray:
    proba = np.full((y.size, len(CODES)), 0.01)
    proba[np.arange(y.size), y] = 0.93
    return proba


def test_table3_on_a_16_cell_split_shows_too_few_cells_and_never_the_paper_beside_it():
    y = np.repeat(np.arange(8), 2)  # 16 test cells, 2 per class: the AUC 1.000 for every class
    rows = table3_rows(stats.table3_estimates(y, _perfect(y), CODES, resamples=50))
    assert len(rows) == 8
    for row in rows:
        assert row["positives"] == 2 and row["negatives"] == 14
        for metric in ("sensitivity", "auc", "f1", "ap", "accuracy"):
            assert row[metric].startswith(stats.TOO_FEW), (row["class"], metric, row[metric])
        assert not any(key.startswith("paper") for key in row)
    assert "not shown" in paper_note(stats.table3_estimates(y, _perfect(y), CODES, resamples=50))


def test_table3_on_enough_cells_carries_n_and_an_interval_and_sits_beside_the_paper():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(8), MIN_CELLS_FOR_PAPER + 10)
    proba = rng.dirichlet(np.ones(8), y.size) + 2.0 * np.eye(8)[y]
    proba /= proba.sum(1, keepdims=True)
    estimates = stats.table3_estimates(y, proba, CODES, resamples=100)
    auc = estimates["EN"]["auc"]
    assert auc.method == "bootstrap" and auc.low <= auc.value <= auc.high < 1.0 + 1e-9 and auc.n == 40
    sens = estimates["EN"]["sensitivity"]
    assert sens.method == "wilson" and sens.n == 40
    row = table3_rows(estimates)[0]
    assert "n=40" in row["sensitivity"] and "(" in row["auc"] and row["paper auc"] == 0.945


def test_bootstrap_interval_covers_the_mean_and_keeps_each_stratum():
    values = np.random.default_rng(1).normal(5.0, 1.0, 200)
    low, high = stats.bootstrap_interval(lambda i: float(values[i].mean()), values.size, resamples=300)
    assert low < values.mean() < high and high - low < 0.5
    strata = np.array([0] * 190 + [1] * 10)
    sizes = []
    stats.bootstrap_interval(lambda i: sizes.append(int(np.sum(strata[i] == 1))) or 0.0, 200, strata, resamples=20)
    assert set(sizes) == {10}  # the rare stratum never vanishes from a resample


def test_kappa_and_agreement_on_a_handful_of_pairs_are_too_few_to_estimate():
    a, b = ["EN", "ED", "GN", "EN", "BL"], ["EN", "EN", "GN", "EN", "BL"]
    assert stats.kappa_estimate(a, b).text().startswith(stats.TOO_FEW)
    assert stats.agreement_estimate(a, b).value is None
    many_a, many_b = a * 10, b * 10
    kappa = stats.kappa_estimate(many_a, many_b, resamples=100)
    assert kappa.n == 50 and kappa.low < kappa.value < kappa.high


def test_a_retrain_keeps_the_frozen_test_cells_and_never_moves_a_slides_training_cells_to_test():
    codes = np.array((["EN", "GN", "BL", "ED"] * 52)[:208])
    groups = np.array(["A"] * 208)
    first = split_samples(codes, groups, 0.1, 0.08, seed=0)  # one slide: by cell, 16 test cells
    assert first.kind == "by-cell" and first.test.size == 16
    frozen = np.zeros(208 + 60, bool)
    frozen[first.test] = True
    seen = np.zeros(208 + 60, bool)
    seen[np.concatenate([first.train, first.val])] = True
    codes2 = np.concatenate([codes, np.array(["EN", "GN", "BL", "ED"] * 15)])
    groups2 = np.concatenate([groups, np.array(["B"] * 60)])  # a second slide gets reads
    second = split_samples(codes2, groups2, 0.1, 0.08, seed=0, frozen_test=frozen, seen=seen)
    assert set(first.test) <= set(second.test)
    slide_a_training = set(first.train) | set(first.val)
    assert slide_a_training.isdisjoint(second.test)  # the 192 training cells of slide A stay in training
    new_in_test = [i for i in second.test if groups2[i] == "B"]
    assert 0 < len(new_in_test) < 20 and {codes2[i] for i in new_in_test} == {"EN", "GN", "BL", "ED"}
    again = split_samples(codes2, groups2, 0.1, 0.08, seed=0, frozen_test=frozen, seen=seen)
    assert np.array_equal(again.test, second.test)  # stable


def test_a_big_and_a_small_slide_never_leave_training_the_small_one():
    codes = np.array((["EN", "GN"] * 111)[:222])
    groups = np.array(["A"] * 192 + ["B"] * 30)
    for seed in range(5):
        split = split_samples(codes, groups, 0.1, 0.1, seed=seed)
        assert split.train.size >= 0.5 * codes.size


def test_a_candidate_short_of_training_labels_is_refused_with_how_many_more_it_needs():
    plan = {"split": "by-cell", "counts": {"train": {"EN": 12, "ED": 4, "GN": 10}}}
    with pytest.raises(TrainingDataError, match="ED: 4 now, label 6 more") as refused:
        check_training_counts(plan, 10)
    assert "EN" not in str(refused.value).split("ED:")[1] and "GN:" not in str(refused.value)
    check_training_counts(plan | {"counts": {"train": {"EN": 10}}}, 10)  # enough: no error
