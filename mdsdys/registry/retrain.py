"""Retraining from the store: what a run would use (shown before it starts), queuing it, and the runs themselves.

Both `*_from_store` functions read their samples, train (no connection held meanwhile) and register
the new version; the worker, the CLI and the tests all call them (STYLE.md, convention 6).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from typing import Any

from sqlite_utils import Database

from mdsdys.accounts import policy
from mdsdys.annotate.masks import MIN_MASKS
from mdsdys.checkpoints import load_checkpoint
from mdsdys.classify.archs import list_models
from mdsdys.classify.proposals import training_samples
from mdsdys.classify.train import (
    ClsTrainConfig,
    StartingPoint,
    check_training_counts,
    plan_split,
    train_classifier,
)
from mdsdys.compute import EpochReport, current_world
from mdsdys.config import Settings
from mdsdys.errors import MdsdysError
from mdsdys.jobs import queue
from mdsdys.registry.versions import register_model
from mdsdys.segment.train import (
    SegmenterResult,
    SegTrainConfig,
    mask_samples,
    train_segmenter,
)
from mdsdys.store import connect
from mdsdys.store.jobs import has_active_job
from mdsdys.schemes import UNASSESSABLE
from mdsdys.store.labels import final_labels
from mdsdys.store.models import ModelRecord, active_model
from mdsdys.store.patches import mask_counts_by_slide
from mdsdys.store.slides import load_scheme
from mdsdys.store.users import User

# Training labels per class a candidate needs (issue 14: one trained on ~30 reads, ~4 a class, scored
# macro-F1 0.054). Ten is the least at which a from-scratch CNN's per-class F1 is more than noise on
# the demo; the paper had 8,065 labels, 194 in its rarest class.
MIN_TRAIN_PER_CLASS = 10


def segmenter_preview(db: Database) -> dict[str, Any]:
    """Masks per slide, how validation will be split, and the default settings."""
    rows = mask_counts_by_slide(db)
    masked = sum(r["masked_fields"] for r in rows)
    return {
        "masks_by_slide": rows,
        "masked_fields": masked,
        "enough": masked >= MIN_MASKS,
        "needed": MIN_MASKS,
        "split": "by slide (whole slides held out for validation)" if len(rows) >= 2
        else "by field (only one slide has masks)",
        "settings": dataclasses.asdict(SegTrainConfig()),
    }


def classifier_preview(db: Database, scheme: str) -> dict[str, Any]:
    """Human labels per class and where they came from, the slides, and the split rule."""
    cells = [c for c in final_labels(db, scheme, human_only=True) if c.label.code != UNASSESSABLE]  # as training
    by_class: dict[str, Counter] = {}
    for cell in cells:
        by_class.setdefault(cell.label.code, Counter())[cell.label.source] += 1
    slides = Counter(cell.slide for cell in cells)
    return {
        "labels": [{"class": code, "total": sum(c.values()), **dict(c)} for code, c in sorted(by_class.items())],
        "slides": dict(slides),
        "cells": len(cells),
        "split": _split_rule(db, scheme, len(slides)),
        "start": _start_rule(db, scheme),
        "min_train_per_class": MIN_TRAIN_PER_CLASS,
    }


def _start_rule(db: Database, scheme: str) -> str:
    """Where a retrain's weights will start, in words."""
    current = active_model(db, "classifier", scheme)
    if current is None:
        return "from scratch (the scheme has no active classifier yet)"
    tune = ClsTrainConfig().fine_tune
    return (f"from the active {current.version}'s weights ({tune.epochs} epochs, each slide drawn as often as the "
            f"largest) when the architecture matches and some, but at most half, of the training cells are new "
            f"to it; otherwise from scratch")


def _split_rule(db: Database, scheme: str, slides: int) -> str:
    """The split a retrain will make, in words."""
    if active_model(db, "classifier", scheme) is not None:
        return ("the active model's test cells stay the test set (both models are compared on them), joined by a "
                "stratified share of cells neither model has seen; no slide's training cells move to test")
    if slides >= 2:
        return "by slide (patient) while training keeps at least half the cells, else stratified by cell"
    return "stratified by cell (only one slide has labels)"


def queue_training(settings: Settings, user: User, kind: str, overrides: dict[str, Any]) -> int:
    """Queue a retraining job for an adjudicator or admin; one training job at a time."""
    policy.require(user, "train")
    job_kind = {"segmenter": "train_segmenter", "classifier": "train_classifier"}[kind]
    with connect(settings.db_path) as db:
        if has_active_job(db, "train_segmenter") or has_active_job(db, "train_classifier"):
            raise MdsdysError("A training job is already queued or running; wait for it or cancel it first.")
    return queue.enqueue(settings, job_kind, {"settings": overrides}, user)


def _active_start(current: ModelRecord | None) -> StartingPoint | None:
    """The active classifier as a retrain's starting point: its frozen test cells and its weights."""
    if current is None:
        return None
    return StartingPoint(load_checkpoint(current.path), current.version)


def _frozen_cells(start: StartingPoint | None) -> tuple[list[int] | None, list[int] | None]:
    """(test cell ids, seen cell ids) of the active classifier; seen is None for checkpoints before issue 14."""
    if start is None:
        return None, None
    return start.checkpoint.get("test_cells"), start.checkpoint.get("seen_cells")


def classifier_archs() -> list[str]:
    """Registered classifier architectures, the default first."""
    default = ClsTrainConfig().arch
    return [default, *sorted(name for name in list_models() if name != default)]


def classifier_defaults() -> dict[str, Any]:
    """The default classifier training settings."""
    return dataclasses.asdict(ClsTrainConfig())


def train_classifier_from_store(settings: Settings, scheme_name: str, config: ClsTrainConfig, user: User | None = None,
                                on_epoch: Callable[[Any], None] | None = None,
                                should_stop: Callable[[], bool] | None = None,
                                min_train_per_class: int | None = None) -> tuple[Any, ModelRecord | None]:
    """`mdsdys train classifier` and the worker: train on the scheme's human labels, then register.

    When the scheme has an active classifier, the new one is tested on the same frozen test cells
    (plus a share of cells neither model has seen), so the promotion gate compares like with like,
    and starts from its weights when they fit (classify.train.FineTuneConfig).
    A candidate with fewer than MIN_TRAIN_PER_CLASS training labels in a class is refused before
    training, saying how many more it needs. Connections are not held while training.
    """
    if user is not None:  # None: the worker or the command line, as the system account
        policy.require(user, "train")
    minimum = MIN_TRAIN_PER_CLASS if min_train_per_class is None else min_train_per_class
    with connect(settings.db_path) as db:
        scheme = load_scheme(db, scheme_name)
        samples = training_samples(db, scheme_name, size=config.input_size)
        current = active_model(db, "classifier", scheme_name)
    start = _active_start(current)
    frozen, seen = _frozen_cells(start)
    check_training_counts(plan_split(samples, scheme, config, frozen, seen), minimum)
    result = train_classifier(samples, scheme, config, on_epoch, should_stop, frozen_test=frozen, seen=seen,
                              start_from=start)
    if not current_world().is_main:  # under torchrun rank 0 alone registers
        return result, None
    with connect(settings.db_path) as db:
        record = register_model(db, settings.models_dir, result.checkpoint, user)
    return result, record


def train_segmenter_from_store(settings: Settings, config: SegTrainConfig = SegTrainConfig(), user: User | None = None,
                     on_epoch: Callable[[EpochReport], None] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> tuple[SegmenterResult, ModelRecord | None]:
    """`mdsdys train segmenter`: train on every stored mask and register the model.

    The first segmenter becomes the active one (registry.register_model). Store connections are
    opened only to read the masks and to register, never held during training.
    """
    if user is not None:  # None: the worker or the command line, as the system account
        policy.require(user, "train")
    with connect(settings.db_path) as db:
        samples = mask_samples(db)
    result = train_segmenter(samples, config, on_epoch, should_stop)
    if not current_world().is_main:  # under torchrun rank 0 alone registers
        return result, None
    with connect(settings.db_path) as db:
        record = register_model(db, settings.models_dir, result.checkpoint, user)
    return result, record
