"""Promoting a model version, gated on the same test data, and rolling back (issue 6).

A classifier is compared with the active one by macro-F1 on the candidate's frozen test split;
a segmenter by Dice on the candidate's validation fields. Both models are scored on the same
cells or fields here, so the comparison is fair even when they were trained on different data.
A classifier adapted to a lab's own slides (issue 13) passes too when it gains more on the test cells
of the slides the active model never trained on than it loses on the rest, and loses there at most
ADAPTATION_TOLERANCE: the new slides' test cells are few beside the ones the active model knew, so the
pooled figure alone would refuse every adapted model (bench/cross_microscope.py: fine-tuning on 100
BCCD cells took them from 0.26 to 0.90 and cost 0.03 on PBC's 256).
After a promotion, detection or proposals are re-run in the background for unread cells only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlite_utils import Database

from mdsdys import stats
from mdsdys.accounts import policy
from mdsdys.checkpoints import load_checkpoint
from mdsdys.classify.classifier import classifier_from_checkpoint, predict_by_slide
from mdsdys.classify.proposals import training_samples
from mdsdys.config import Settings
from mdsdys.errors import MdsdysError, PromotionRefused
from mdsdys.jobs import queue
from mdsdys.segment import train
from mdsdys.segment.evaluate import evaluate_segmenter
from mdsdys.segment.segmenter import load_segmenter
from mdsdys.store import write_transaction
from mdsdys.store.audit import log_action
from mdsdys.store.cells import slides_of_cells
from mdsdys.store.models import ModelRecord, activate_model, active_model, get_model
from mdsdys.store.users import User



# macro-F1 an adapted classifier may lose on the slides the active model knew (see the module docstring),
# and the fewest test cells on new slides that can show it is better there.
ADAPTATION_TOLERANCE = 0.05
MIN_NEW_TEST_CELLS = 5


@dataclass(frozen=True)
class PartScores:
    """Both models' score on one part of the held-out data."""

    where: str
    candidate: float
    active: float


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
        pooled, parts = _classifier_scores(db, candidate, current)
    else:
        pooled, parts = _segmenter_scores(db, candidate, current), []
    allowed, reason = gate_verdict(pooled, parts, metric, candidate.version, current.version)
    return GateResult(allowed, metric, pooled.candidate, pooled.active, reason)


def gate_verdict(pooled: PartScores, parts: Sequence[PartScores], metric: str, candidate: str,
                 active: str) -> tuple[bool, str]:
    """(allowed, why): at least as good on all the held-out data, or, with `parts` = (the slides new to
    the active model, the slides it knew), a gain on the new ones larger than the loss on the known ones,
    which is at most ADAPTATION_TOLERANCE."""
    def line(verdict: str) -> str:
        return (f"{candidate} scores {metric} {pooled.candidate:.3f} on {pooled.where}, {verdict} the active "
                f"{active} ({pooled.active:.3f})")

    if pooled.candidate >= pooled.active:
        return True, line("at least as good as") + "."
    detail = "; ".join(f"{p.where}: {p.candidate:.3f} against {p.active:.3f}" for p in parts)
    if len(parts) == 2:
        new, known = parts
        gain, loss = new.candidate - new.active, known.active - known.candidate
        if gain > loss and loss <= ADAPTATION_TOLERANCE:
            return True, (line("below") + f", but it gains more on the slides {active} never trained on "
                          f"than it loses, at most {ADAPTATION_TOLERANCE}, on the ones it knew ({detail}).")
    return False, line("worse than") + (f" ({detail})." if detail else ".")


def _classifier_scores(db: Database, candidate: ModelRecord,
                       current: ModelRecord) -> tuple[PartScores, list[PartScores]]:
    """Both classifiers on the candidate's test cells: all of them, and (when the active model's training
    cells are known and the test cells hold at least MIN_NEW_TEST_CELLS of slides it never trained on and
    some of slides it did) those two parts."""
    checkpoints = [load_checkpoint(record.path) for record in (candidate, current)]  # each read once
    samples = training_samples(db, candidate.scheme, cell_ids=checkpoints[0].get("test_cells") or [])
    if not samples:
        raise MdsdysError(f"{candidate.version} has no test cells left in the store to compare on; "
                          "promote with force if you are sure.")
    results = []  # (true class indices, predicted ones, number of classes) of each model
    for checkpoint in checkpoints:
        classifier = classifier_from_checkpoint(checkpoint)
        y_true = np.array([classifier.codes.index(s.code) for s in samples])
        results.append((y_true, predict_by_slide(classifier, samples).argmax(1), len(classifier.codes)))

    def part(where: str, keep: np.ndarray) -> PartScores:
        new, old = (stats.macro_f1(y_true[keep], y_pred[keep], n) for y_true, y_pred, n in results)
        return PartScores(where, new, old)

    pooled = part(f"the same {len(samples)} test cells", np.ones(len(samples), dtype=bool))
    seen = checkpoints[1].get("seen_cells")
    if seen is None:  # a checkpoint from before issue 14 does not say what it trained on
        return pooled, []
    known_slides = slides_of_cells(db, seen)
    on_new = np.array([s.group not in known_slides for s in samples])
    if on_new.sum() < MIN_NEW_TEST_CELLS or on_new.all():
        return pooled, []
    return pooled, [part(f"the {int(on_new.sum())} test cells on slides new to {current.version}", on_new),
                    part(f"the {int((~on_new).sum())} on slides it trained on", ~on_new)]


def _segmenter_scores(db: Database, candidate: ModelRecord, current: ModelRecord) -> PartScores:
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
    return PartScores(where, new, old)


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
