"""The out-of-distribution score of issue 13: a slide unlike the model's training images is flagged."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mdsdys.classify.archs import create_model, embedding_head, list_models
from mdsdys.classify.classifier import (
    MAX_VIEWS,
    CellSample,
    central_view,
    classifier_from_checkpoint,
    dihedral_view,
    predict_squares,
    slide_colour,
)
from mdsdys.classify.inputs import stack_squares
from mdsdys.classify.ood import colour_features, predict_and_score, score_cells, slide_ood
from mdsdys.classify.train import ClsTrainConfig, train_classifier
from mdsdys.demo import synth
from mdsdys.errors import SchemeError
from mdsdys.imaging.thumbnails import square_resize
from mdsdys.schemes import scheme_from_folders

SCHEME = scheme_from_folders("syn2", ["EN", "GN"])
TINY = ClsTrainConfig(epochs=2, batch_size=8, input_size=32, patience=2)


def _crops(seed: int, per_class: int) -> list[tuple[np.ndarray, str]]:
    rng = np.random.default_rng(seed)
    return [(synth.generate_cell(rng, code, size=48, nucleus_diameter=16)[0], code)
            for code in ("EN", "GN") for _ in range(per_class)]


def shifted(crop: np.ndarray) -> np.ndarray:
    """A yellow cast and faint stain: what another lab's scanner and staining do to a smear."""
    x = crop.astype(np.float64)
    x = 255 - 0.45 * (255 - x)                      # faint stain
    x *= np.array([1.0, 0.95, 0.7])                 # yellow white point
    return np.clip(x, 0, 255).astype(np.uint8)


def _squares(crops: list[np.ndarray], size: int = 32) -> torch.Tensor:
    return stack_squares([square_resize(c, size) for c in crops])


@pytest.fixture(scope="module")
def trained():
    samples = [CellSample(crop, code, f"S{k % 4}") for k, (crop, code) in enumerate(_crops(5, 20))]
    return train_classifier(samples, SCHEME, TINY)


def test_the_reference_is_kept_in_the_checkpoint_as_plain_types_and_reloads(trained):
    reference = trained.checkpoint["ood"]
    assert json.loads(json.dumps(reference)) == reference
    assert reference["threshold"] >= 1.0 and reference["n_calibration"] >= 10
    assert classifier_from_checkpoint(trained.checkpoint).ood == reference


def test_a_shifted_slide_scores_high_and_is_flagged_and_an_in_domain_one_is_not(trained):
    classifier = classifier_from_checkpoint(trained.checkpoint)
    new_cells = [crop for crop, _ in _crops(11, 15)]   # unseen cells of the same kind
    in_domain = slide_ood(score_cells(classifier, _squares(new_cells)), classifier.ood)
    cast = slide_ood(score_cells(classifier, _squares([shifted(c) for c in new_cells])), classifier.ood)
    assert in_domain.flagged is False and cast.flagged is True
    assert cast.score > 2 * in_domain.score and cast.n_cells == 30


def test_one_pass_gives_the_proposals_and_the_scores_of_two(trained):
    classifier = classifier_from_checkpoint(trained.checkpoint)
    squares = _squares([shifted(c) for c, _ in _crops(7, 5)])
    colour = slide_colour(classifier, squares)
    probs, scores = predict_and_score(classifier, squares, batch_size=4, colour=colour)
    assert np.allclose(probs, predict_squares(classifier, squares, colour=colour), atol=1e-5)
    assert np.allclose(scores, score_cells(classifier, squares, colour=colour), rtol=1e-5)
    without = classifier_from_checkpoint({k: v for k, v in trained.checkpoint.items() if k != "ood"})
    probs, scores = predict_and_score(without, squares, colour=colour)
    assert probs.shape == (10, 2) and np.isnan(scores).all()


def test_blur_raises_the_colour_part():
    crops = [crop for crop, _ in _crops(3, 6)]
    blurred = [np.asarray(square_resize(square_resize(c, 12), 48)) for c in crops]
    sharp, soft = colour_features(_squares(crops, 48))[:, -1], colour_features(_squares(blurred, 48))[:, -1]
    assert (soft < sharp).all()



def test_colour_features_read_the_darkest_and_brightest_pixels_whatever_their_order():
    rng = np.random.default_rng(0)
    levels = rng.permutation(256).astype(np.uint8).reshape(16, 16)  # grey pixels, no two alike
    tinted = np.stack([levels, levels, (levels * 0.9).astype(np.uint8)])  # (3, 16, 16)
    features = colour_features(torch.from_numpy(tinted[None]))[0]
    order = np.argsort(tinted.reshape(3, -1).sum(0).astype(int))
    density = -np.log((tinted.reshape(3, -1).astype(float) + 1) / 256)
    assert np.allclose(features[:3], density[:, order[:76]].mean(1))  # the darkest 30% of 256 pixels
    white = tinted.reshape(3, -1)[:, order[-51:]].mean(1) + 1  # the brightest 20%
    assert np.allclose(features[6:9], [np.log(white[0] / white[1]), np.log(white[2] / white[1]), np.log(white.mean())])
    noisy = rng.integers(90, 110, (4, 3, 24, 24), dtype=np.uint8)  # many pixels tied on each grey level
    shuffled = noisy.reshape(4, 3, -1)[:, :, rng.permutation(24 * 24)].reshape(noisy.shape)
    a, b = colour_features(torch.from_numpy(noisy)), colour_features(torch.from_numpy(shuffled))
    assert np.allclose(a[:, :9], b[:, :9], atol=1e-12) and not np.allclose(a[:, 9], b[:, 9])  # sharpness is spatial
    with pytest.raises(ValueError, match="uint8"):
        colour_features(torch.zeros((1, 3, 8, 8)))

def test_a_model_without_a_reference_gives_unknown_never_a_crash(trained):
    checkpoint = {k: v for k, v in trained.checkpoint.items() if k != "ood"}
    classifier = classifier_from_checkpoint(checkpoint)
    scores = score_cells(classifier, _squares([c for c, _ in _crops(2, 2)]))
    assert np.isnan(scores).all()
    result = slide_ood(scores, classifier.ood)
    assert result.flagged is None and result.score is None


@pytest.mark.parametrize("name", list_models())
def test_every_architecture_exposes_its_embedding(name):
    net = create_model(name, 3).eval()
    kept = []
    handle = embedding_head(net, name).register_forward_pre_hook(lambda m, i: kept.append(i[0]))
    with torch.no_grad():
        net(torch.zeros(2, 3, 80, 80) if name == "inception_v3" else torch.zeros(2, 3, 32, 32))
    handle.remove()
    assert kept[0].shape[0] == 2 and kept[0].flatten(1).shape[1] == embedding_head(net, name).in_features


def test_test_time_views_make_a_mirrored_cell_read_as_the_cell(trained):
    """Two orientations per cell (the default): a slide and its mirror image get the same proposals and scores."""
    classifier = classifier_from_checkpoint(trained.checkpoint)
    assert classifier.views == trained.checkpoint["test_views"] == 2
    squares = _squares([c for c, _ in _crops(9, 6)])
    mirrored = squares.flip(-1)
    colour = slide_colour(classifier, squares)
    probs, scores = predict_and_score(classifier, squares, colour=colour)
    probs_m, scores_m = predict_and_score(classifier, mirrored, colour=colour)
    assert np.allclose(probs, probs_m, atol=1e-5)
    assert np.allclose(scores, scores_m, rtol=1e-2)  # the raw colour part's sharpness is nearly, not exactly, mirror-blind
    once = classifier_from_checkpoint(trained.checkpoint | {"test_views": 1})
    assert not np.allclose(predict_squares(once, squares, colour=colour), predict_squares(once, mirrored, colour=colour),
                           atol=1e-5)


def test_a_checkpoint_from_before_test_time_views_reads_each_cell_once_and_a_tampered_count_is_refused(trained):
    older = {k: v for k, v in trained.checkpoint.items() if k != "test_views"}
    assert classifier_from_checkpoint(older).views == 1
    for bad in (0, 9, "4", 2.5):
        with pytest.raises(SchemeError, match="test-time views"):
            classifier_from_checkpoint(trained.checkpoint | {"test_views": bad})
    with pytest.raises(ValueError, match="test_views"):
        train_classifier([CellSample(c, k, "S") for c, k in _crops(1, 4)], SCHEME,
                         ClsTrainConfig(**(TINY.to_dict() | {"test_views": 0, "augment": TINY.augment})))


def test_test_time_crops_read_each_cell_cut_tighter_as_well(trained):
    """Each orientation is also read at 80% of the side: what lies in the square's outer ring weighs less."""
    classifier = classifier_from_checkpoint(trained.checkpoint)
    assert classifier.crops == tuple(trained.checkpoint["test_crops"]) == (1.0, 0.8)
    assert classifier.passes == 4
    squares = _squares([c for c, _ in _crops(9, 6)])
    ringed = squares.clone()
    ringed[..., :3, :] = ringed[..., -3:, :] = 0  # a dark neighbour's edge along the top and bottom
    ringed[..., :, :3] = ringed[..., :, -3:] = 0
    colour = slide_colour(classifier, squares)
    tight = classifier_from_checkpoint(trained.checkpoint | {"test_crops": [0.8]})
    assert np.allclose(predict_squares(tight, squares, colour=colour), predict_squares(tight, ringed, colour=colour),
                       atol=1e-5)
    both = predict_squares(classifier, squares, colour=colour), predict_squares(classifier, ringed, colour=colour)
    assert not np.allclose(*both, atol=1e-5)  # the whole square is still read too
    probs, _ = predict_and_score(classifier, squares, colour=colour)  # the OOD pass reads the same four views
    assert np.allclose(probs, both[0], atol=1e-5)


def test_a_checkpoint_from_before_test_time_crops_reads_the_square_alone_and_tampered_crops_are_refused(trained):
    older = {k: v for k, v in trained.checkpoint.items() if k != "test_crops"}
    assert classifier_from_checkpoint(older).crops == (1.0,)
    for bad in ([], [1.0, 0.9, 0.8, 0.7, 0.6], [0.1], [1.5], ["0.8"], [True], 0.8, None):
        with pytest.raises(SchemeError, match="test-time crops"):
            classifier_from_checkpoint(trained.checkpoint | {"test_crops": bad})
    with pytest.raises(ValueError, match="test_crops"):
        train_classifier([CellSample(c, k, "S") for c, k in _crops(1, 4)], SCHEME,
                         ClsTrainConfig(**(TINY.to_dict() | {"test_crops": (0.2,), "augment": TINY.augment})))
    assert ClsTrainConfig.from_dict(TINY.to_dict() | {"test_crops": [1.0, 0.8]}).test_crops == (1.0, 0.8)


def test_a_central_view_keeps_the_middle_of_the_square_and_enlarges_it():
    x = torch.zeros(1, 1, 10, 10)
    x[..., 1:9, 1:9] = 1.0  # bright middle, dark one-pixel ring
    assert torch.equal(central_view(x, 1.0), x)
    view = central_view(x, 0.8)
    assert view.shape == x.shape and torch.allclose(view, torch.ones_like(view))


def test_the_eight_views_are_the_eight_orientations_of_a_square():
    square = torch.arange(16).reshape(1, 4, 4)
    views = [dihedral_view(square, v) for v in range(MAX_VIEWS)]
    assert torch.equal(views[0], square)
    assert len({tuple(v.flatten().tolist()) for v in views}) == MAX_VIEWS
    with pytest.raises(ValueError):
        dihedral_view(square, MAX_VIEWS)
