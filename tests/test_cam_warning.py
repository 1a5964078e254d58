"""The Grad-CAM "outside the nucleus" warning is calibrated on the model's own cells (issue 14)."""

from __future__ import annotations

import numpy as np
import pytest

from mdsdys.augment import ISSUE4_CLASSIFIER_AUGMENT

from mdsdys.classify.cam import cam_outside_fraction, grad_cam
from mdsdys.classify.classifier import CellSample, classifier_from_checkpoint, slide_colour
from mdsdys.classify.inputs import stack_squares
from mdsdys.classify.train import ClsTrainConfig, train_classifier
from mdsdys.demo import synth
from mdsdys.imaging.thumbnails import square_resize
from mdsdys.review.explain import CamView
from mdsdys.schemes import scheme_from_folders

SCHEME = scheme_from_folders("syn2", ["EN", "GN"])
# BatchNorm cellnet, 4 epochs: after 2 a GroupNorm one's Grad-CAM is still empty on half these cells, and under
# density-matched colour a 2-epoch cellnet's CAMs lie wholly outside the nucleus on over 5% of them (threshold 1.0).
# The light issue-4 augmentation and 6 epochs: with the default's wide colour ranges 4 epochs left CAMs diffuse.
TINY = ClsTrainConfig(arch="cellnet", epochs=6, batch_size=8, input_size=32, patience=6,
                      augment=ISSUE4_CLASSIFIER_AUGMENT)


def _cells(with_masks: bool, per_class: int = 15) -> list[CellSample]:
    rng = np.random.default_rng(5)
    samples = []
    for code in ("EN", "GN"):
        for k in range(per_class):
            image, mask = synth.generate_cell(rng, code, size=48, nucleus_diameter=16)
            samples.append(CellSample(image, code, f"S{k % 3}", None, mask if with_masks else None))
    return samples


def test_training_stores_a_calibrated_threshold_and_the_reloaded_model_uses_it():
    samples = _cells(with_masks=True)
    result = train_classifier(samples, SCHEME, TINY)
    warning = result.checkpoint["cam_warning"]
    assert warning["percentile"] == 95.0 and warning["n"] >= 20 and 0.0 < warning["threshold"] <= 1.0
    assert result.classifier.cam_warning == warning["threshold"]
    reloaded = classifier_from_checkpoint(result.checkpoint)
    assert reloaded.cam_warning == warning["threshold"]
    colours = {g: slide_colour(reloaded, stack_squares([square_resize(s.crop, 32) for s in samples if s.group == g]))
               for g in {s.group for s in samples}}  # each slide's colour, as the Review page's CAMs have it
    fractions = np.array([cam_outside_fraction(grad_cam(reloaded, s.crop, colour=colours[s.group]), s.nucleus)
                          for s in samples])
    assert 0.0 < np.mean(fractions > reloaded.cam_warning) <= 0.2  # the unusual few, not most cells


def test_a_model_trained_without_nucleus_masks_or_before_calibration_has_no_threshold():
    result = train_classifier(_cells(with_masks=False), SCHEME, TINY)
    assert result.checkpoint["cam_warning"]["threshold"] is None and result.classifier.cam_warning is None
    old = {k: v for k, v in result.checkpoint.items() if k != "cam_warning"}  # a checkpoint from before issue 14
    assert classifier_from_checkpoint(old).cam_warning is None


def _view(outside: float | None, threshold: float | None) -> CamView:
    return CamView(np.zeros((8, 8, 3), np.uint8), "EN", outside, "v1", threshold, "its own held-out cells")


def test_a_cam_mostly_outside_the_nucleus_warns_and_a_typical_one_does_not():
    yy, xx = np.mgrid[:64, :64]
    nucleus = np.where((yy - 32) ** 2 + (xx - 32) ** 2 <= 12 ** 2, 255, 0).astype(np.uint8)
    on_nucleus = np.exp(-((yy - 32) ** 2 + (xx - 32) ** 2) / (2 * 10.0 ** 2))
    in_the_corner = np.exp(-((yy - 4) ** 2 + (xx - 60) ** 2) / (2 * 10.0 ** 2))
    typical, odd = cam_outside_fraction(on_nucleus, nucleus), cam_outside_fraction(in_the_corner, nucleus)
    assert typical < 0.6 and odd > 0.95
    threshold = 0.8  # as a model's 95th percentile might be
    assert _view(odd, threshold).unusual is True and "unusually for this model" in _view(odd, threshold).note()
    assert "mostly outside the nucleus" in _view(odd, threshold).note()
    assert _view(typical, threshold).unusual is False and "usual for this model" in _view(typical, threshold).note()


def test_without_a_threshold_no_cell_is_flagged_and_the_note_says_why():
    view = _view(0.99, None)
    assert view.unusual is None and "no cell is flagged" in view.note()
    assert _view(None, 0.8).unusual is None and "no nucleus mask" in _view(None, 0.8).note()


@pytest.mark.parametrize("outside", [0.79, 0.81])
def test_the_warning_fires_exactly_above_the_threshold(outside):
    assert _view(outside, 0.8).unusual is (outside > 0.8)


def test_a_model_that_looks_wholly_outside_the_nucleus_too_often_gets_no_threshold_and_says_so(monkeypatch):
    """A 95th percentile of 1.0 is a warning no cell could trip: it is no threshold, and the note says why."""
    import mdsdys.classify.cam as cam

    samples = _cells(with_masks=True)
    result = train_classifier(samples, SCHEME, TINY)
    shares = iter([1.0] * 3 + [0.3] * 27)  # 10% of the calibration cells wholly outside: the 95th percentile is 1
    monkeypatch.setattr(cam, "cam_outside_fraction", lambda _cam, _nucleus: next(shares))
    warning = cam.calibrate_cam_warning(result.classifier, [s.crop for s in samples], [s.nucleus for s in samples])
    assert warning["threshold"] is None and warning["diffuse"] is True and warning["n"] == 30
    diffuse = CamView(np.zeros((8, 8, 3), np.uint8), "EN", 1.0, "v1", None, "its own held-out cells", diffuse=True)
    assert diffuse.unusual is None and "wholly outside the nucleus" in diffuse.note()
    # a checkpoint from before `diffuse` whose threshold is 1.0 reads the same way, not as a threshold
    old = result.checkpoint | {"cam_warning": {"threshold": 1.0, "percentile": 95.0, "n": 30, "median": 0.4}}
    reloaded = classifier_from_checkpoint(old)
    assert reloaded.cam_warning is None and reloaded.cam_diffuse is True
    assert classifier_from_checkpoint(result.checkpoint).cam_diffuse is result.checkpoint["cam_warning"]["diffuse"]
