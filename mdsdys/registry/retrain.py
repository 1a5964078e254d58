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

from mdsdys.accounts import auth
from mdsdys.annotate.masks import MIN_MASKS
from mdsdys.checkpoints import load_checkpoint
from mdsdys.classify.archs import list_models
from mdsdys.classify.proposals import training_samples
from mdsdys.classify.train import ClsTrainConfig, train_classifier
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
from mdsdys.store.labels import final_labels
from mdsdys.store.models import ModelRecord, active_model
from mdsdys.store.patches import mask_counts_by_slide
from mdsdys.store.slides import load_scheme
from mdsdys.store.users import User

TRAIN_ROLES = ("adjudicator",)


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
    cells = final_labels(db, scheme, human_only=True)
    by_class: dict[str, Counter] = {}
    for cell in cells:
        by_class.setdefault(cell.label.code, Counter())[cell.label.source] += 1
    slides = Counter(cell.slide for cell in cells)
    return {
        "labels": [{"class": code, "total": sum(c.values()), **dict(c)} for code, c in sorted(by_class.items())],
        "slides": dict(slides),
        "cells": len(cells),
        "split": "by slide (patient): no patient's cells on both sides" if len(slides) >= 2
        else "stratified by cell (only one slide has labels)",
    }


def queue_training(settings: Settings, user: User, kind: str, overrides: dict[str, Any]) -> int:
    """Queue a retraining job for an adjudicator or admin; one training job at a time."""
    auth.require_role(user, *TRAIN_ROLES)
    job_kind = {"segmenter": "train_segmenter", "classifier": "train_classifier"}[kind]
    with connect(settings.db_path) as db:
        if has_active_job(db, "train_segmenter") or has_active_job(db, "train_classifier"):
            raise MdsdysError("A training job is already queued or running; wait for it or cancel it first.")
    return queue.enqueue(settings, job_kind, {"settings": overrides}, user)


def classifier_archs() -> list[str]:
    """Registered classifier architectures, the default first."""
    default = ClsTrainConfig().arch
    return [default, *sorted(name for name in list_models() if name != default)]


def classifier_defaults() -> dict[str, Any]:
    """The default classifier training settings."""
    return dataclasses.asdict(ClsTrainConfig())


def train_classifier_from_store(settings: Settings, scheme_name: str, config: ClsTrainConfig, user: User | None = None,
                                on_epoch: Callable[[Any], None] | None = None,
                                should_stop: Callable[[], bool] | None = None) -> tuple[Any, ModelRecord | None]:
    """`mdsdys train classifier` and the worker: train on the scheme's human labels, then register.

    When the scheme has an active classifier, the new one is tested on the same frozen test cells,
    so the promotion gate compares like with like. Connections are not held while training.
    """
    with connect(settings.db_path) as db:
        scheme = load_scheme(db, scheme_name)
        samples = training_samples(db, scheme_name, size=config.input_size)
        current = active_model(db, "classifier", scheme_name)
    frozen = load_checkpoint(current.path).get("test_cells") if current else None
    result = train_classifier(samples, scheme, config, on_epoch, should_stop, frozen_test=frozen)
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
    with connect(settings.db_path) as db:
        samples = mask_samples(db)
    result = train_segmenter(samples, config, on_epoch, should_stop)
    if not current_world().is_main:  # under torchrun rank 0 alone registers
        return result, None
    with connect(settings.db_path) as db:
        record = register_model(db, settings.models_dir, result.checkpoint, user)
    return result, record
