"""What the classifier is worth, reported the way the paper does (Table 3, Fig. 1, Table 4).

Scored live on two sets: the active model's frozen test split, and every cell with a consensus
label (the readers' settled truth, which may include cells the model trained on).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlite_utils import Database

from mdsdys import stats
from mdsdys.checkpoints import load_checkpoint
from mdsdys.classify.classifier import load_classifier, predict_proba
from mdsdys.classify.proposals import training_samples
from mdsdys.errors import MdsdysError
from mdsdys.store.labels import final_labels
from mdsdys.store.models import active_model
from mdsdys.store.users import User

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
EVALUATION_SETS = ("test", "consensus")


def model_performance(db: Database, viewer: User, scheme: str, on: str = "test") -> dict[str, Any]:
    """Table 3 metrics, ROC points, confusion and reliability of the scheme's active classifier."""
    if viewer.role not in ("adjudicator", "admin"):
        raise MdsdysError("Model performance uses the readers' labels; it is for adjudicators and admins.")
    record = active_model(db, "classifier", scheme)
    if record is None:
        raise MdsdysError(f"No active classifier for scheme {scheme!r} yet; train one on the Train page.")
    samples = _evaluation_cells(db, record.path, scheme, on)
    if not samples:
        raise MdsdysError(f"No cells to score on the {on} set yet." +
                          (" Settle disagreements on the Consensus page first." if on == "consensus" else ""))
    classifier = load_classifier(record.path)
    y_true = np.array([classifier.codes.index(s.code) for s in samples])
    proba = predict_proba(classifier, [s.crop for s in samples])
    report = stats.classification_report(y_true, proba, classifier.codes)
    return {"version": record.version, "set": on, "n": len(samples), "report": report,
            "roc": stats.roc_points(y_true, proba, classifier.codes),
            "reliability": stats.reliability_bins(y_true, proba)}


def _evaluation_cells(db: Database, checkpoint_path: str, scheme: str, on: str) -> list:
    if on not in EVALUATION_SETS:
        raise MdsdysError(f"Evaluate on one of {', '.join(EVALUATION_SETS)}, not {on!r}.")
    samples = training_samples(db, scheme)
    if on == "test":
        test_cells = set(load_checkpoint(checkpoint_path).get("test_cells") or [])
        return [s for s in samples if s.cell_id in test_cells]
    settled = {c.cell_id for c in final_labels(db, scheme, human_only=True) if c.label.source == "consensus"}
    return [s for s in samples if s.cell_id in settled]


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
