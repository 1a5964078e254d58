"""Classification and agreement metrics in plain numpy: the paper's Table 3, calibration, kappa, Wilson.

Conventions:
- `y_true`, `y_pred`: (N,) int class indices; `proba`: (N, C) float, rows sum to 1.
- `scores` for one class: (N,) float, higher = more likely positive; `positive`: (N,) bool.
- A ratio whose denominator is 0 (no positives, no predictions of a class) is NaN, never a guess;
  `jsonable` turns NaN into None for JSON files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Lee et al. 2022, Table 3: per-class figures of the paper's InceptionV3 on its 806 test cells.
PAPER_TABLE3 = {
    "EN": {"sensitivity": 0.640, "specificity": 0.950, "auc": 0.945, "accuracy": 0.912, "ppv": 0.647,
           "npv": 0.949, "f1": 0.643, "ap": 0.694},
    "GN": {"sensitivity": 0.797, "specificity": 0.993, "auc": 0.993, "accuracy": 0.979, "ppv": 0.904,
           "npv": 0.984, "f1": 0.847, "ap": 0.931},
    "MN": {"sensitivity": 0.707, "specificity": 0.988, "auc": 0.955, "accuracy": 0.974, "ppv": 0.763,
           "npv": 0.984, "f1": 0.734, "ap": 0.781},
    "ED": {"sensitivity": 0.790, "specificity": 0.992, "auc": 0.972, "accuracy": 0.988, "ppv": 0.714,
           "npv": 0.995, "f1": 0.744, "ap": 0.792},
    "GD": {"sensitivity": 0.900, "specificity": 0.999, "auc": 0.996, "accuracy": 0.993, "ppv": 0.978,
           "npv": 0.993, "f1": 0.938, "ap": 0.946},
    "MD": {"sensitivity": 0.899, "specificity": 0.948, "auc": 0.971, "accuracy": 0.931, "ppv": 0.906,
           "npv": 0.944, "f1": 0.902, "ap": 0.956},
    "BL": {"sensitivity": 0.831, "specificity": 0.951, "auc": 0.973, "accuracy": 0.932, "ppv": 0.766,
           "npv": 0.967, "f1": 0.797, "ap": 0.884},
    "OT": {"sensitivity": 0.782, "specificity": 0.956, "auc": 0.954, "accuracy": 0.931, "ppv": 0.756,
           "npv": 0.962, "f1": 0.769, "ap": 0.845},
}
# The cells a classifier is scored on for the Dashboard: its frozen test split, or every consensus-labelled cell.
EVALUATION_SETS = ("test", "consensus")


TABLE3 = ("sensitivity", "specificity", "auc", "accuracy", "ppv", "npv", "f1", "ap")


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else math.nan


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) int64 counts: rows are the true class, columns the predicted class."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    flat = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def _ranked_counts(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (true positives, false positives) at each distinct score, highest first; ties form one step."""
    positive, scores = np.asarray(positive, dtype=bool), np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="mergesort")
    scores, positive = scores[order], positive[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tps = np.cumsum(positive)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    return tps, fps, scores[last_of_tie]


def roc_curve(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) from (0, 0) up to (1, 1); tied scores move along a diagonal step."""
    tps, fps, thresholds = _ranked_counts(positive, scores)
    n_pos, n_neg = (tps[-1], fps[-1]) if tps.size else (0, 0)
    tpr = np.r_[0.0, tps / n_pos] if n_pos else np.full(tps.size + 1, math.nan)
    fpr = np.r_[0.0, fps / n_neg] if n_neg else np.full(fps.size + 1, math.nan)
    return fpr, tpr, np.r_[np.inf, thresholds]


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the trapezoid rule (ties count half); NaN without both classes."""
    fpr, tpr, _ = roc_curve(positive, scores)
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        return math.nan
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def average_precision(positive: np.ndarray, scores: np.ndarray) -> float:
    """AP = sum over thresholds of (recall step) x precision, ties as one threshold; NaN without positives."""
    tps, fps, _ = _ranked_counts(positive, scores)
    if not tps.size or tps[-1] == 0:
        return math.nan
    recall, precision = tps / tps[-1], tps / (tps + fps)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def binary_table3(positive: np.ndarray, predicted: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """The paper's Table 3 for one class against the rest, from truth, hard predictions and scores."""
    positive, predicted = np.asarray(positive, dtype=bool), np.asarray(predicted, dtype=bool)
    tp = int(np.sum(positive & predicted))
    fp = int(np.sum(~positive & predicted))
    fn = int(np.sum(positive & ~predicted))
    tn = int(positive.size - tp - fp - fn)
    return {
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "auc": roc_auc(positive, scores),
        "accuracy": _ratio(tp + tn, positive.size),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "ap": average_precision(positive, scores),
        "support": tp + fn,
    }


def f1_per_class(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(C,) F1 of each class; NaN for a class neither present nor predicted."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(np.float64)
    den = cm.sum(0) + cm.sum(1)  # 2tp + fp + fn
    return np.where(den > 0, 2 * tp / np.maximum(den, 1), np.nan)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Mean F1 over classes that are present or predicted (a class absent from both has no F1)."""
    f1 = f1_per_class(y_true, y_pred, n_classes)
    return float(np.nanmean(f1)) if np.isfinite(f1).any() else math.nan


def per_class_metrics(y_true: np.ndarray, proba: np.ndarray, codes: Sequence[str]) -> dict[str, dict[str, float]]:
    """Table 3 per class, one against the rest; the hard prediction is the most probable class."""
    y_true, proba = np.asarray(y_true), np.asarray(proba)
    y_pred = proba.argmax(1)
    return {code: binary_table3(y_true == k, y_pred == k, proba[:, k]) for k, code in enumerate(codes)}


def roc_points(y_true: np.ndarray, proba: np.ndarray, codes: Sequence[str]) -> dict[str, dict[str, list[float]]]:
    """Per class, the ROC curve's points {'fpr': [...], 'tpr': [...]} for plotting (paper Fig. 1)."""
    y_true = np.asarray(y_true)
    points = {}
    for k, code in enumerate(codes):
        fpr, tpr, _ = roc_curve(y_true == k, np.asarray(proba)[:, k])
        points[code] = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
    return points


def log_loss(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (probabilities clipped at 1e-12)."""
    picked = np.asarray(proba)[np.arange(len(y_true)), np.asarray(y_true)]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))


def reliability_bins(y_true: np.ndarray, proba: np.ndarray, n_bins: int = 10) -> list[dict[str, float]]:
    """Top-class confidence in equal-width bins: count, mean confidence and accuracy per non-empty bin."""
    proba = np.asarray(proba)
    confidence, correct = proba.max(1), proba.argmax(1) == np.asarray(y_true)
    index = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    bins = []
    for b in range(n_bins):
        inside = index == b
        if inside.any():
            bins.append({"lo": b / n_bins, "hi": (b + 1) / n_bins, "count": int(inside.sum()),
                         "confidence": float(confidence[inside].mean()), "accuracy": float(correct[inside].mean())})
    return bins


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, n_bins: int = 10) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over the reliability bins."""
    bins = reliability_bins(y_true, proba, n_bins)
    total = sum(b["count"] for b in bins)
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins) / total) if total else math.nan


def classification_report(y_true: np.ndarray, proba: np.ndarray, codes: Sequence[str]) -> dict[str, Any]:
    """macro-F1, accuracy, confusion, Table 3 per class, NLL and ECE for a set of predictions."""
    y_true, proba = np.asarray(y_true, dtype=np.int64), np.asarray(proba, dtype=np.float64)
    y_pred = proba.argmax(1)
    return {
        "n": int(y_true.size),
        "macro_f1": macro_f1(y_true, y_pred, len(codes)),
        "accuracy": _ratio(np.sum(y_true == y_pred), y_true.size),
        "confusion": confusion_matrix(y_true, y_pred, len(codes)).tolist(),
        "codes": list(codes),
        "per_class": per_class_metrics(y_true, proba, codes),
        "nll": log_loss(y_true, proba) if y_true.size else math.nan,
        "ece": expected_calibration_error(y_true, proba),
    }


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable], labels: Sequence[Hashable] | None = None) -> float:
    """Cohen's kappa of two readers' labels of the same items; NaN when chance agreement is total."""
    if len(a) != len(b):
        raise ValueError(f"cohen_kappa needs paired labels; got {len(a)} and {len(b)}.")
    labels = list(labels) if labels is not None else sorted(set(a) | set(b), key=str)
    index = {label: i for i, label in enumerate(labels)}
    table = confusion_matrix(np.array([index[x] for x in a], dtype=np.int64),
                             np.array([index[x] for x in b], dtype=np.int64), len(labels)).astype(np.float64)
    n = table.sum()
    if n == 0:
        return math.nan
    observed = np.trace(table) / n
    expected = float(table.sum(1) @ table.sum(0)) / n**2
    return _ratio(observed - expected, 1 - expected) if expected < 1 else math.nan


def percent_agreement(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Fraction of paired items on which both readers gave the same label; NaN for no items."""
    if len(a) != len(b):
        raise ValueError(f"percent_agreement needs paired labels; got {len(a)} and {len(b)}.")
    return _ratio(sum(x == y for x, y in zip(a, b)), len(a))


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (95% for z = 1.96); (0, 1) when n = 0."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n; got k={k}, n={n}.")
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def jsonable(value: Any) -> Any:
    """A copy with NaN and infinities as None and numpy scalars as Python numbers, for strict JSON."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# ---------------------------------------------------------------- intervals and "too few" (issue 14)

# Below this many cells in a metric's denominator (positives for sensitivity, F1, AUC and AP;
# negatives for specificity and AUC) no number is shown: a 95% interval on fewer than 10 cells
# spans most of [0, 1], so the point value misleads more than it informs.
MIN_CELLS_TO_ESTIMATE = 10
TOO_FEW = "too few cells to estimate"
BOOTSTRAP_RESAMPLES = 400  # percentile intervals settle to ~0.01 by 400 resamples on a few hundred cells


@dataclass(frozen=True)
class Estimate:
    """A metric with its n and 95% interval; value None means too few cells to estimate."""

    value: float | None
    low: float | None
    high: float | None
    n: int  # the cells the metric rests on (its denominator)
    method: str  # "wilson", "bootstrap" or "too few"

    def text(self, digits: int = 3) -> str:
        """'0.912 (0.850-0.951), n=120', or 'too few cells to estimate (n=4)'."""
        if self.value is None:
            return f"{TOO_FEW} (n={self.n})"
        if self.low is None or self.high is None:
            return f"{self.value:.{digits}f}, n={self.n}"
        return f"{self.value:.{digits}f} ({self.low:.{digits}f}-{self.high:.{digits}f}), n={self.n}"


def too_few(n: int) -> Estimate:
    """The estimate shown instead of a number below MIN_CELLS_TO_ESTIMATE."""
    return Estimate(None, None, None, int(n), "too few")


def proportion_estimate(k: int, n: int, minimum: int = MIN_CELLS_TO_ESTIMATE) -> Estimate:
    """k of n with its Wilson 95% interval (the closed form for a proportion)."""
    if n < minimum:
        return too_few(n)
    low, high = wilson_interval(int(k), int(n))
    return Estimate(k / n, low, high, int(n), "wilson")


def bootstrap_interval(statistic: Callable[[np.ndarray], float], n: int, strata: np.ndarray | None = None,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float | None, float | None]:
    """Percentile 95% interval of statistic(indices) over bootstrap resamples of range(n).

    With `strata` ((n,) labels), each resample keeps every stratum's size (a class-stratified
    bootstrap, so a rare class never vanishes from a resample). Resamples whose statistic is NaN
    are dropped; (None, None) when fewer than half survive.
    """
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if strata is None else [np.flatnonzero(strata == s) for s in np.unique(strata)]
    values = []
    for _ in range(resamples):
        picked = np.concatenate([g[rng.integers(0, g.size, g.size)] for g in groups if g.size])
        value = statistic(picked)
        if not math.isnan(value):
            values.append(value)
    if len(values) < resamples / 2:
        return None, None
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def bootstrap_estimate(statistic: Callable[[np.ndarray], float], n: int, n_shown: int,
                       strata: np.ndarray | None = None, minimum: int = MIN_CELLS_TO_ESTIMATE,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> Estimate:
    """statistic over all n items with a bootstrap interval; too few when n_shown < minimum."""
    if n_shown < minimum:
        return too_few(n_shown)
    value = statistic(np.arange(n))
    if math.isnan(value):
        return too_few(n_shown)
    low, high = bootstrap_interval(statistic, n, strata, resamples, seed)
    return Estimate(float(value), low, high, int(n_shown), "bootstrap")


def table3_estimates(y_true: np.ndarray, proba: np.ndarray, codes: Sequence[str],
                     resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict[str, dict[str, Estimate]]:
    """Table 3 per class with n and 95% intervals: Wilson for proportions, a stratified bootstrap for AUC, F1, AP."""
    y_true, proba = np.asarray(y_true, dtype=np.int64), np.asarray(proba, dtype=np.float64)
    y_pred = proba.argmax(1) if y_true.size else np.zeros(0, np.int64)
    result = {}
    for k, code in enumerate(codes):
        pos, pred = y_true == k, y_pred == k
        tp, fp = int(np.sum(pos & pred)), int(np.sum(~pos & pred))
        fn, tn = int(np.sum(pos & ~pred)), int(np.sum(~pos & ~pred))
        n_pos, n_neg = tp + fn, tn + fp
        scores = proba[:, k] if y_true.size else np.zeros(0)
        both = min(n_pos, n_neg)
        result[code] = {
            "sensitivity": proportion_estimate(tp, n_pos), "specificity": proportion_estimate(tn, n_neg),
            "ppv": proportion_estimate(tp, tp + fp), "npv": proportion_estimate(tn, tn + fn),
            # One-against-the-rest accuracy on a rare class is mostly the negatives: it needs positives too.
            "accuracy": (proportion_estimate(tp + tn, y_true.size) if n_pos >= MIN_CELLS_TO_ESTIMATE
                         else too_few(n_pos)),
            "auc": bootstrap_estimate(lambda i: roc_auc(pos[i], scores[i]), y_true.size, both, pos, resamples=resamples,
                                      seed=seed),
            "f1": bootstrap_estimate(lambda i: _ratio(2 * np.sum(pos[i] & pred[i]),
                                                      np.sum(pos[i]) + np.sum(pred[i])),
                                     y_true.size, n_pos, pos, resamples=resamples, seed=seed),
            "ap": bootstrap_estimate(lambda i: average_precision(pos[i], scores[i]), y_true.size, n_pos, pos,
                                     resamples=resamples, seed=seed),
        }
    return result


def macro_f1_estimate(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int,
                      resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> Estimate:
    """macro-F1 with a class-stratified bootstrap interval; n = cells scored."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return bootstrap_estimate(lambda i: macro_f1(y_true[i], y_pred[i], n_classes), y_true.size, y_true.size,
                              y_true, resamples=resamples, seed=seed)


def kappa_estimate(a: Sequence[Hashable], b: Sequence[Hashable], labels: Sequence[Hashable] | None = None,
                   resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> Estimate:
    """Cohen's kappa of paired reads with a bootstrap 95% interval over the pairs (no closed form fits rare classes)."""
    a_arr, b_arr = np.asarray(list(a), dtype=object), np.asarray(list(b), dtype=object)
    labels = list(labels) if labels is not None else sorted(set(a_arr.tolist()) | set(b_arr.tolist()), key=str)
    return bootstrap_estimate(lambda i: cohen_kappa(a_arr[i].tolist(), b_arr[i].tolist(), labels), a_arr.size,
                              a_arr.size, resamples=resamples, seed=seed)


def agreement_estimate(a: Sequence[Hashable], b: Sequence[Hashable]) -> Estimate:
    """Raw agreement of paired reads with its Wilson 95% interval."""
    if len(a) != len(b):
        raise ValueError(f"agreement_estimate needs paired labels; got {len(a)} and {len(b)}.")
    return proportion_estimate(sum(x == y for x, y in zip(a, b)), len(a))


# Our per-class figures sit beside the paper's only when they rest on this many positives and
# negatives: the paper's come from 806 test cells, and a comparison on fewer cells says nothing.
MIN_CELLS_FOR_PAPER = 30


def table3_rows(estimates: dict[str, dict[str, Estimate]]) -> list[dict[str, Any]]:
    """One row per class: each Table 3 metric with its n and 95% interval, or "too few cells to estimate".

    The paper's figure follows ours only where ours rests on MIN_CELLS_FOR_PAPER positives and negatives.
    """
    rows = []
    for code, ours in estimates.items():
        positives, negatives = ours["sensitivity"].n, ours["specificity"].n
        row: dict[str, Any] = {"class": code, "positives": positives, "negatives": negatives}
        beside = code in PAPER_TABLE3 and min(positives, negatives) >= MIN_CELLS_FOR_PAPER
        for key in TABLE3:
            row[key] = ours[key].text()
            if beside:
                row[f"paper {key}"] = PAPER_TABLE3[code][key]
        rows.append(row)
    return rows


def paper_note(estimates: dict[str, dict[str, Estimate]]) -> str:
    """Why the paper's figures are or are not shown beside ours."""
    shown = [c for c, ours in estimates.items() if c in PAPER_TABLE3
             and min(ours["sensitivity"].n, ours["specificity"].n) >= MIN_CELLS_FOR_PAPER]
    if not shown:
        return (f"The paper's Table 3 is not shown: no class has {MIN_CELLS_FOR_PAPER} positive and negative test "
                "cells here, so a comparison would say nothing.")
    return (f"The paper's Table 3 (806 test cells) is shown beside classes with at least {MIN_CELLS_FOR_PAPER} "
            f"positive and negative cells here: {', '.join(shown)}.")


# --- Agreement that survives rare classes (issue 17) ----------------------------------------------
# These return None, not NaN, where the statistic is not defined (fewer than two categories, no item
# with two reads, no spread): the pages print None as "not defined", never as a number.


def rating_table(ratings: Sequence[Sequence[Hashable | None]], categories: Sequence[Hashable]) -> np.ndarray:
    """(N items, C categories) int counts of how many readers put each item in each category; None = no read."""
    index = {c: j for j, c in enumerate(categories)}
    table = np.zeros((len(ratings), len(categories)), dtype=np.int64)
    for i, item in enumerate(ratings):
        for rating in item:
            if rating is not None:
                if rating not in index:
                    raise ValueError(f"rating {rating!r} is not one of the categories {list(categories)}.")
                table[i, index[rating]] += 1
    return table


def _pairwise_agreement(table: np.ndarray) -> tuple[float, np.ndarray] | None:
    """Mean over items read at least twice of the share of reader pairs that agree; the items used."""
    table = np.asarray(table, dtype=np.float64)
    per_item = table.sum(axis=1)
    used = per_item >= 2
    if not used.any() or table.shape[1] < 2:
        return None
    agree = (table[used] * (table[used] - 1)).sum(axis=1) / (per_item[used] * (per_item[used] - 1))
    return float(agree.mean()), used


def fleiss_kappa(table: np.ndarray) -> float | None:
    """Fleiss' kappa (Fleiss 1971) of an (N, C) rating table, for three or more readers per item.

    Items with fewer than two reads are left out; with equal reads per item this is Fleiss's formula.
    None when undefined: no item read twice, fewer than two categories, or every read in one class.
    """
    pairwise = _pairwise_agreement(table)
    if pairwise is None:
        return None
    observed, used = pairwise
    used_table = np.asarray(table, dtype=np.float64)[used]
    shares = used_table.sum(axis=0) / used_table.sum()
    expected = float(np.sum(shares ** 2))
    return (observed - expected) / (1 - expected) if expected < 1 - 1e-12 else None


def gwet_ac1(table: np.ndarray) -> float | None:
    """Gwet's AC1 (Gwet 2008; Handbook of Inter-Rater Reliability 2014, ch. 2 and 4) of an (N, C) rating table.

    Chance agreement is sum_k pi_k (1 - pi_k) / (C - 1), which stays small when one class is rare,
    so AC1 does not collapse where kappa does (the kappa paradox). Any number of readers per item.
    None when undefined: no item read twice or fewer than two categories.
    """
    pairwise = _pairwise_agreement(table)
    if pairwise is None:
        return None
    observed, _ = pairwise
    table = np.asarray(table, dtype=np.float64)
    read = table.sum(axis=1) > 0
    shares = (table[read] / table[read].sum(axis=1, keepdims=True)).mean(axis=0)
    expected = float(np.sum(shares * (1 - shares))) / (table.shape[1] - 1)
    return (observed - expected) / (1 - expected)


def icc_agreement(scores: np.ndarray) -> float | None:
    """ICC(A,1) of McGraw & Wong (1996), the same as Shrout & Fleiss's (1979) ICC(2,1).

    Two-way random effects, absolute agreement, single reader: how far one reader's number (e.g.
    a slide's dysplasia %) can be taken for another's. `scores`: (n slides, k readers) float; slides
    with a missing (NaN) score are dropped. None with fewer than two slides or readers, or no spread.
    """
    x = np.asarray(scores, dtype=np.float64)
    x = x[~np.isnan(x).any(axis=1)] if x.ndim == 2 else x
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        return None
    n, k = x.shape
    grand = x.mean()
    msr = k * np.sum((x.mean(axis=1) - grand) ** 2) / (n - 1)  # between slides
    msc = n * np.sum((x.mean(axis=0) - grand) ** 2) / (k - 1)  # between readers
    residual = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + grand
    mse = np.sum(residual ** 2) / ((n - 1) * (k - 1))
    denominator = msr + (k - 1) * mse + k * (msc - mse) / n
    return float((msr - mse) / denominator) if denominator > 1e-15 else None


def bland_altman(a: Sequence[float], b: Sequence[float], z: float = 1.96) -> dict[str, float] | None:
    """Bland & Altman (1986): bias (mean of a - b), SD of the differences and the limits bias -/+ z SD.

    None with fewer than two pairs. Bland & Altman's own worked example uses z = 2.
    """
    a_arr, b_arr = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"bland_altman needs paired values; got {a_arr.size} and {b_arr.size}.")
    if a_arr.size < 2:
        return None
    diff = a_arr - b_arr
    bias, sd = float(diff.mean()), float(diff.std(ddof=1))
    return {"n": int(diff.size), "bias": bias, "sd": sd, "low": bias - z * sd, "high": bias + z * sd}
