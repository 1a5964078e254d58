"""The cell classifier: registry, training, splits, calibration, checkpoints, proposals and evaluation."""

from __future__ import annotations

import dataclasses
import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from mdsdys.augment import CLASSIFIER_AUGMENT, ISSUE4_CLASSIFIER_AUGMENT, AugmentConfig
from mdsdys.checkpoints import save_checkpoint
from mdsdys.classify.archs import ARCHITECTURES, create_model, get_arch
from mdsdys.classify.classifier import (
    CellSample,
    classifier_from_checkpoint,
    forward_logits,
    load_classifier,
    predict_proba,
)
from mdsdys.classify import proposals
from mdsdys.classify.evaluate import evaluate_classifier, markdown_table
from mdsdys.classify.performance import model_performance
from mdsdys.classify.proposals import (
    CellRef,
    cell_sources,
    decode_sources,
    propose_labels,
    training_samples,
)
from mdsdys.classify.train import (
    ClsTrainConfig,
    FineTuneConfig,
    StartingPoint,
    fit_temperature,
    paper_config,
    train_classifier,
)
from mdsdys.demo.synth import generate_cell
from mdsdys.errors import (
    MdsdysError,
    NoCellsError,
    NotFoundError,
    PermissionDeniedError,
    SchemeError,
    TrainingCancelled,
    TrainingDataError,
    UnknownArchitectureError,
)
from mdsdys.imaging.thumbnails import (
    THUMBNAIL_SIDE,
    decode_crops,
    decode_thumbnail,
    image_square,
    square_resize,
    thumbnails_from_image,
)
from mdsdys.ingest.importer import SourceFile, files_in_folder, import_cells
from mdsdys.registry import versions
from mdsdys.schemes import scheme_from_folders
from mdsdys.splits import split_samples
from mdsdys.store.cells import (
    cell_thumbnails,
    get_proposal,
    list_cells,
    patch_image_data,
    save_proposals,
    slides_of_cells,
)
from mdsdys.store.consensus import put_decision
from mdsdys.store.patches import StoredImage, add_cell, add_patch
from mdsdys.store.reads import put_read
from mdsdys.store.slides import ensure_default_scheme, ensure_slide, find_slide
from mdsdys.store.users import insert_user

SCHEME = scheme_from_folders("syn2", ["EN", "GN"])  # what import-cells --scheme syn2 makes of EN/ and GN/
TINY = ClsTrainConfig(arch="cellnet", input_size=32, epochs=6, batch_size=16, lr=3e-3, patience=6)


def synthetic_cells(codes: list[str], per_class: int, seed: int, size: int = 40) -> list[tuple[np.ndarray, str]]:
    """(crop, code) pairs from the project's seeded single-cell generator."""
    rng = np.random.default_rng(seed)
    return [(generate_cell(rng, code, size)[0], code) for code in codes for _ in range(per_class)]


def samples_of(cells: list[tuple[np.ndarray, str]], group: str = "SYN-1") -> list[CellSample]:
    return [CellSample(crop, code, group, i + 1) for i, (crop, code) in enumerate(cells)]


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tiny():
    """A small classifier trained once on synthetic EN and GN cells (scheme syn2)."""
    return train_classifier(samples_of(synthetic_cells(["EN", "GN"], 30, seed=1)), SCHEME, TINY)


# ---------------------------------------------------------------- registry

@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_trains_a_step_and_predicts(arch):
    size = max(32, get_arch(arch).min_input)
    config = ClsTrainConfig(arch=arch, input_size=size, epochs=1, batch_size=8, min_per_class=3)
    cells = synthetic_cells(["EN", "GN"], 5, seed=2, size=36)
    result = train_classifier(samples_of(cells), SCHEME, config)
    proba = predict_proba(result.classifier, [c for c, _ in cells[:3]])
    assert proba.shape == (3, 2)
    assert np.allclose(proba.sum(1), 1, atol=1e-5)
    assert math.isfinite(result.history[0].train_loss)


def test_unknown_architecture_names_the_choices():
    with pytest.raises(UnknownArchitectureError, match="resnet18"):
        create_model("vgg99", 8)


# ---------------------------------------------------------------- training

def test_a_small_model_separates_two_synthetic_classes(tiny):
    fresh = synthetic_cells(["EN", "GN"], 20, seed=99)
    proba = predict_proba(tiny.classifier, [crop for crop, _ in fresh])
    truth = np.array([SCHEME.codes.index(code) for _, code in fresh])
    assert (proba.argmax(1) == truth).mean() >= 0.85  # chance is 0.5


def test_training_reports_each_epoch_and_keeps_the_best(tiny):
    assert [h.epoch for h in tiny.history] == list(range(1, len(tiny.history) + 1))
    best = tiny.history[-1].best_epoch
    assert tiny.metrics["best_epoch"] == best
    first_kept = math.ceil(TINY.epochs * 0.625)  # no model from before the one-cycle rate has halved is kept
    assert tiny.metrics["val_macro_f1"] == max(h.val_macro_f1 for h in tiny.history if h.epoch >= first_kept)


def test_a_one_cycle_run_keeps_a_model_from_after_the_rate_has_halved(tiny):
    best = tiny.history[-1].best_epoch
    assert best >= math.ceil(TINY.epochs * 0.625)  # warm-up 25%, then half the annealing
    assert tiny.history[best - 1].lr <= TINY.lr / 2 < max(e.lr for e in tiny.history)


def test_checkpoint_holds_what_the_registry_and_issue_6_need(tiny):
    ckpt = tiny.checkpoint
    assert ckpt["kind"] == "classifier" and ckpt["arch"] == "cellnet"
    assert ckpt["scheme"]["name"] == "syn2" and ckpt["config"]["input_size"] == 32
    assert set(ckpt["metrics"]["per_class"]["EN"]) >= {"sensitivity", "specificity", "auc", "f1", "ap", "npv"}
    assert len(ckpt["metrics"]["confusion"]) == 2
    assert ckpt["data"]["split"] == "by-cell"  # one slide: stratified by cell, and it says so
    assert sum(ckpt["data"]["counts"]["test"].values()) == len(ckpt["test_cells"]) > 0
    assert len(ckpt["test_split_sha256"]) == 64
    json.dumps(ckpt["metrics"])  # the models table stores it as JSON


def test_checkpoint_round_trip_gives_the_same_probabilities(tiny, tmp_path):
    save_checkpoint(tiny.checkpoint, tmp_path / "m.pt")
    loaded = load_classifier(tmp_path / "m.pt")
    crops = [crop for crop, _ in synthetic_cells(["EN", "GN"], 2, seed=5)]
    assert np.allclose(predict_proba(loaded, crops), predict_proba(tiny.classifier, crops), atol=1e-5)
    assert loaded.temperature == pytest.approx(tiny.classifier.temperature)


def test_a_checkpoint_of_another_kind_is_refused():
    with pytest.raises(SchemeError, match="not a classifier"):
        classifier_from_checkpoint({"kind": "segmenter"})


def test_config_round_trips_through_the_checkpoint_dict(tiny):
    assert ClsTrainConfig.from_dict(tiny.checkpoint["config"]) == TINY
    assert paper_config().augment.rotate is False and paper_config().arch == "inception_v3"


def test_training_with_fewer_cells_than_classes_is_refused():
    with pytest.raises(TrainingDataError, match="Only 1 labelled cells"):
        train_classifier(samples_of(synthetic_cells(["EN"], 1, seed=0)), SCHEME, TINY)


def test_training_with_too_few_cells_of_a_class_names_the_class():
    cells = synthetic_cells(["EN"], 6, seed=0) + synthetic_cells(["GN"], 2, seed=0)
    with pytest.raises(TrainingDataError, match=r"GN \(2\)"):
        train_classifier(samples_of(cells), SCHEME, TINY)


def test_labels_outside_the_scheme_are_refused():
    with pytest.raises(TrainingDataError, match="not classes of scheme"):
        train_classifier(samples_of(synthetic_cells(["EN", "BL"], 3, seed=0)), SCHEME, TINY)


@pytest.mark.parametrize("epochs", [1, 4, 15])
def test_a_run_with_only_a_few_steps_trains(epochs):
    """One batch per epoch: OneCycleLR cannot schedule a handful of steps (4 divided by zero)."""
    config = dataclasses.replace(TINY, epochs=epochs, batch_size=256, patience=epochs)
    result = train_classifier(samples_of(synthetic_cells(["EN", "GN"], 6, seed=4)), SCHEME, config)
    assert len(result.history) == epochs


def test_should_stop_cancels_between_batches():
    calls = []
    with pytest.raises(TrainingCancelled):
        train_classifier(samples_of(synthetic_cells(["EN", "GN"], 5, seed=3)), SCHEME, TINY,
                         on_epoch=calls.append, should_stop=lambda: True)
    assert calls == []


def test_frozen_test_cells_form_the_test_split():
    samples = samples_of(synthetic_cells(["EN", "GN"], 6, seed=4))
    config = ClsTrainConfig(arch="cellnet", input_size=32, epochs=1, batch_size=8)
    result = train_classifier(samples, SCHEME, config, frozen_test={1, 2, 7, 8})
    assert result.checkpoint["test_cells"] == [1, 2, 7, 8]
    assert result.checkpoint["data"]["split"] == "frozen-test"


def test_a_retrain_starts_from_the_active_models_weights_and_scaling(tiny):
    """Issue 13: fine-tuning; at a vanishing rate one epoch leaves the active model's weights as they were."""
    still = dataclasses.replace(TINY, fine_tune=FineTuneConfig(epochs=1, lr=1e-9, slide_balance_power=1.0))
    samples = samples_of(synthetic_cells(["EN", "GN"], 30, seed=1)) + \
        [CellSample(crop, code, "SYN-2", 100 + i) for i, (crop, code) in enumerate(synthetic_cells(["EN", "GN"], 4, 8))]
    result = train_classifier(samples, SCHEME, still, frozen_test=set(tiny.checkpoint["test_cells"]),
                              start_from=StartingPoint(tiny.checkpoint, "v1"))  # SYN-2's cells are new
    assert result.checkpoint["start"] == {"fine_tuned_from": "v1", "how": "fine-tuned from the active v1"}
    assert result.metrics["start"] == "fine-tuned from the active v1"
    assert len(result.history) == 1 and result.checkpoint["config"]["lr"] == 1e-9
    assert result.checkpoint["config"]["slide_balance_power"] == 1.0
    assert result.checkpoint["normalizer"] == tiny.checkpoint["normalizer"]
    learnt = {name for name, _ in create_model("cellnet", 2).named_parameters()}  # BatchNorm's running stats move
    for name in learnt:
        weights = tiny.checkpoint["state_dict"][name]
        assert torch.allclose(result.checkpoint["state_dict"][name].float(), weights.float(), atol=1e-4), name


def test_fine_tuning_takes_at_most_the_runs_epochs(tiny):
    short = dataclasses.replace(TINY, epochs=2)  # FineTuneConfig's 15 would be more than asked for
    known = samples_of(synthetic_cells(["EN", "GN"], 30, seed=1))  # tiny's own cells, and two new ones
    samples = known + [CellSample(crop, code, "SYN-1", 500 + i) for i, (crop, code) in
                       enumerate(synthetic_cells(["EN", "GN"], 1, seed=3))]
    result = train_classifier(samples, SCHEME, short, frozen_test=set(tiny.checkpoint["test_cells"]),
                              start_from=StartingPoint(tiny.checkpoint, "v1"))
    assert result.checkpoint["start"]["fine_tuned_from"] == "v1" and len(result.history) <= 2


def test_a_retrain_on_the_cells_the_active_model_knows_is_a_fresh_run(tiny):
    result = train_classifier(samples_of(synthetic_cells(["EN", "GN"], 30, seed=1)), SCHEME,
                              dataclasses.replace(TINY, epochs=1), frozen_test=set(tiny.checkpoint["test_cells"]),
                              start_from=StartingPoint(tiny.checkpoint, "v1"))
    assert result.checkpoint["start"] == {"fine_tuned_from": None,
                                          "how": "from scratch (no training cell is new to the active v1)"}


@pytest.mark.parametrize("change, reason", [
    ({"arch": "cellnet_gn"}, "differs in architecture"),
    ({"input_size": 40}, "differs in input size"),
    ({"stain_normalise": False}, "differs in colour rule"),
    ({"fine_tune": FineTuneConfig(enabled=False)}, "fine-tuning turned off"),
])
def test_a_retrain_that_cannot_use_the_active_weights_trains_from_scratch(tiny, change, reason):
    config = dataclasses.replace(TINY, epochs=1, **change)
    result = train_classifier(samples_of(synthetic_cells(["EN", "GN"], 6, seed=2)), SCHEME, config,
                              start_from=StartingPoint(tiny.checkpoint, "v1"))
    assert result.checkpoint["start"]["fine_tuned_from"] is None
    assert reason in result.checkpoint["start"]["how"]


def test_a_run_whose_cells_are_mostly_new_to_the_active_model_trains_from_scratch(tiny):
    cells = synthetic_cells(["EN", "GN"], 8, seed=2)
    fresh = [CellSample(crop, code, "SYN-1", 1000 + i) for i, (crop, code) in enumerate(cells)]  # never seen by tiny
    result = train_classifier(fresh, SCHEME, dataclasses.replace(TINY, epochs=1),
                              start_from=StartingPoint(tiny.checkpoint, "v1"))
    assert result.checkpoint["start"]["fine_tuned_from"] is None
    assert "100% of the training cells are new to the active v1" in result.checkpoint["start"]["how"]


def test_a_damaged_active_checkpoint_is_no_starting_point(tiny):
    damaged = tiny.checkpoint | {"state_dict": {k: v.reshape(-1)[:1] for k, v in tiny.checkpoint["state_dict"].items()}}
    result = train_classifier(samples_of(synthetic_cells(["EN", "GN"], 6, seed=2)), SCHEME,
                              dataclasses.replace(TINY, epochs=1), start_from=StartingPoint(damaged, "v1"))
    assert result.checkpoint["start"] == {"fine_tuned_from": None,
                                          "how": "from scratch (the active v1's weights could not be loaded)"}
    assert result.checkpoint["config"]["lr"] == TINY.lr  # the from-scratch settings, not the fine-tuning ones


def test_a_model_of_other_classes_is_not_a_starting_point(tiny):
    other = scheme_from_folders("syn3", ["EN", "GN", "MN"])
    result = train_classifier(samples_of(synthetic_cells(["EN", "GN", "MN"], 5, seed=2)), other,
                              dataclasses.replace(TINY, epochs=1), start_from=StartingPoint(tiny.checkpoint, "v1"))
    assert "differs in classes" in result.checkpoint["start"]["how"]
    assert result.checkpoint["start"]["fine_tuned_from"] is None


def test_temperature_scaling_lowers_nll_of_an_overconfident_model():
    rng = np.random.default_rng(0)
    targets = torch.from_numpy(rng.integers(0, 3, 300))
    guessed = torch.where(torch.from_numpy(rng.random(300) < 0.7), targets, (targets + 1) % 3)
    logits = 8.0 * torch.nn.functional.one_hot(guessed, 3).double()  # 70% right, ~100% sure
    temperature = fit_temperature(logits, targets)
    nll = torch.nn.functional.cross_entropy
    assert temperature > 1
    assert nll(logits / temperature, targets) < 0.7 * nll(logits, targets)


# ---------------------------------------------------------------- splits

def test_several_slides_are_split_by_slide_with_classes_covered():
    codes = np.array(["EN", "GN", "ED"] * 40)
    groups = np.array([f"P{(i // 3) % 6}" for i in range(120)])  # every slide has every class
    split = split_samples(codes, groups, 0.15, 0.15, seed=0)
    parts = [set(groups[p]) for p in (split.train, split.val, split.test)]
    assert split.kind == "by-slide"
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])  # no patient in two parts
    assert all(set(codes[p]) == {"EN", "GN", "ED"} for p in (split.train, split.val, split.test))


def test_a_class_found_on_one_slide_only_stays_in_training():
    codes = np.array(["EN", "GN"] * 30 + ["MD"] * 4)
    groups = np.array([f"P{i % 5}" for i in range(60)] + ["P2"] * 4)
    split = split_samples(codes, groups, 0.2, 0.2, seed=0)
    assert "MD" in set(codes[split.train])
    assert len(set(groups[split.train])) >= 2  # and the held-out parts did not swallow most slides


def test_two_slides_keep_the_test_slide_apart():
    codes = np.array(["EN", "GN"] * 30)
    groups = np.array(["A"] * 36 + ["B"] * 24)
    split = split_samples(codes, groups, 0.1, 0.1, seed=0)
    assert split.kind == "test-by-slide"
    assert set(groups[split.test]).isdisjoint(set(groups[split.train]) | set(groups[split.val]))


def test_a_single_slide_is_split_by_cell_with_every_class_in_every_part():
    codes = np.array(["EN"] * 50 + ["MD"] * 3)
    split = split_samples(codes, np.array(["A"] * 53), 0.1, 0.1, seed=0)
    assert split.kind == "by-cell"
    assert all("MD" in set(codes[p]) for p in (split.train, split.val, split.test))
    assert sorted(np.concatenate([split.train, split.val, split.test]).tolist()) == list(range(53))


# ---------------------------------------------------------------- store: samples and proposals

def import_synthetic(db, slide: str, scheme: str, per_class: int = 4, seed: int = 7) -> int:
    blobs = [(f"{code}/c{i}.png", png(crop)) for i, (crop, code) in enumerate(synthetic_cells(["EN", "GN"], per_class, seed))]
    files = [SourceFile(name, (lambda b=blob: b)) for name, blob in blobs]
    report = import_cells(db, slide, files, scheme_name=scheme)
    assert report.ok, report.skipped
    return find_slide(db, slide).id


def test_propose_labels_stores_calibrated_probabilities_for_every_cell(db, home, tiny):
    slide_id = import_synthetic(db, "SYN-1", "syn2")
    record = versions.register_model(db, home / "models", tiny.checkpoint)
    assert propose_labels(db, slide_id) == 8  # the scheme's first classifier became active
    for cell in list_cells(db, slide_id):
        proposal = get_proposal(db, cell.id)
        assert proposal.model_id == record.id
        assert set(proposal.probs) == {"EN", "GN"}
        assert sum(proposal.probs.values()) == pytest.approx(1, abs=1e-4)
    top = db.execute("SELECT COUNT(*) FROM proposals WHERE top_code IN ('EN', 'GN')").fetchone()[0]
    assert top == 8


def test_propose_labels_refuses_a_checkpoint_of_another_scheme(db, home, tiny):
    ensure_default_scheme(db)
    record = versions.register_model(db, home / "models", tiny.checkpoint)
    slide, _ = ensure_slide(db, "MDS-1", "mds8")
    patch_id, _ = add_patch(db, slide.id, StoredImage("s1", 40, 40, "image/png", png(np.zeros((40, 40, 3), np.uint8))),
                            "f.png")
    add_cell(db, slide.id, patch_id, (0, 0, 20, 20), "manual")
    with pytest.raises(SchemeError, match="mds8"):
        propose_labels(db, slide.id, model_record=record)


def test_propose_labels_on_a_slide_without_cells_says_what_to_do(db):
    ensure_default_scheme(db)
    slide, _ = ensure_slide(db, "EMPTY", "mds8")
    with pytest.raises(NoCellsError, match="no cells"):
        propose_labels(db, slide.id)


def test_propose_labels_without_a_trained_model_says_how_to_train(db):
    slide_id = import_synthetic(db, "SYN-1", "syn2", per_class=1)
    with pytest.raises(NotFoundError, match="train classifier --scheme syn2"):
        propose_labels(db, slide_id)


def test_reproposal_of_unread_cells_leaves_read_cells_alone(db, home, tiny):
    ensure_default_scheme(db)
    record = versions.register_model(db, home / "models", tiny.checkpoint)
    slide_id = import_synthetic(db, "SYN-1", "syn2", per_class=2)  # imported cells count as read
    patch = db.execute("SELECT patch_id FROM cells WHERE slide_id = ? LIMIT 1", [slide_id]).fetchone()[0]
    unread, _ = add_cell(db, slide_id, patch, (2, 2, 30, 30), "manual")
    assert propose_labels(db, slide_id, model_record=record, unread_only=True) == 1
    assert get_proposal(db, unread) is not None
    assert db.execute("SELECT COUNT(*) FROM proposals").fetchone()[0] == 1


def test_training_samples_come_from_human_labels_only(db, home, tiny):
    slide_id = import_synthetic(db, "SYN-1", "syn2", per_class=3)
    record = versions.register_model(db, home / "models", tiny.checkpoint)
    patch = db.execute("SELECT patch_id FROM cells WHERE slide_id = ? LIMIT 1", [slide_id]).fetchone()[0]
    model_only, _ = add_cell(db, slide_id, patch, (4, 4, 20, 20), "manual")
    read_cell, _ = add_cell(db, slide_id, patch, (6, 6, 24, 24), "manual")
    save_proposals(db, record.id, {model_only: {"EN": 0.9, "GN": 0.1}})
    put_read(db, read_cell, insert_user(db, "ann", "reader", "h").id, "GN")
    samples = training_samples(db, "syn2", size=32)
    ids = {s.cell_id for s in samples}
    assert model_only not in ids and read_cell in ids
    assert len(samples) == 7
    assert all(s.crop.shape == (32, 32, 3) and s.group == "SYN-1" for s in samples)


def test_training_samples_of_chosen_cells_decode_only_those(db, home, monkeypatch):
    first = import_synthetic(db, "SYN-1", "syn2", per_class=3)
    second = import_synthetic(db, "SYN-2", "syn2", per_class=3, seed=8)
    chosen = [list_cells(db, first)[0].id, list_cells(db, second)[1].id]
    decoded = []

    def counting_decode(sources, size):
        decoded.extend(sources)
        return decode_sources(sources, size)
    monkeypatch.setattr(proposals, "decode_sources", counting_decode)
    samples = training_samples(db, "syn2", size=32, cell_ids={*chosen, 10**9})  # an id not in the store
    assert [s.cell_id for s in samples] == sorted(chosen) and len(decoded) == 2
    assert {s.group for s in samples} == {"SYN-1", "SYN-2"}
    assert slides_of_cells(db, [chosen[0], 10**9]) == {"SYN-1"}
    assert slides_of_cells(db, []) == set()


def test_performance_scores_the_active_model_on_its_test_cells_or_the_settled_ones(db, home, tiny):
    slide_id = import_synthetic(db, "SYN-1", "syn2", per_class=4)
    cells = [c.id for c in list_cells(db, slide_id)]
    versions.register_model(db, home / "models", tiny.checkpoint | {"test_cells": cells[:5] + [10**9]})
    judge = insert_user(db, "judge", "adjudicator", "h")
    scored = model_performance(db, judge, "syn2", "test")
    assert scored["n"] == 5 and scored["accuracy"].n == 5
    with pytest.raises(MdsdysError, match="Settle disagreements"):
        model_performance(db, judge, "syn2", "consensus")
    put_decision(db, cells[6], "EN", [], "other", "settled at the microscope", judge.id)
    assert model_performance(db, judge, "syn2", "consensus")["n"] == 1
    with pytest.raises(PermissionDeniedError):
        model_performance(db, insert_user(db, "ann", "reader", "h"), "syn2", "test")


def test_imported_cells_store_thumbnails_that_proposals_and_training_read(db, home, tiny):
    slide_id = import_synthetic(db, "SYN-1", "syn2", per_class=2)
    cells = list_cells(db, slide_id)
    thumbnails = cell_thumbnails(db, [c.id for c in cells])
    assert set(thumbnails) == {c.id for c in cells}
    for cell in cells:  # the stored thumbnail is what cutting the cell by its nucleus box gives
        assert thumbnails[cell.id] == thumbnails_from_image(patch_image_data(db, [cell.patch_id])[cell.patch_id],
                                                            [cell.box])[0]
        assert Image.open(io.BytesIO(thumbnails[cell.id])).size == (THUMBNAIL_SIDE, THUMBNAIL_SIDE)
    db.execute("UPDATE images SET data = ?", [b"not an image any more"])  # only thumbnails can serve now
    versions.register_model(db, home / "models", tiny.checkpoint)
    assert propose_labels(db, slide_id) == 4
    assert len(training_samples(db, "syn2", size=32)) == 4


def test_the_thumbnail_decoder_gives_the_pixels_pil_gives():
    crop, _ = synthetic_cells(["GN"], 1, seed=3, size=90)[0]
    square = square_resize(crop, THUMBNAIL_SIDE)
    thumbnail = thumbnails_from_image(png(crop))[0]
    pil = np.asarray(Image.open(io.BytesIO(thumbnail)).convert("RGB"))
    assert pil.shape == (THUMBNAIL_SIDE, THUMBNAIL_SIDE, 3)
    assert np.array_equal(decode_thumbnail(thumbnail, THUMBNAIL_SIDE), pil)
    error = np.abs(pil.astype(int) - square)
    assert error.mean() < 1.4 and error.max() < 10  # full-resolution colour, quality 98 (4:2:0 gives 1.7 and 14)
    assert decode_thumbnail(thumbnail, 32).shape == (32, 32, 3)


def test_importing_the_same_cells_again_cuts_no_thumbnails(db, monkeypatch):
    import mdsdys.ingest.importer

    slide_id = import_synthetic(db, "SYN-1", "syn2", per_class=2)
    before = cell_thumbnails(db, [c.id for c in list_cells(db, slide_id)])
    cut = []
    monkeypatch.setattr(mdsdys.ingest.importer, "thumbnails_from_image", lambda *a: cut.append(a) or [b"x"])
    import_synthetic(db, "SYN-1", "syn2", per_class=2)
    assert cut == [] and cell_thumbnails(db, list(before)) == before


def test_a_cell_without_a_thumbnail_gets_one_cut_and_saved_on_first_use(db, home, tiny):
    slide_id = import_synthetic(db, "SYN-1", "syn2", per_class=2)
    expected = cell_thumbnails(db, [c.id for c in list_cells(db, slide_id)])
    db.execute("DELETE FROM cell_thumbnails")
    versions.register_model(db, home / "models", tiny.checkpoint)
    assert propose_labels(db, slide_id) == 4
    assert cell_thumbnails(db, list(expected)) == expected


def test_a_model_larger_than_the_thumbnails_cuts_its_cells_from_the_patches(db):
    slide_id = import_synthetic(db, "SYN-1", "syn2", per_class=1)
    refs = [CellRef(c.id, c.patch_id, c.box) for c in list_cells(db, slide_id)]
    small = cell_sources(db, refs, THUMBNAIL_SIDE)
    large = cell_sources(db, refs, THUMBNAIL_SIDE + 32)
    assert all(s.boxes is None for s in small) and all(s.boxes is not None for s in large)
    ids, squares = decode_sources(large, THUMBNAIL_SIDE + 32)
    assert sorted(ids) == sorted(r.cell_id for r in refs) and squares[0].shape == (THUMBNAIL_SIDE + 32,) * 2 + (3,)


def test_a_cell_file_reaches_evaluation_as_its_imported_cell_reaches_training(db, tmp_path):
    folder = tmp_path / "cells"  # the store lives in tmp_path
    for i, (crop, code) in enumerate(synthetic_cells(["EN", "GN"], 1, seed=5, size=150)):
        (folder / code).mkdir(parents=True)
        Image.fromarray(crop).save(folder / code / f"c{i}.jpg", quality=90)
    assert import_cells(db, "SYN-1", files_in_folder(folder), scheme_name="syn2").ok
    files = sorted(folder.glob("*/*.jpg"))  # EN/c0.jpg, GN/c1.jpg: imported in that order
    for size in (32, 64, THUMBNAIL_SIDE + 8):
        samples = training_samples(db, "syn2", size=size)
        for path, sample in zip(files, samples, strict=True):
            assert np.array_equal(image_square(path.read_bytes(), size), sample.crop)


# ---------------------------------------------------------------- crops and evaluation

def test_decode_crops_cuts_boxes_and_pads_them_square():
    image = np.zeros((60, 80, 3), np.uint8)
    image[10:30, 20:60] = 200  # a 40 x 20 bright box
    crops = decode_crops(png(image), [(20, 10, 40, 20)])
    assert crops[0].shape == (40, 40, 3)
    assert crops[0][10:30].min() == 200 and crops[0][:10].max() == 0  # zero padding above and below
    assert decode_crops(png(image), [(20, 10, 40, 20)], size=16)[0].shape == (16, 16, 3)


def test_evaluate_classifier_on_class_folders(tiny, tmp_path):
    for i, (crop, code) in enumerate(synthetic_cells(["EN", "GN"], 6, seed=11)):
        (tmp_path / code).mkdir(exist_ok=True)
        Image.fromarray(crop).save(tmp_path / code / f"{i}.jpg", quality=95)
    result = evaluate_classifier(tiny.classifier, tmp_path)
    assert result["n"] == 12 and len(result["confusion"]) == 2
    assert set(result["per_class"]["GN"]) >= {"sensitivity", "specificity", "auc", "accuracy", "ppv", "npv", "f1", "ap"}
    json.dumps(result, allow_nan=False)
    table = markdown_table(result)
    assert "| EN |" in table and "macro-F1" in table


def test_evaluate_classifier_refuses_folders_outside_the_scheme(tiny, tmp_path):
    (tmp_path / "neutrophil").mkdir()
    with pytest.raises(SchemeError, match="neutrophil"):
        evaluate_classifier(tiny.classifier, tmp_path)


def test_augmentation_keeps_shape_and_range():
    from mdsdys.augment import (
        CLASSIFIER_AUGMENT,
        NO_AUGMENT,
        SEGMENTER_AUGMENT,
        augment,
    )

    batch = torch.randint(0, 256, (4, 3, 24, 24), dtype=torch.uint8)
    for config in (CLASSIFIER_AUGMENT, SEGMENTER_AUGMENT):
        out = augment(batch, torch.Generator().manual_seed(0), config)
        assert out.shape == (4, 3, 24, 24) and out.dtype == torch.float32
        assert 0 <= float(out.min()) and float(out.max()) <= 1
        assert not torch.allclose(out, batch.float() / 255, atol=2e-2)
    still = augment(batch, torch.Generator().manual_seed(0), NO_AUGMENT)
    assert torch.allclose(still, batch.float() / 255, atol=2e-2)  # no jitter: the image itself


def test_a_classifier_checkpoint_from_before_the_one_augment_config_still_loads():
    old = {"rotate": True, "flip": True, "scale": 0.1, "shift": 0.04, "hed_scale": 0.08, "hed_bias": 0.03,
           "brightness": 0.1}
    assert AugmentConfig.from_dict(old) == ISSUE4_CLASSIFIER_AUGMENT  # what it was trained with, not today's preset
    assert AugmentConfig.from_dict(dataclasses.asdict(CLASSIFIER_AUGMENT)) == CLASSIFIER_AUGMENT


def test_inference_normalises_uint8_as_training_does():
    from mdsdys.classify.inputs import Normalizer

    normalizer = Normalizer((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    fast = normalizer.from_uint8(images.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(fast, normalizer(images.float() / 255), atol=1e-5)
    assert fast.is_contiguous(memory_format=torch.channels_last)


def test_a_cpu_with_bf16_reads_cells_in_bf16_and_mdsdys_cpu_bf16_0_keeps_fp32(monkeypatch):
    from mdsdys import compute
    from mdsdys.classify.inputs import Normalizer

    torch.manual_seed(0)
    net = create_model("cellnet_gn", 3).eval()
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    normalizer, cpu = Normalizer((0.5,) * 3, (0.25,) * 3), torch.device("cpu")
    with torch.inference_mode():
        exact = net(normalizer.from_uint8(images))
    monkeypatch.setattr(compute, "_cpu_has_bf16", lambda: True)
    monkeypatch.setenv("MDSDYS_CPU_BF16", "0")
    assert not compute.cpu_bf16()
    assert torch.allclose(forward_logits(net, images, normalizer, cpu, batch_size=4), exact, atol=1e-5)
    monkeypatch.setenv("MDSDYS_CPU_BF16", "1")
    assert compute.cpu_bf16()
    fast = forward_logits(net, images, normalizer, cpu, batch_size=4)
    assert fast.dtype == torch.float32 and not torch.equal(fast, exact)  # bf16 really ran
    assert torch.allclose(fast, exact, atol=0.05 * float(exact.abs().max()))
    monkeypatch.setattr(compute, "_cpu_has_bf16", lambda: False)  # no bf16 instructions: fp32 whatever the variable
    assert torch.allclose(forward_logits(net, images, normalizer, cpu), exact, atol=1e-5)
    assert compute.inference_batch(cpu) == 64 and compute.inference_batch(torch.device("cuda")) == 256
