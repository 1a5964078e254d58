"""Job handlers: the long work the background worker runs (training, detection, proposals).

Each handler reads its parameters from the job, reports progress through the JobContext,
checks for cancellation between steps, and returns a small JSON-able summary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from mdsdys.classify.proposals import propose_labels
from mdsdys.classify.train import ClsTrainConfig
from mdsdys.errors import MdsdysError
from mdsdys.jobs import queue
from mdsdys.jobs.context import JobContext
from mdsdys.registry import retrain
from mdsdys.registry.starter import segmenter_for_slide
from mdsdys.schemes import DEFAULT_SCHEME_NAME
from mdsdys.segment import detect
from mdsdys.segment.train import SegTrainConfig
from mdsdys.store import connect
from mdsdys.store.models import active_model
from mdsdys.store.slides import get_slide, list_slides
from mdsdys.store.users import User, get_user, system_user

Handler = Callable[[JobContext], dict[str, Any]]
HANDLERS: dict[str, Handler] = {}


def job_handler(kind: str) -> Callable[[Handler], Handler]:
    """Register a function as the handler of a job kind (one of mdsdys.jobs.queue.JOB_KINDS)."""
    def register(function: Handler) -> Handler:
        if kind not in queue.JOB_KINDS:
            raise ValueError(f"Add {kind!r} to mdsdys.jobs.queue.JOB_KINDS before giving it a handler.")
        HANDLERS[kind] = function
        return function
    return register


def _job_user(ctx: JobContext) -> User:
    with connect(ctx.settings.db_path) as db:
        return get_user(db, ctx.job.created_by) if ctx.job.created_by else system_user(db)


def apply_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """A copy of a frozen config dataclass with the given fields changed (nested dataclasses too).

    Unknown names are refused with the list of known ones, so a typo in advanced settings is caught.
    """
    known = {f.name: f for f in dataclasses.fields(config)}
    changes = {}
    for name, value in overrides.items():
        if name not in known:
            raise MdsdysError(f"Unknown setting {name!r}; known: {', '.join(sorted(known))}.")
        current = getattr(config, name)
        changes[name] = apply_overrides(current, value) if dataclasses.is_dataclass(current) else value
    return dataclasses.replace(config, **changes)


def _progress_reporter(ctx: JobContext, metric: str) -> Callable[[Any], None]:
    """An on_epoch callback that stores the epoch, curves, metric and ETA on the job."""
    history: list[dict[str, Any]] = []

    def on_epoch(report: Any) -> None:
        row = dataclasses.asdict(report)
        history.append(row)
        remaining = report.epochs - report.epoch
        ctx.report(epoch=report.epoch, epochs=report.epochs, metric=metric, value=row.get(metric),
                   eta_s=report.seconds / max(report.epoch, 1) * remaining, history=history)
        ctx.check_cancelled()
    return on_epoch


@job_handler("train_segmenter")
def train_segmenter_job(ctx: JobContext, settings: dict[str, Any] | None = None,
                        follow_up: bool = True) -> dict[str, Any]:
    """Train a U-Net on every stored mask and register it (the first one becomes active).

    When the new model is active (the first segmenter), detection on every slide is queued next
    (`follow_up`): it finds the cells to review and scores each field's uncertainty for Annotate.
    A later model waits for promotion, which queues the same (mdsdys.registry.promotion).
    """
    config = apply_overrides(SegTrainConfig(), ctx.params.get("settings", {}) if settings is None else settings)
    ctx.report(stage="reading masks", metric="val_dice")
    result, record = retrain.train_segmenter_from_store(ctx.settings, config, _job_user(ctx),
                                               _progress_reporter(ctx, "val_dice"), ctx.should_stop)
    if follow_up and record.status == "active":
        queue.enqueue(ctx.settings, "segment_slides", {"after_first_model": record.version}, _job_user(ctx),
                     start_worker=False)
    return {"model_id": record.id, "version": record.version, "status": record.status,
            "split": result.split, "dice": result.metrics.get("val_dice")}


def _check(ctx: JobContext) -> Callable[[int, int, str], None]:
    """A progress callback for per-field/per-batch work that also honours cancel."""
    def progress(done: int, total: int, name: str) -> None:
        ctx.report(done=done, total=total, current=name)
        ctx.check_cancelled()
    return progress


@job_handler("segment_slides")
def segment_slides_job(ctx: JobContext) -> dict[str, Any]:
    """Detect cells on the given slides (default: all); read cells are kept.

    Each slide is detected with the store's segmenter, the shipped starter when the store has none,
    or the more certain of the two on that slide (registry.starter). With params["propose"] (set
    after an import), the scheme's active classifier then proposes labels for the slide's new
    cells, so an imported slide reaches Review without anyone starting anything.
    """
    with connect(ctx.settings.db_path) as db:
        slide_ids = ctx.params.get("slide_ids") or [s.id for s in list_slides(db)]
    totals: dict[str, Any] = {"slides": 0, "added": 0, "removed": 0, "proposed": 0, "models": {}}
    for slide_id in slide_ids:
        ctx.report(stage=f"choosing a segmenter for slide {slide_id}")
        with connect(ctx.settings.db_path) as db:
            chosen = segmenter_for_slide(db, ctx.settings, slide_id)
            ctx.report(stage=f"detecting cells on slide {slide_id} with {chosen.record.version}")
            summary = detect.segment_slide(db, slide_id, chosen.record, progress=_check(ctx))
        totals["slides"] += 1
        totals["added"] += summary["added"]
        totals["removed"] += summary["removed"]
        totals["models"][str(slide_id)] = {"model": chosen.record.version, "why": chosen.reason,
                                           "diameter": summary["diameter"]}
        if ctx.params.get("propose"):
            totals["proposed"] += _propose_slide(ctx, slide_id)
    return totals


def _propose_slide(ctx: JobContext, slide_id: int) -> int:
    """Proposals for one slide's unread cells when its scheme has an active classifier; cells proposed."""
    with connect(ctx.settings.db_path) as db:
        slide = get_slide(db, slide_id)
        if active_model(db, "classifier", slide.scheme_name) is None:
            ctx.report(stage=f"no classifier for scheme {slide.scheme_name} yet: cells await a reader")
            return 0
        ctx.report(stage=f"proposing labels on {slide.case_id}")
        step = _check(ctx)
        return propose_labels(db, slide_id, unread_only=True,
                              progress=lambda done, n: step(done, n, slide.case_id))


@job_handler("train_classifier")
def train_classifier_job(ctx: JobContext, settings: dict[str, Any] | None = None,
                         follow_up: bool = True) -> dict[str, Any]:
    """Train a classifier on the scheme's human labels, on the active model's test split when one exists.

    The scheme's first classifier is active at once, so proposals for its slides are queued next.
    """
    overrides = dict(ctx.params.get("settings", {}) if settings is None else settings)
    scheme_name = overrides.pop("scheme", DEFAULT_SCHEME_NAME)
    config = apply_overrides(ClsTrainConfig(), overrides)
    ctx.report(stage="reading labelled cells", metric="val_macro_f1")
    result, record = retrain.train_classifier_from_store(ctx.settings, scheme_name, config, _job_user(ctx),
                                                 _progress_reporter(ctx, "val_macro_f1"), ctx.should_stop)
    if follow_up and record.status == "active":
        queue.enqueue(ctx.settings, "propose_slides", {"scheme": scheme_name, "after_first_model": record.version},
                     _job_user(ctx), start_worker=False)
    return {"model_id": record.id, "version": record.version, "status": record.status,
            "macro_f1": result.metrics.get("macro_f1"), "split": result.split.kind,
            "start": result.checkpoint["start"]["how"]}


@job_handler("propose_slides")
def propose_slides_job(ctx: JobContext) -> dict[str, Any]:
    """Run the active classifier over slides' cells (all, or only unread ones after a promotion)."""
    unread_only = bool(ctx.params.get("unread_only"))
    with connect(ctx.settings.db_path) as db:
        slides = [s for s in list_slides(db) if s.id in (ctx.params.get("slide_ids") or [s.id])
                  and (not ctx.params.get("scheme") or s.scheme_name == ctx.params["scheme"])]
    total = 0
    for slide in slides:
        ctx.report(stage=f"proposing labels on {slide.case_id}")
        with connect(ctx.settings.db_path) as db:
            if active_model(db, "classifier", slide.scheme_name) is None:
                continue
            step = _check(ctx)
            total += propose_labels(db, slide.id, unread_only=unread_only,
                                    progress=lambda done, n, step=step, case=slide.case_id: step(done, n, case))
    return {"cells": total, "slides": len(slides), "unread_only": unread_only}


# The demo's first models: small enough to train in a minute or two on a laptop CPU.
DEMO_SEGMENTER = {"epochs": 8, "steps_per_epoch": 20, "max_seconds": 240.0}
DEMO_CLASSIFIER = {"epochs": 12, "max_minutes": 4.0}


@job_handler("demo_bootstrap")
def demo_bootstrap_job(ctx: JobContext) -> dict[str, Any]:
    """The demo's first run: train a small segmenter, detect cells, train a small classifier, propose.

    Parameters 'segmenter' and 'classifier' may override the demo's training settings.
    """
    done: dict[str, Any] = {}
    with connect(ctx.settings.db_path) as db:
        has_segmenter = active_model(db, "segmenter") is not None
        has_classifier = active_model(db, "classifier", DEFAULT_SCHEME_NAME) is not None
    if not has_segmenter:
        done["segmenter"] = train_segmenter_job(ctx, ctx.params.get("segmenter", DEMO_SEGMENTER), follow_up=False)
    done["detection"] = segment_slides_job(ctx)
    if not has_classifier:
        done["classifier"] = train_classifier_job(ctx, ctx.params.get("classifier", DEMO_CLASSIFIER), follow_up=False)
    done["proposals"] = propose_slides_job(ctx)
    return done
