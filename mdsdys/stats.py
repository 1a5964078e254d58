"""Classification and agreement metrics in plain numpy: the paper's Table 3, calibration, kappa, Wilson.

Conventions:
- `y_true`, `y_pred`: (N,) int class indices; `proba`: (N, C) float, rows sum to 1.
- `scores` for one class: (N,) float, higher = more likely positive; `positive`: (N,) bool.
- A ratio whose denominator is 0 (no positives, no predictions of a class) is NaN, never a guess;
  `jsonable` turns NaN into None for JSON files.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
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


def table3_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per class: our figure beside the paper's for each Table 3 metric."""
    rows = []
    for code, ours in report["per_class"].items():
        row = {"class": code}
        for key in ("sensitivity", "specificity", "auc", "accuracy", "ppv", "npv", "f1", "ap"):
            row[key] = None if ours.get(key) is None else round(float(ours[key]), 3)
            if code in PAPER_TABLE3:
                row[f"paper {key}"] = PAPER_TABLE3[code][key]
        rows.append(row)
    return rows
