"""A lab's first slide (issue 14 item 1): import queues detection by itself, with the starter when needed."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from mdsdys.accounts.auth import create_user
from mdsdys.config import load_settings
from mdsdys.demo import synth
from mdsdys.ingest import importer
from mdsdys.jobs import progress, worker
from mdsdys.registry.starter import segmenter_for_slide, starter_record
from mdsdys.segment import starter as starter_module
from mdsdys.segment.starter import STARTER_VERSION, pick_segmenter
from mdsdys.segment.train import MaskSample, SegTrainConfig, train_segmenter
from mdsdys.segment.segmenter import Segmenter
from mdsdys.segment.unet import UNet, UNetConfig
from mdsdys.errors import NotFoundError
from mdsdys.store import connect
from mdsdys.store.jobs import get_job

TINY = SegTrainConfig(epochs=2, steps_per_epoch=2, batch_size=2, crop=64, max_seconds=None,
                      unet=UNetConfig(depth=2, width=4))


def _fields(n: int, seed: int = 0) -> list[synth.SynthPatch]:
    rng = np.random.default_rng(seed)
    return [synth.generate_patch(rng, 96, 96, n_cells=3) for _ in range(n)]


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def tiny_starter(home, tmp_path_factory, monkeypatch):
    """A tiny segmenter checkpoint standing in for the shipped starter (the real one is for real fields)."""
    samples = [MaskSample(p.image, p.mask, "synthetic") for p in _fields(5)]
    checkpoint = train_segmenter(samples, TINY).checkpoint
    path = tmp_path_factory.mktemp("starter") / "segmenter.pt"
    torch.save(checkpoint, path)
    monkeypatch.setenv("MDSDYS_STARTER_SEGMENTER", str(path))
    return path


def _import_fields(settings, user, name: str = "BM-1", n: int = 3) -> importer.ImportReport:
    files = [importer.SourceFile(f"f{k}.png", (lambda b=_png(p.image): b)) for k, p in enumerate(_fields(n, 7))]
    with connect(settings.db_path) as db:
        return importer.run_import(db, "patches", name, files, user=user, settings=settings, start_worker=False)


def test_importing_fields_queues_detection_that_uses_the_starter_when_the_store_has_no_segmenter(tiny_starter):
    settings = load_settings()
    with connect(settings.db_path) as db:
        admin = create_user(db, "ada", "correct horse battery", "admin")
    report = _import_fields(settings, admin)
    assert report.detection_job is not None
    with connect(settings.db_path) as db:
        job = get_job(db, report.detection_job)
        assert job.params["slide_ids"] == [report.slide_id] and job.params["propose"] is True
        assert progress.slide_jobs(db)[report.slide_id].state == "queued"
    assert worker.run_worker(settings, idle_exit_s=0, max_jobs=1) == 1
    with connect(settings.db_path) as db:
        job = get_job(db, report.detection_job)
        assert job.state == "done", job.error
        assert job.progress["result"]["models"][str(report.slide_id)]["model"] == STARTER_VERSION
        cells = db.execute("SELECT COUNT(*) FROM cells c JOIN patches p ON p.id = c.patch_id WHERE p.slide_id = ?",
                           [report.slide_id]).fetchone()[0]
        status = progress.slide_jobs(db)[report.slide_id]
    assert cells > 0
    # No classifier yet: the line says so instead of pretending proposals exist.
    assert status.state == "done" and "no classifier yet" in status.text


def test_an_import_without_any_segmenter_says_why_nothing_was_detected(home):
    settings = load_settings()
    with connect(settings.db_path) as db:
        admin = create_user(db, "ada", "correct horse battery", "admin")
    report = _import_fields(settings, admin)
    assert report.detection_job is None and "No segmenter yet" in report.detection_note
    again = _import_fields(settings, admin)  # the same files: nothing new
    assert again.detection_job is None and "No new fields" in again.detection_note


def test_the_starter_is_registered_once_and_never_made_active(tiny_starter):
    settings = load_settings()
    with connect(settings.db_path) as db:
        first, second = starter_record(db, settings), starter_record(db, settings)
        assert first.id == second.id and first.status == "candidate"
        assert first.version == STARTER_VERSION and first.metrics["starter"] is True


def _constant_segmenter(logit: float) -> Segmenter:
    """A segmenter whose every pixel gets the same nucleus logit: 0 = wholly unsure, -8 = sure background."""
    net = UNet(UNetConfig(depth=2, width=4))
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.fill_(logit)
    return Segmenter(net.eval(), 32.0)


def test_with_both_segmenters_the_more_certain_one_on_the_slide_wins():
    sure, unsure = _constant_segmenter(-8.0), _constant_segmenter(0.0)
    images = [p.image for p in _fields(2, 11)]
    choice = pick_segmenter(unsure, sure, images, 24.0)
    assert choice.name == "starter" and choice.uncertainty["starter"] < 0.01 < 0.99 < choice.uncertainty["own"]
    # The store's own model keeps the slide unless the starter is clearly (by the margin) more certain.
    assert pick_segmenter(sure, _constant_segmenter(-7.9), images, 24.0).name == "own"


def test_segmenter_for_slide_refuses_clearly_when_there_is_none(home):
    settings = load_settings()
    with connect(settings.db_path) as db:
        report = importer.run_import(db, "patches", "BM-2", [importer.SourceFile("a.png", lambda: _png(
            _fields(1)[0].image))])
        with pytest.raises(NotFoundError, match="no segmenter yet"):
            segmenter_for_slide(db, settings, report.slide_id)


def test_a_certain_segmenter_whose_edges_are_off_the_stain_does_not_take_the_slide(monkeypatch):
    """The shipped starter on another microscope's smears: sure of itself, masks twice too big."""
    own, starter = object(), object()
    monkeypatch.setattr(starter_module, "slide_uncertainty", lambda m, images, d: 0.05 if m is starter else 0.20)
    edges = {"own": 0.1, "starter": 1.2}
    monkeypatch.setattr(starter_module, "slide_edge_error", lambda m, images, d: edges["starter" if m is starter else "own"])
    choice = pick_segmenter(own, starter, [], 18.0)
    assert choice.name == "own" and "edges are off" in choice.reason
    edges.update(own=1.2, starter=0.1)  # and the other way round
    assert pick_segmenter(own, starter, [], 18.0).name == "starter"
    edges.update(own=0.2, starter=0.3)  # both follow the stain: the more certain one wins
    assert pick_segmenter(own, starter, [], 18.0).name == "starter"
