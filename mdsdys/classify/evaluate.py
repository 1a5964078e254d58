"""Evaluating a classifier on a folder of labelled single-cell images (`mdsdys eval-classifier`)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mdsdys import stats
from mdsdys.classify.classifier import Classifier, slide_colour
from mdsdys.classify.inputs import stack_squares
from mdsdys.classify.ood import predict_and_score, slide_ood
from mdsdys.errors import ImportProblemError, SchemeError
from mdsdys.imaging.decode import IMAGE_SUFFIXES
from mdsdys.imaging.thumbnails import image_square

log = logging.getLogger(__name__)
_READ_ERRORS = (OSError, ValueError, SyntaxError)  # what PIL raises on a damaged file


def labelled_files(folder: Path, classifier: Classifier) -> list[tuple[Path, int]]:
    """(image path, class index) for DIR/<class code or name>/<image>; raises for unknown class folders."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImportProblemError(f"{folder} is not a folder; give a folder with one subfolder per class.")
    lookup = {c.code.lower(): i for i, c in enumerate(classifier.scheme.classes)}
    lookup |= {c.name.lower(): i for i, c in enumerate(classifier.scheme.classes)}
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p.name for p in subfolders if p.name.lower() not in lookup]
    if unknown or not subfolders:
        raise SchemeError(
            f"Folders {unknown or '(none)'} in {folder} are not classes of scheme {classifier.scheme.name!r} "
            f"({', '.join(classifier.codes)}); name each class folder by its code or name."
        )
    return [(path, lookup[sub.name.lower()]) for sub in subfolders for path in sorted(sub.rglob("*"))
            if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")]


def folder_squares(classifier: Classifier, folder: Path) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """((N, 3, S, S) uint8 squares, (N,) class indices, skipped files) of a folder of class folders.

    Each image is cut around its nucleus, as import cuts it; unreadable files are skipped and named.
    """
    truth, squares, skipped = [], [], []
    for path, label in labelled_files(folder, classifier):
        try:
            squares.append(image_square(path.read_bytes(), classifier.input_size))
            truth.append(label)
        except _READ_ERRORS as exc:
            log.warning("skipped %s: %s", path, exc)
            skipped.append(str(path))
    if not truth:
        raise ImportProblemError(f"No readable images under the class folders of {folder}.")
    return stack_squares(squares), np.array(truth), skipped


def evaluate_classifier(classifier: Classifier, folder: Path) -> dict[str, Any]:
    """macro_f1, accuracy, confusion, Table 3 per_class, calibration and ROC points on a folder of class folders.

    Each image is cut around its nucleus, as import cuts it, whatever its size (a 120 px crop or a
    360 px field around one cell). The folder is one slide: its colour is fitted on all its images.
    """
    batch, y, skipped = folder_squares(classifier, folder)
    colour = slide_colour(classifier, batch)
    proba, scores = predict_and_score(classifier, batch, colour=colour)  # one pass through the network
    shift = slide_ood(scores, classifier.ood)
    report = stats.classification_report(y, proba, classifier.codes)
    report |= {"model": classifier.version, "folder": str(folder), "skipped": skipped,
               "ood": {"score": shift.score, "threshold": shift.threshold, "flagged": shift.flagged},
               "reliability": stats.reliability_bins(y, proba), "roc": stats.roc_points(y, proba, classifier.codes)}
    return stats.jsonable(report)


def _fmt(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"  # undefined: no cells of the kind


def markdown_table(result: dict[str, Any]) -> str:
    """The paper's Table 3 layout: one row per class, then macro-F1 and accuracy."""
    head = ["class", "n", *stats.TABLE3]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for code, row in result["per_class"].items():
        lines.append(f"| {code} | {row.get('support', '-')} | " + " | ".join(_fmt(row[k]) for k in stats.TABLE3) + " |")
    lines.append("")
    lines.append(f"macro-F1 {_fmt(result['macro_f1'])}, accuracy {_fmt(result['accuracy'])}, n = {result['n']}")
    return "\n".join(lines)
