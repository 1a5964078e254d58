"""Promoting a model version, gated on the same test data, and rolling back (issue 6).

A classifier is compared with the active one by macro-F1 on the candidate's frozen test split;
a segmenter by Dice on the candidate's validation fields. Both models are scored on the same
cells or fields here, so the comparison is fair even when they were trained on different data.
After a promotion, detection or proposals are re-run in the background for unread cells only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlite_utils import Database

from mdsdys import stats
from mdsdys.accounts import policy
from mdsdys.checkpoints import load_checkpoint
from mdsdys.classify.classifier import load_classifier, predict_by_slide
from mdsdys.classify.proposals import training_samples
from mdsdys.config import Settings
from mdsdys.errors import MdsdysError, PromotionRefused
from mdsdys.jobs import queue
from mdsdys.segment import train
from mdsdys.segment.evaluate import evaluate_segmenter
from mdsdys.segment.segmenter import load_segmenter
from mdsdys.store import write_transaction
from mdsdys.store.audit import log_action
from mdsdys.store.models import ModelRecord, activate_model, active_model, get_model
from mdsdys.store.users import User



@dataclass(frozen=True)
class GateResult:
    """The gate's verdict: both models' scores on the same data, and why."""

    allowed: bool
    metric: str
    candidate: float | None
    active: float | None
    reason: str


def promotion_gate(db: Database, candidate: ModelRecord) -> GateResult:
    """Score the candidate and the active model of its kind on the candidate's held-out data."""
    current = active_model(db, candidate.kind, candidate.scheme)
    metric = "macro_f1" if candidate.kind == "classifier" else "dice"
    if current is None or current.id == candidate.id:
        return GateResult(True, metric, None, None, "No other active model: nothing to compare with.")
    if candidate.kind == "classifier":
        new, old, where = _classifier_scores(db, candidate, current)
    else:
        new, old, where = _segmenter_scores(db, candidate, current)
    allowed = new >= old
    verdict = "at least as good as" if allowed else "worse than"
    return GateResult(allowed, metric, new, old, f"{candidate.version} scores {metric} {new:.3f} on {where}, "
                      f"{verdict} the active {current.version} ({old:.3f}).")


def _classifier_scores(db: Database, candidate: ModelRecord, current: ModelRecord) -> tuple[float, float, str]:
    test_cells = set(load_checkpoint(candidate.path).get("test_cells") or [])
    samples = [s for s in training_samples(db, candidate.scheme) if s.cell_id in test_cells]
    if not samples:
        raise MdsdysError(f"{candidate.version} has no test cells left in the store to compare on; "
                          "promote with force if you are sure.")
    scores = []
    for record in (candidate, current):
        classifier = load_classifier(record.path)
        y_true = np.array([classifier.codes.index(s.code) for s in samples])
        y_pred = predict_by_slide(classifier, samples).argmax(1)
        scores.append(stats.macro_f1(y_true, y_pred, len(classifier.codes)))
    return scores[0], scores[1], f"the same {len(samples)} test cells"


def _segmenter_scores(db: Database, candidate: ModelRecord, current: ModelRecord) -> tuple[float, float, str]:
    data = load_checkpoint(candidate.path).get("data", {})
    samples = train.mask_samples(db)
    val_slides = set(data.get("val_slides") or [])
    held_out = [s for s in samples if s.group in val_slides] if data.get("split") == "by slide" else []
    pairs = [(f"field {i}", s.image, s.mask) for i, s in enumerate(held_out or samples)]
    if not pairs:
        raise MdsdysError("There are no masked fields to compare the segmenters on.")
    where = f"the candidate's {len(pairs)} validation fields" if held_out else f"all {len(pairs)} masked fields"
    new = evaluate_segmenter(load_segmenter(candidate.path), pairs)["dice"]
    old = evaluate_segmenter(load_segmenter(current.path), pairs)["dice"]
    return new, old, where


def promote(db: Database, settings: Settings, user: User, model_id: int, force: bool = False,
            start_worker: bool = True) -> GateResult:
    """Make a version active if the gate allows (or `force`), audit it, and re-run unread cells."""
    policy.require(user, "promote")
    candidate = get_model(db, model_id)
    gate = promotion_gate(db, candidate)
    if not gate.allowed and not force:
        raise PromotionRefused(f"Not promoted: {gate.reason} Tick 'force' to promote anyway.")
    with write_transaction(db):  # activation and its audit row land together or not at all (issue 16)
        previous = activate_model(db, model_id)
        log_action(db, user, "model_promote", "model", model_id,
                   before={"active": previous.version if previous else None},
                   after={"active": candidate.version, "forced": force and not gate.allowed, "gate": gate.reason})
    _reprocess_unread(settings, user, candidate, start_worker)
    return gate


def rollback(db: Database, settings: Settings, user: User, model_id: int, start_worker: bool = True) -> None:
    """Make an earlier version active again (no gate: it was trusted before), audited as a rollback."""
    policy.require(user, "promote")
    target = get_model(db, model_id)
    with write_transaction(db):  # activation and its audit row land together or not at all (issue 16)
        previous = activate_model(db, model_id)
        log_action(db, user, "model_rollback", "model", model_id,
                   before={"active": previous.version if previous else None}, after={"active": target.version})
    _reprocess_unread(settings, user, target, start_worker)


def _reprocess_unread(settings: Settings, user: User, model: ModelRecord, start_worker: bool) -> int:
    """Queue detection (segmenter) or proposals (classifier) again; read cells are never touched."""
    if model.kind == "segmenter":
        return queue.enqueue(settings, "segment_slides", {"after_promotion": model.version}, user, start_worker)
    return queue.enqueue(settings, "propose_slides", {"scheme": model.scheme, "unread_only": True,
                                                     "after_promotion": model.version}, user, start_worker)
