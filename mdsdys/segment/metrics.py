"""Segmentation metrics: pixel Dice and IoU, and object precision/recall/F1 at IoU >= 0.5.

Object matching follows the DSB 2018 / Cellpose convention: a predicted nucleus and a true one
match when their IoU is at least 0.5. At that threshold a match is unique (two objects cannot both
overlap one by more than half), so greedy matching is the Hungarian optimum.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mdsdys.segment.postprocess import join_lobes


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """2|A∩B| / (|A| + |B|) of two masks (nonzero = nucleus); 1.0 when both are empty."""
    a, b = np.asarray(pred) > 0, np.asarray(truth) > 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """|A∩B| / |A∪B| of two masks; 1.0 when both are empty."""
    a, b = np.asarray(pred) > 0, np.asarray(truth) > 0
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


@dataclass(frozen=True)
class ObjectCounts:
    """Matched (tp), unmatched predicted (fp) and unmatched true (fn) nuclei."""

    tp: int
    fp: int
    fn: int

    def __add__(self, other: ObjectCounts) -> ObjectCounts:
        return ObjectCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        """tp / (tp + fp); 1.0 when nothing was predicted."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        """tp / (tp + fn); 1.0 when there was nothing to find."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        """2 tp / (2 tp + fp + fn); 1.0 when both sides are empty."""
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else 1.0


def match_objects(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> ObjectCounts:
    """Count nuclei matched at IoU >= threshold between two (H, W) int instance maps (0 = background)."""
    pred, truth = np.asarray(pred, np.int64), np.asarray(truth, np.int64)
    n_pred, n_true = int(pred.max(initial=0)), int(truth.max(initial=0))
    pred_ids = np.unique(pred[pred > 0])
    true_ids = np.unique(truth[truth > 0])
    if pred_ids.size == 0 or true_ids.size == 0:
        return ObjectCounts(0, int(pred_ids.size), int(true_ids.size))
    both = (pred > 0) & (truth > 0)
    inter = np.bincount(pred[both] * (n_true + 1) + truth[both], minlength=(n_pred + 1) * (n_true + 1))
    inter = inter.reshape(n_pred + 1, n_true + 1)
    area_p, area_t = np.bincount(pred.ravel(), minlength=n_pred + 1), np.bincount(truth.ravel(), minlength=n_true + 1)
    ious = inter / np.maximum(area_p[:, None] + area_t[None, :] - inter, 1)
    ious[0, :], ious[:, 0] = 0.0, 0.0
    used_p, used_t, tp = set(), set(), 0
    for flat in np.argsort(ious, axis=None)[::-1]:
        p, t = divmod(int(flat), n_true + 1)
        if ious[p, t] < threshold:
            break
        if p not in used_p and t not in used_t:
            used_p.add(p)
            used_t.add(t)
            tp += 1
    return ObjectCounts(tp, int(pred_ids.size) - tp, int(true_ids.size) - tp)


def label_mask(mask: np.ndarray, lobe_gap: float = 0.0) -> np.ndarray:
    """True instances of a semantic mask: its 8-connected components, (H, W) int32.

    With lobe_gap > 0 (px), components closer than that count as one nucleus, the rule the
    segmenter's post-processing applies (nuclei.PostConfig.lobe_gap): annotators often draw the
    lobes of one neutrophil or eosinophil nucleus a few pixels apart.
    """
    labels, _ = ndimage.label(np.asarray(mask) > 0, structure=np.ones((3, 3), bool))
    return join_lobes(labels.astype(np.int32), lobe_gap) if lobe_gap > 0 else labels.astype(np.int32)


def summarise(dices: Iterable[float], ious: Iterable[float], counts: ObjectCounts,
              components: ObjectCounts | None = None) -> dict[str, float]:
    """Mean per-image Dice and IoU with pooled object precision, recall and F1, as reports show them.

    `counts` match nuclei (lobes drawn apart joined); `components`, when given, match the true
    mask's bare connected components and are reported as object_*_components.
    """
    dices, ious = list(dices), list(ious)
    out = {
        "dice": float(np.mean(dices)) if dices else float("nan"),
        "iou": float(np.mean(ious)) if ious else float("nan"),
        "object_f1": counts.f1, "object_precision": counts.precision, "object_recall": counts.recall,
        "n": len(dices),
    }
    if components is not None:
        out |= {"object_f1_components": components.f1, "object_precision_components": components.precision,
                "object_recall_components": components.recall}
    return out
