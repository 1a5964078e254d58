"""What the classifier is worth, reported the way the paper does (Table 3, Fig. 1, Table 4).

Scored live on two sets: the active model's frozen test split, and every cell with a consensus
label (the readers' settled truth, which may include cells the model trained on).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlite_utils import Database

from mdsdys.accounts import policy
from mdsdys import stats
from mdsdys.checkpoints import load_checkpoint
from mdsdys.classify.classifier import load_classifier, predict_by_slide
from mdsdys.classify.proposals import training_samples
from mdsdys.errors import MdsdysError
from mdsdys.stats import EVALUATION_SETS
from mdsdys.store.labels import final_labels
from mdsdys.store.models import active_model
from mdsdys.store.users import User



def model_performance(db: Database, viewer: User, scheme: str, on: str = "test") -> dict[str, Any]:
    """Table 3 metrics, ROC points, confusion and reliability of the scheme's active classifier."""
    policy.require(viewer, "performance_view")  # it scores the model on the readers' labels
    record = active_model(db, "classifier", scheme)
    if record is None:
        raise MdsdysError(f"No active classifier for scheme {scheme!r} yet; train one on the Train page.")
    samples = _evaluation_cells(db, record.path, scheme, on)
    if not samples:
        raise MdsdysError(f"No cells to score on the {on} set yet." +
                          (" Settle disagreements on the Consensus page first." if on == "consensus" else ""))
    classifier = load_classifier(record.path)
    y_true = np.array([classifier.codes.index(s.code) for s in samples])
    proba = predict_by_slide(classifier, samples)
    report = stats.classification_report(y_true, proba, classifier.codes)
    return {"version": record.version, "set": on, "n": len(samples), "report": report,
            "estimates": stats.table3_estimates(y_true, proba, classifier.codes),
            "macro_f1": stats.macro_f1_estimate(y_true, proba.argmax(1), len(classifier.codes)),
            "accuracy": stats.proportion_estimate(int(np.sum(y_true == proba.argmax(1))), len(samples)),
            "roc": stats.roc_points(y_true, proba, classifier.codes),
            "reliability": stats.reliability_bins(y_true, proba)}


def _evaluation_cells(db: Database, checkpoint_path: str, scheme: str, on: str) -> list:
    if on not in EVALUATION_SETS:
        raise MdsdysError(f"Evaluate on one of {', '.join(EVALUATION_SETS)}, not {on!r}.")
    if on == "test":
        return training_samples(db, scheme, cell_ids=load_checkpoint(checkpoint_path).get("test_cells") or [])
    settled = {c.cell_id for c in final_labels(db, scheme, human_only=True) if c.label.source == "consensus"}
    return training_samples(db, scheme, cell_ids=settled)
