"""One cell geometry and microscope-independent colour for every way into the classifier (issue 13)."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image

from mdsdys.classify.classifier import CellSample, predict_proba
from mdsdys.classify.evaluate import evaluate_classifier
from mdsdys.classify.inputs import normalise_colour, stack_squares
from mdsdys.classify.train import ClsTrainConfig, slide_draw, train_classifier
from mdsdys.demo import synth
from mdsdys.imaging.geometry import cell_box, find_nucleus, mask_cell_box, single_cell_box
from mdsdys.imaging.stain import (
    DENSITY_ANCHORS,
    REFERENCE,
    StainFit,
    fit_stain,
    match_densities,
    normalise_pixels,
    normalise_squares,
)
from mdsdys.imaging.thumbnails import image_square
from mdsdys.schemes import scheme_from_folders

SCHEME = scheme_from_folders("syn2", ["EN", "GN"])


def _cell(seed: int = 3, code: str = "GN", size: int = 96, diameter: int = 30) -> tuple[np.ndarray, np.ndarray]:
    image, mask = synth.generate_cell(np.random.default_rng(seed), code, size=size, nucleus_diameter=diameter)
    return image, mask


def _yellow_and_faint(image: np.ndarray) -> np.ndarray:
    """Another microscope: a warm lamp (less blue) and a paler stain (densities halved)."""
    od = -np.log((image.astype(np.float64) + 1) / 256) * 0.5
    rgb = 256 * np.exp(-od) * np.array([1.0, 0.95, 0.7])
    return np.clip(rgb - 1, 0, 255).astype(np.uint8)


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_nucleus_found_in_a_single_cell_image_matches_its_mask():
    image, mask = _cell()
    found = find_nucleus(image)
    assert found is not None
    truth = mask > 0
    dice = 2 * np.sum(found.mask & truth) / (found.mask.sum() + truth.sum())
    assert dice > 0.8


def test_the_same_cell_is_cut_to_the_same_content_whatever_the_image_size_around_it():
    image, _ = _cell(size=96)
    wide = np.pad(image, ((80, 80), (60, 60), (0, 0)), mode="edge")  # a 360 px field around the same cell
    small = np.asarray(Image.fromarray(image).resize((60, 60), Image.Resampling.BILINEAR))  # lower magnification
    squares = [image_square(_png(view), 32).astype(np.float64) for view in (image, wide, small)]
    # Same cell, nearly the same crop (the nucleus is found at a coarser working scale in the wide
    # field: its box is ~8% larger), though the field grew 3.75x; and at 0.6x the magnification.
    assert np.abs(squares[0] - squares[1]).mean() < 10
    assert np.abs(squares[0] - squares[2]).mean() < 10
    whole = np.asarray(Image.fromarray(wide).resize((32, 32), Image.Resampling.BILINEAR)).astype(np.float64)
    assert np.abs(squares[0] - whole).mean() > 3 * np.abs(squares[0] - squares[1]).mean()  # the old whole-image cut


def _among_thick_red_cells(image: np.ndarray, mask: np.ndarray, side: int = 240) -> tuple[np.ndarray, np.ndarray]:
    """The cell in a wide field crowded with stacked red cells (BCCD's smears), and its mask in that field."""
    pad = (side - image.shape[0]) // 2
    field = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge").astype(np.float64)
    truth = np.pad(mask > 0, pad)
    yy, xx = np.mgrid[:side, :side]
    haemoglobin = -np.log(np.array([0.88, 0.57, 0.59]))  # absorbs blue and green, transmits red
    rng = np.random.default_rng(5)
    for _ in range(40):
        cy, cx = rng.uniform(0, side, 2)
        if np.hypot(cy - side / 2, cx - side / 2) < 45:
            continue  # red cells lie around the white cell, not over it
        disc = np.hypot(yy - cy, xx - cx) < 16
        field[disc] *= np.exp(-2.5 * haemoglobin)  # two or three red cells stacked
    return field.astype(np.uint8), truth


def test_stacked_red_cells_around_a_cell_are_not_taken_for_its_nucleus():
    image, mask = _cell(seed=4, size=96, diameter=30)
    field, truth = _among_thick_red_cells(image, mask)
    found = find_nucleus(field)
    assert found is not None
    dice = 2 * np.sum(found.mask & truth) / (found.mask.sum() + truth.sum())
    assert dice > 0.8
    assert found.cell_box[2] <= 1.15 * mask_cell_box(truth)[2]  # the cut is the cell's, not the red cells'


def test_the_cell_box_is_the_nucleus_box_grown_by_half_a_diameter():
    assert cell_box((40, 50, 20, 30), 20.0, (200, 200)) == (25, 40, 50, 50)
    mask = np.zeros((100, 100), np.uint8)
    mask[40:60, 40:60] = 255
    x, y, w, h = mask_cell_box(mask)
    assert w == h and 20 + 2 * 10 <= w <= 20 + 2 * 12 and x + w / 2 == pytest.approx(50, abs=1)
    assert mask_cell_box(np.zeros((10, 10))) is None


def test_an_image_with_no_stain_is_used_whole():
    blank = np.full((50, 70, 3), 240, np.uint8)
    assert find_nucleus(blank) is None and single_cell_box(blank) == (0, 0, 70, 50)


def test_stain_normalisation_brings_another_microscope_back_to_the_reference():
    cells = np.stack([_cell(seed)[0] for seed in range(12)])
    shifted = np.stack([_yellow_and_faint(c) for c in cells])
    here = normalise_squares(cells, fit_stain(cells))
    there = normalise_squares(shifted, fit_stain(shifted))
    before = np.abs(cells.astype(float) - shifted.astype(float)).mean()
    after = np.abs(here.astype(float) - there.astype(float)).mean()
    assert after < 0.2 * before  # ~0.07 through the 99th-percentile anchor; ~0.53 matching all 33 quantiles
    # the glass is white after the white balance, whatever the lamp
    assert np.percentile(there.reshape(-1, 3), 99, axis=0).min() >= 245


def test_a_slide_fit_keeps_the_colour_differences_between_its_cells():
    cells = np.stack([_cell(seed, code)[0] for seed in range(6) for code in ("EN", "GN")])
    fit = fit_stain(cells)
    together = normalise_squares(cells, fit)
    alone = np.stack([normalise_squares(c[None])[0] for c in cells])
    spread = lambda batch: batch.reshape(len(batch), -1, 3).mean(axis=1).std(axis=0).sum()  # noqa: E731
    assert spread(together) > 0.5 * spread(cells)  # one mapping for the slide: cells stay distinct
    assert fit.fitted and alone.shape == cells.shape


def test_too_little_stain_to_fit_falls_back_to_the_reference_directions():
    pale = np.full((2, 16, 16, 3), 250, np.uint8)
    fit = fit_stain(pale)
    assert not fit.fitted and fit.stains == REFERENCE.stains
    assert normalise_squares(pale, fit).shape == pale.shape


def test_a_model_without_a_reference_reads_raw_colour():
    squares = stack_squares([_cell(seed)[0][:32, :32] for seed in range(3)])
    assert torch_equal(normalise_colour(squares, None), squares)


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(1)
    samples = []
    for k in range(24):
        code = ("EN", "GN")[k % 2]
        image, _ = synth.generate_cell(rng, code, size=48, nucleus_diameter=16)
        x, y, w, h = single_cell_box(image)
        samples.append(CellSample(image[y:y + h, x:x + w], code, f"S{k % 3}"))
    config = ClsTrainConfig(input_size=32, epochs=2, batch_size=8, patience=2)
    return train_classifier(samples, SCHEME, config)


def test_the_checkpoint_keeps_the_geometry_and_colour_rules(trained):
    checkpoint = trained.checkpoint
    assert checkpoint["geometry"]["margin"] == 0.5 and "nucleus" in checkpoint["geometry"]["rule"]
    assert checkpoint["colour"]["reference"] == REFERENCE.to_dict()
    assert set(checkpoint["colour"]["slides"]) == {"S0", "S1", "S2"}
    assert trained.classifier.stain_reference == REFERENCE


def test_a_colour_cast_changes_the_proposals_little(trained):
    crops = [_cell(seed, code, size=48, diameter=16)[0] for seed in range(8) for code in ("EN", "GN")]
    plain = predict_proba(trained.classifier, crops)
    cast = predict_proba(trained.classifier, [_yellow_and_faint(c) for c in crops])
    assert np.abs(plain - cast).mean() < 0.15


def test_eval_classifier_scores_images_of_any_size(trained, tmp_path):
    rng = np.random.default_rng(9)
    for k in range(8):
        code = ("EN", "GN")[k % 2]
        image, _ = synth.generate_cell(rng, code, size=(48, 120, 360)[k % 3], nucleus_diameter=16 * (1 + k % 3))
        (tmp_path / code).mkdir(exist_ok=True)
        (tmp_path / code / f"c{k}.png").write_bytes(_png(image))
    (tmp_path / "EN" / "broken.png").write_bytes(b"not an image")
    result = evaluate_classifier(trained.classifier, tmp_path)
    assert result["n"] == 8 and len(result["skipped"]) == 1


def _less_blue_chromatin(image: np.ndarray) -> np.ndarray:
    """Another lab's stain mix: the stained parts absorb half as much blue light, the rest as before."""
    od = -np.log((image.astype(np.float64) + 1) / 256)
    od[..., 2] *= 0.5
    return np.clip(256 * np.exp(-od) - 1, 0, 255).astype(np.uint8)


def test_density_matching_undoes_a_change_in_the_stain_s_mix():
    cells = np.stack([_cell(seed, code)[0] for seed in range(6) for code in ("EN", "GN")])
    reference = dataclasses.replace(fit_stain(cells), white=(256.0, 256.0, 256.0), anchors=DENSITY_ANCHORS)
    assert reference.quantiles is not None
    other = np.stack([_less_blue_chromatin(c) for c in cells])
    here, there = (normalise_squares(c, fit_stain(c), reference).astype(float) for c in (cells, other))
    before = np.abs(cells[..., 2].astype(float) - other[..., 2]).mean()
    assert np.abs(here[..., 2] - there[..., 2]).mean() < 0.3 * before


def test_a_fit_from_before_density_matching_still_normalises_by_its_stains():
    cells = np.stack([_yellow_and_faint(_cell(seed)[0]) for seed in range(12)])
    fit = fit_stain(cells)
    old = StainFit.from_dict({k: v for k, v in fit.to_dict().items() if k != "quantiles"})
    assert StainFit.from_dict(fit.to_dict()) == fit and old.quantiles is None and not old.white_only
    macenko = normalise_squares(cells, old)  # an old fit takes the stain path whatever the reference
    assert np.array_equal(macenko, normalise_squares(cells, fit, dataclasses.replace(REFERENCE, quantiles=None)))
    assert not np.array_equal(macenko, normalise_squares(cells, fit))


def test_the_per_channel_lookup_gives_each_pixel_s_own_density_mapping():
    cells = np.stack([_yellow_and_faint(_cell(seed, code)[0]) for seed in range(6) for code in ("EN", "GN")])
    cells[0, :4, :4] = [[0, 0, 0], [255, 255, 255], [1, 128, 254], [255, 0, 7]]  # the ends of every channel
    for fit in (fit_stain(cells), fit_stain(cells[:1])):  # the density match; a white balance alone
        looked_up = normalise_pixels(cells, fit)
        each = normalise_pixels(cells.astype(np.float32), fit)  # not uint8: computed pixel by pixel
        assert looked_up.dtype == each.dtype == np.uint8 and np.array_equal(looked_up, each)
        assert not np.array_equal(looked_up, cells)


def test_a_few_cells_from_a_new_slide_are_drawn_as_often_as_balancing_asks():
    draw = slide_draw(["PBC"] * 1000 + ["LAB"] * 10, 0.5)
    assert float(draw[1000:].sum()) == pytest.approx(100 / 1100)  # 10 cells weighted sqrt(100) each
    assert torch.allclose(slide_draw(["PBC"] * 5 + ["LAB"] * 5, 0.5), torch.full((10,), 0.1, dtype=torch.float64))
    assert slide_draw(["PBC"] * 1000 + ["LAB"] * 10, 0.0) is None and slide_draw(["PBC"] * 3, 0.5) is None


def test_a_cell_alone_is_only_white_balanced_not_fitted_to_its_own_colours():
    image, mask = _cell(4, "GN")
    orange = image.copy()
    orange[mask > 0, 1] = (orange[mask > 0, 1] * 0.4).astype(np.uint8)  # a cell stained unlike the reference
    fit = fit_stain(orange[None])
    assert fit.white_only and StainFit.from_dict(fit.to_dict()) == fit
    alone = normalise_squares(orange[None], fit)[0].astype(float)
    # white balance only: the cell's own colour survives (a density fit on it alone would pull it to the reference's)
    green_share = lambda im: im[mask > 0, 1].mean() / im[mask > 0].mean()  # noqa: E731
    assert abs(green_share(alone) - green_share(orange.astype(float))) < 0.04  # fitted alone: 0.12
    assert not fit_stain(np.stack([_cell(seed)[0] for seed in range(12)])).white_only


@pytest.mark.parametrize("anchors", [DENSITY_ANCHORS, None])
def test_densities_beyond_a_slide_s_top_quantile_scale_boundedly(anchors):
    reference = dataclasses.replace(REFERENCE, anchors=anchors)
    flat_top = tuple(tuple(list(q[:-2]) + [q[-3] + 1e-7] * 2) for q in REFERENCE.quantiles)  # two top quantiles equal
    fit = dataclasses.replace(REFERENCE, quantiles=flat_top, anchors=None)
    od = np.array([[3.0, 3.0, 3.0]], np.float32)  # darker than any of the slide's quantiles
    mapped = match_densities(od, fit, reference)[0]
    assert np.all(mapped <= 3.0 * np.array([q[-1] for q in REFERENCE.quantiles]) / np.array([q[-1] for q in flat_top]))
    assert np.isfinite(mapped).all()


def test_a_cell_keeps_its_colour_whatever_else_its_slide_holds():
    """A slide of one cell type, or of cells cut tighter, is recoloured no more than its stain asks."""
    mixed = [_cell(seed, code, size=64, diameter=20)[0] for seed in range(8) for code in ("EN", "GN")]
    one_type = np.stack(mixed[::2])  # the EN cells alone: a slide of one lineage
    tight = np.stack([c[8:-8, 8:-8] for c in mixed])  # less glass and background around each cell
    mixed = np.stack(mixed)
    shifts = {}
    for anchors in (DENSITY_ANCHORS, None):
        reference = dataclasses.replace(REFERENCE, anchors=anchors)
        as_mixed = normalise_squares(mixed, fit_stain(mixed), reference).astype(float)
        alone = normalise_squares(one_type, fit_stain(one_type), reference).astype(float)
        cut = normalise_squares(tight, fit_stain(tight), reference).astype(float)
        shifts[anchors] = (np.abs(as_mixed[::2] - alone).mean(), np.abs(as_mixed[:, 8:-8, 8:-8] - cut).mean())
    anchored, whole = shifts[DENSITY_ANCHORS], shifts[None]  # ~(4.8, 1.9) against ~(14, 9.5) grey levels
    assert anchored[0] < 7 and anchored[1] < 3
    assert whole[0] > 2 * anchored[0] and whole[1] > 2 * anchored[1]  # matching every quantile moved them
