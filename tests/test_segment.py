"""The nucleus segmenter: training, post-processing, scale, cell boxes, metrics and slide detection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import requires_shared

from mdsdys.annotate.masks import MIN_MASKS
from mdsdys.annotate.scale import slide_diameter
from mdsdys.checkpoints import save_checkpoint
from mdsdys.demo import synth
from mdsdys.errors import TooFewMasksError, WrongModelError
from mdsdys.imaging.decode import encode_png
from mdsdys.imaging.geometry import cell_box
from mdsdys.imaging.thumbnails import thumbnails_from_image
from mdsdys.registry.versions import register_model
from mdsdys.segment import detect
from mdsdys.segment.field import Segmentation, segment_patch
from mdsdys.segment.metrics import ObjectCounts, dice, iou, label_mask, match_objects
from mdsdys.segment.postprocess import (
    instances_from_mask,
    mask_diameter,
    otsu_mask,
)
from mdsdys.segment.scale import estimate_diameter
from mdsdys.segment.segmenter import load_segmenter, patch_uncertainty
from mdsdys.segment.train import (
    MaskSample,
    SegTrainConfig,
    mask_samples,
    train_segmenter,
)
from mdsdys.segment.unet import UNet, UNetConfig, predict
from mdsdys.splits import split_by_group
from mdsdys.store.cells import cell_thumbnails, list_cells, patch_image_data
from mdsdys.store.patches import StoredImage, add_patch, save_mask
from mdsdys.store.reads import put_read
from mdsdys.store.scales import slide_scale, store_estimated_diameter
from mdsdys.store.slides import ensure_default_scheme, ensure_slide, update_slide
from mdsdys.store.users import insert_user

TINY = UNetConfig(depth=3, width=8)


def _synthetic_samples(n: int, diameter: float = 24.0, size: int = 128, groups: int = 2) -> list[MaskSample]:
    rng = np.random.default_rng(7)
    patches = [synth.generate_patch(rng, size, size, nucleus_diameter=diameter) for _ in range(n)]
    return [MaskSample(p.image, p.mask, f"SYN-{k % groups}") for k, p in enumerate(patches)]


@pytest.fixture(scope="module")
def trained():
    """A tiny U-Net trained briefly on synthetic fields with 24 px nuclei (shared by several tests)."""
    config = SegTrainConfig(epochs=4, steps_per_epoch=10, batch_size=6, crop=64, unet=TINY, max_seconds=None)
    return train_segmenter(_synthetic_samples(10), config)


def test_tiny_unet_learns_synthetic_masks_within_a_few_steps(trained):
    assert len(trained.history) == 4
    assert trained.history[0].split == trained.split == "by slide"
    assert trained.metrics["val_dice"] > 0.7  # chance (all pixels nucleus) is ~0.2 on these fields
    assert trained.checkpoint["kind"] == "segmenter" and trained.checkpoint["diameter"] == 32.0


def test_on_epoch_reports_every_epoch_and_should_stop_cancels():
    from mdsdys.errors import JobCancelled

    config = SegTrainConfig(epochs=2, steps_per_epoch=2, batch_size=2, crop=32, unet=TINY, max_seconds=None)
    seen = []
    train_segmenter(_synthetic_samples(5), config, on_epoch=seen.append)
    assert [r.epoch for r in seen] == [1, 2] and all(0.0 <= r.val_dice <= 1.0 for r in seen)
    with pytest.raises(JobCancelled):
        train_segmenter(_synthetic_samples(5), config, should_stop=lambda: True)


def test_too_few_masks_raises_with_the_minimum_in_the_message():
    with pytest.raises(TooFewMasksError, match=f"at least {MIN_MASKS} nucleus masks; there are 2"):
        train_segmenter(_synthetic_samples(2), SegTrainConfig(unet=TINY))


def test_validation_is_split_by_slide_when_there_are_several_and_by_patch_otherwise():
    train, val, how = split_by_group([s.group for s in _synthetic_samples(10, groups=3)], 0.2, seed=0)
    samples = _synthetic_samples(10, groups=3)
    assert how == "by slide" and not {samples[k].group for k in train} & {samples[k].group for k in val}
    train, val, how = split_by_group([s.group for s in _synthetic_samples(10, groups=1)], 0.2, seed=0)
    assert how == "by patch" and len(val) == 2 and sorted(train + val) == list(range(10))


def test_watershed_splits_two_touching_synthetic_nuclei():
    for seed in range(50):  # the generator places the second cell touching the first
        patch = synth.generate_patch(np.random.default_rng(seed), 96, 96, n_cells=2, n_rbc=0,
                                     class_weights={"EN": 1}, allow_touching=True)
        if len(patch.cells) == 2 and label_mask(patch.mask).max() == 1:
            break
    else:
        pytest.fail("no touching pair generated")
    diameter = float(np.median([2 * np.sqrt(c.nucleus.sum() / np.pi) for c in patch.cells]))
    instances = instances_from_mask(patch.mask, diameter)
    assert instances.max() == 2
    assert match_objects(instances, patch.instances) == ObjectCounts(2, 0, 0)


def test_a_lobed_neutrophil_nucleus_is_not_split_into_lobes():
    patch = synth.generate_patch(np.random.default_rng(3), 96, 96, n_cells=1, n_rbc=0, class_weights={"GN": 1})
    assert instances_from_mask(patch.mask, 24.0 * 0.89).max() == 1  # 0.89: median ED / generator diameter


def test_lobes_a_few_pixels_apart_are_one_nucleus_and_distant_pieces_are_not():
    mask = np.zeros((80, 120), bool)
    mask[10:40, 10:30] = mask[10:40, 32:50] = True  # two lobes 2 px apart (0.07 diameters)
    mask[10:40, 80:110] = True  # another cell's nucleus, 30 px away
    instances = instances_from_mask(mask, diameter=30.0)
    assert instances.max() == 2 and instances[20, 15] == instances[20, 40] != instances[20, 90]
    assert label_mask(mask).max() == 3 and label_mask(mask, lobe_gap=3.0).max() == 2


def test_segment_patch_returns_maps_of_the_image_size_at_another_scale(trained):
    patch = synth.generate_patch(np.random.default_rng(1), 150, 200, nucleus_diameter=40)
    result = segment_patch(trained.model, patch.image, nucleus_diameter=36.0)
    assert result.prob.shape == result.instances.shape == (150, 200) and result.prob.dtype == np.float32
    assert result.diameter == 36.0 and not result.diameter_estimated
    assert result.nuclei and dice(result.mask, patch.mask) > 0.5
    for nucleus in result.nuclei:
        x, y, w, h = nucleus.box
        assert w == h and x >= 0 and y >= 0 and x + w <= 200 and y + h <= 150
        assert nucleus.mask.shape == (h, w) and (nucleus.mask == 255).sum() == nucleus.area


def test_segment_patch_on_a_field_without_nuclei_returns_none(trained):
    blank = np.full((80, 100, 3), 235, np.uint8)
    result = segment_patch(trained.model, blank)
    assert result.nuclei == [] and result.instances.max() == 0 and result.diameter_estimated


@pytest.mark.parametrize("diameter", [16, 40])
def test_estimate_diameter_is_within_30_percent_on_synthetic_fields(trained, diameter):
    rng = np.random.default_rng(diameter)
    patch = synth.generate_patch(rng, 10 * diameter, 10 * diameter, nucleus_diameter=diameter)
    estimate = estimate_diameter(trained.model, patch.image)
    assert abs(estimate / diameter - 1) < 0.3, (estimate, mask_diameter(patch.mask))


@pytest.mark.parametrize("nucleus", [(0, 0, 10, 30), (185, 140, 15, 10), (90, 60, 20, 20), (0, 0, 200, 150)])
def test_a_cell_box_is_square_and_inside_the_image(nucleus):
    x, y, w, h = cell_box(nucleus, diameter=24.0, image_shape=(150, 200))
    assert w == h and 0 <= x and 0 <= y and x + w <= 200 and y + h <= 150
    nx, ny, nw, nh = nucleus
    if max(nw, nh) + 24 <= 150:  # room for the nucleus: the box holds all of it
        assert x <= nx and y <= ny and nx + nw <= x + w and ny + nh <= y + h


def test_checkpoint_round_trip_gives_the_same_probabilities(trained, tmp_path):
    save_checkpoint(trained.checkpoint, tmp_path / "seg.pt")
    loaded = load_segmenter(tmp_path / "seg.pt")
    image = synth.generate_patch(np.random.default_rng(2), 64, 64).image
    assert loaded.diameter == trained.model.diameter
    np.testing.assert_allclose(segment_patch(loaded, image, 24.0).prob, segment_patch(trained.model, image, 24.0).prob,
                               atol=1e-6)
    save_checkpoint({**trained.checkpoint, "kind": "classifier"}, tmp_path / "cls.pt")
    with pytest.raises(WrongModelError, match="not a segmenter"):
        load_segmenter(tmp_path / "cls.pt")


def test_patch_uncertainty_is_between_zero_and_one_and_repeatable(trained):
    image = synth.generate_patch(np.random.default_rng(4), 64, 64).image
    score = patch_uncertainty(trained.model, image)
    assert 0.0 <= score <= 1.0 and patch_uncertainty(trained.model, image) == score
    assert patch_uncertainty(trained.model, image, nucleus_diameter=48.0) != score  # read at another scale


@pytest.mark.parametrize("depth,width", [(2, 4), (3, 8), (4, 16)])
def test_unet_predicts_a_probability_per_pixel_at_any_size(depth, width, monkeypatch):
    monkeypatch.setattr("mdsdys.segment.unet.TILE", 48)  # force tiling on a small input
    prob = predict(UNet(UNetConfig(depth, width)), torch.rand(1, 3, 61, 107))
    assert prob.shape == (61, 107) and float(prob.min()) >= 0 and float(prob.max()) <= 1


def test_dice_and_iou_on_hand_made_masks():
    a = np.zeros((10, 10), np.uint8)
    a[:5] = 255
    b = np.zeros_like(a)
    b[5:] = 255
    c = np.zeros_like(a)
    c[:5, :5] = 1
    assert dice(a, a) == iou(a, a) == 1.0 and dice(a, b) == iou(a, b) == 0.0
    assert dice(a, c) == pytest.approx(2 * 25 / 75) and iou(a, c) == pytest.approx(0.5)
    assert dice(np.zeros_like(a), np.zeros_like(a)) == 1.0


def test_object_f1_counts_matches_at_iou_one_half():
    truth = np.zeros((30, 30), np.int32)
    truth[0:10, 0:10], truth[0:10, 20:30], truth[20:30, 0:10] = 1, 2, 3
    pred = np.zeros_like(truth)
    pred[0:10, 0:10] = 5  # exact
    pred[0:10, 25:30] = 6  # IoU 0.5 with truth 2: counts
    pred[20:30, 0:4] = 7  # IoU 0.4 with truth 3: does not
    pred[20:25, 20:25] = 8  # nothing there
    counts = match_objects(pred, truth)
    assert counts == ObjectCounts(tp=2, fp=2, fn=1)
    assert counts.f1 == pytest.approx(4 / 7) and counts.precision == 0.5 and counts.recall == pytest.approx(2 / 3)


def test_otsu_baseline_finds_the_darkest_class_only():
    image = np.full((60, 60, 3), 235, np.uint8)
    image[5:25, 5:25] = (90, 40, 140)  # nucleus: dark purple
    image[30:55, 30:55] = (220, 150, 160)  # red cell: pink, mid green
    mask = otsu_mask(image)
    assert mask[5:25, 5:25].all() and mask.sum() == 400


def _store_slide(db, case_id: str, n: int, diameter: float = 24.0):
    ensure_default_scheme(db)
    slide, _ = ensure_slide(db, case_id, "mds8")
    rng = np.random.default_rng(len(case_id) + n)
    ids = []
    for k in range(n):
        patch = synth.generate_patch(rng, 96, 96, nucleus_diameter=diameter)
        data = encode_png(patch.image)
        patch_id, _ = add_patch(db, slide.id, StoredImage(f"{case_id}-{k}", 96, 96, "image/png", data), f"f{k}.png")
        ids.append((patch_id, patch))
    return slide, ids


def test_mask_samples_take_the_newest_mask_per_patch_grouped_by_slide(db):
    _, patches = _store_slide(db, "S-A", 2)
    ann, bob = insert_user(db, "ann", "reader", "h"), insert_user(db, "bob", "reader", "h")
    (first, p1), (second, p2) = patches
    save_mask(db, first, ann.id, "drawn", encode_png(np.zeros((96, 96), np.uint8)), 0)
    save_mask(db, first, bob.id, "drawn", encode_png(p1.mask), 3)  # newer
    save_mask(db, second, ann.id, "model_seeded", encode_png(p2.mask), 2)
    samples = mask_samples(db)
    assert [s.group for s in samples] == ["S-A", "S-A"] and all(s.nucleus_diameter is None for s in samples)
    np.testing.assert_array_equal(samples[0].mask, p1.mask)
    assert samples[0].image.shape == (96, 96, 3)


def test_segment_slide_is_idempotent_and_never_removes_a_read_cell(db, home, trained, monkeypatch):
    slide, _ = _store_slide(db, "S-B", 2)
    update_slide(db, slide.id, nucleus_diameter_px=21.0)
    record = register_model(db, home / "models", trained.checkpoint)
    first = detect.segment_slide(db, slide.id, record)
    cells = list_cells(db, slide.id)
    assert first["cells"] == len(cells) > 0 and first["diameter"] == 21.0
    thumbnails = cell_thumbnails(db, [c.id for c in cells])
    for cell in cells:  # each detected cell is stored with its thumbnail, cut as a backfill would cut it
        data = patch_image_data(db, [cell.patch_id])[cell.patch_id]
        assert thumbnails[cell.id] == thumbnails_from_image(data, [cell.box])[0]
    second = detect.segment_slide(db, slide.id, record)
    assert [c.id for c in list_cells(db, slide.id)] == [c.id for c in cells]
    assert second["added"] == second["removed"] == 0 and second["unchanged_patches"] == 2
    reader = insert_user(db, "ann", "reader", "h")
    put_read(db, cells[0].id, reader.id, "EN")
    empty = Segmentation(np.zeros((96, 96), np.float32), np.zeros((96, 96), np.int32), [], 21.0)
    monkeypatch.setattr(detect, "segment_patch", lambda *args, **kwargs: empty)  # a model that finds nothing
    detect.segment_slide(db, slide.id, record)
    assert [c.id for c in list_cells(db, slide.id)] == [cells[0].id]


def test_an_estimated_diameter_is_stored_once_and_never_over_a_users(db, trained):
    slide, _ = _store_slide(db, "S-C", 2)
    diameter = detect.estimate_slide_diameter(db, slide.id, trained.model)
    assert diameter is not None and slide_scale(db, slide.id) == (diameter, None, True)
    assert not store_estimated_diameter(db, slide.id, 99.0)  # an estimate never replaces another value
    update_slide(db, slide.id, nucleus_diameter_px=30.0)  # a person corrects it: no longer an estimate
    assert slide_scale(db, slide.id) == (30.0, None, False)
    assert slide_diameter(db, slide.id) == (30.0, False)


@pytest.mark.realdata
def test_a_few_epochs_on_a_handful_of_bccd_fields_beat_chance_by_far():
    from mdsdys.segment.evaluate import evaluate_segmenter, load_mask_pairs

    pairs = load_mask_pairs(requires_shared("bccd_nuclei"))[:14]
    samples = [MaskSample(image, mask, "BCCD") for _, image, mask in pairs[:10]]
    config = SegTrainConfig(epochs=3, steps_per_epoch=8, batch_size=6, crop=96, unet=TINY, max_seconds=None)
    result = train_segmenter(samples, config)
    diameter = result.checkpoint["data"]["nucleus_diameters"]["BCCD"]
    scores = evaluate_segmenter(result.model, pairs[10:], diameter)
    assert scores["dice"] > 0.6  # predicting every pixel as nucleus scores ~0.1


def test_eval_folder_scores_a_perfect_otsu_like_field_and_names_missing_folders(trained, tmp_path):
    from mdsdys.errors import NotFoundError
    from mdsdys.segment.evaluate import evaluate_folder, evaluate_otsu, load_mask_pairs

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for k in range(2):
        patch = synth.generate_patch(np.random.default_rng(k), 96, 128)
        (tmp_path / "images" / f"f{k}.png").write_bytes(encode_png(patch.image))
        (tmp_path / "masks" / f"f{k}.png").write_bytes(encode_png(patch.mask))
    (tmp_path / "images" / "unmasked.png").write_bytes(encode_png(patch.image))
    pairs = load_mask_pairs(tmp_path)
    assert [name for name, _, _ in pairs] == ["f0", "f1"]
    scores = evaluate_folder(trained.model, tmp_path, diameter=21.0)
    assert scores["n"] == 2 and 0.0 <= scores["dice"] <= 1.0 and not scores["diameter_estimated"]
    assert set(scores) >= {"dice", "iou", "object_f1", "object_precision", "object_recall", "object_f1_components"}
    assert evaluate_otsu(pairs, 21.0)["n"] == 2
    with pytest.raises(NotFoundError, match="images/ and a masks/"):
        load_mask_pairs(tmp_path / "images")


def test_segmenting_by_case_id_needs_an_active_segmenter_and_a_known_slide(db):
    from mdsdys.errors import NotFoundError

    _store_slide(db, "S-D", 1)
    with pytest.raises(NotFoundError, match="mdsdys train segmenter"):
        detect.segment_case(db, "S-D")
    with pytest.raises(NotFoundError, match="No slide named 'nope'"):
        detect.segment_case(db, "nope")
