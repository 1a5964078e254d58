"""Grad-CAM: right shape for every architecture, no hooks left behind, nucleus-mass fraction, overlay."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from mdsdys.classify import cam as cam_module
from mdsdys.classify.archs import ARCHITECTURES, ArchSpec, create_model, get_arch
from mdsdys.classify.cam import (
    MIN_CAM_GRID,
    CamCache,
    cam_layer,
    cam_outside_fraction,
    grad_cam,
    overlay,
)
from mdsdys.classify.classifier import Classifier
from mdsdys.classify.inputs import Normalizer
from mdsdys.schemes import scheme_from_folders

SCHEME = scheme_from_folders("syn2", ["EN", "GN"])
PLAIN = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def classifier_for(arch: str) -> Classifier:
    size = max(48, get_arch(arch).min_input)
    torch.manual_seed(0)
    return Classifier(create_model(arch, 2).eval(), arch, SCHEME, size, PLAIN)


def hook_count(net: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in net.modules())


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def any_classifier(request):
    return classifier_for(request.param)


def test_cam_has_the_crop_shape_and_range_for_every_architecture(any_classifier):
    crop = np.random.default_rng(0).integers(0, 256, (50, 36, 3), dtype=np.uint8)  # not square: padded inside
    cam = grad_cam(any_classifier, crop, class_index=1)
    assert cam.shape == (50, 36) and cam.dtype == np.float32
    assert 0.0 <= cam.min() and cam.max() <= 1.0


def test_no_hooks_remain_after_50_calls(any_classifier):
    crop = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    for i in range(50):
        grad_cam(any_classifier, crop, class_index=i % 2)
    assert hook_count(any_classifier.net) == 0
    assert all(p.grad is None for p in any_classifier.net.parameters())  # the shared model is untouched


def test_cam_layer_has_a_fine_enough_grid(any_classifier):
    net, arch, size = any_classifier.net, any_classifier.arch, any_classifier.input_size
    layer = cam_layer(net, arch, size)
    seen = {}
    handle = layer.register_forward_hook(lambda m, i, o: seen.update(side=o.shape[-1]))
    with torch.no_grad():
        net(torch.zeros(1, 3, size, size))
    handle.remove()
    deepest_last = net.get_submodule(get_arch(arch).cam_layers[-1])
    assert seen["side"] >= MIN_CAM_GRID or layer is deepest_last


def test_hooks_are_removed_even_when_the_call_fails():
    classifier = classifier_for("cellnet")
    with pytest.raises(IndexError):
        grad_cam(classifier, np.zeros((32, 32, 3), np.uint8), class_index=7)  # only 2 classes
    assert hook_count(classifier.net) == 0


class _RedDetector(nn.Module):
    """Logit 1 = the mean of a ReLU'd red-minus-green map: it 'looks at' red pixels only."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 1, 1, bias=False)
        with torch.no_grad():
            self.features.weight.copy_(torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = torch.relu(self.features(x)).mean(dim=(2, 3))   # (B, 1)
        return torch.cat([-score, score], dim=1)                # (B, 2)


def test_cam_highlights_what_drives_the_class(monkeypatch):
    monkeypatch.setitem(ARCHITECTURES, "red", ArchSpec(lambda n: _RedDetector(), 8, ("features",), "test"))
    crop = np.zeros((32, 32, 3), np.uint8)
    crop[4:12, 20:28, 0] = 255  # a red square top right
    cam = grad_cam(Classifier(_RedDetector(), "red", SCHEME, 32, PLAIN), crop, class_index=1)
    assert cam[8, 24] == pytest.approx(1.0)
    assert cam[24, 8] == pytest.approx(0.0)


def test_cam_outside_fraction_on_constructed_maps():
    cam = np.zeros((10, 10), np.float32)
    cam[:, :5] = 1.0  # all mass on the left half
    left = np.zeros((10, 10), np.uint8)
    left[:, :5] = 255
    assert cam_outside_fraction(cam, left) == pytest.approx(0.0)
    assert cam_outside_fraction(cam, 255 - left) == pytest.approx(1.0)
    quarter = np.zeros((10, 10), bool)
    quarter[:5, :5] = True
    assert cam_outside_fraction(np.ones((10, 10)), quarter) == pytest.approx(0.75)
    assert math.isnan(cam_outside_fraction(np.zeros((10, 10)), left))


def test_cam_outside_fraction_pads_an_unpadded_box_mask_like_the_crop():
    cam = np.zeros((10, 10), np.float32)
    cam[3:7, :] = 1.0  # the middle band of a square crop padded from a 4-row box
    box_mask = np.full((4, 10), 255, np.uint8)  # the whole box is nucleus
    assert cam_outside_fraction(cam, box_mask) == pytest.approx(0.0)


def test_overlay_keeps_cold_pixels_and_colours_hot_ones():
    crop = np.full((8, 8, 3), 100, np.uint8)
    heat = np.zeros((8, 8), np.float32)
    heat[0, 0] = 1.0
    out = overlay(crop, heat)
    assert out.dtype == np.uint8 and out.shape == crop.shape
    assert (out[4, 4] == crop[4, 4]).all()
    assert out[0, 0, 0] > 100 and out[0, 0, 2] < 100  # red at the peak
    with pytest.raises(ValueError):
        overlay(crop, np.zeros((4, 4)))


def test_cam_cache_computes_each_key_once(monkeypatch):
    calls = []
    monkeypatch.setattr(cam_module, "grad_cam", lambda c, crop, k, colour=None: calls.append(k) or np.zeros((2, 2), np.float32))
    cache, classifier, crop = CamCache(maxsize=2), classifier_for("cellnet"), np.zeros((4, 4, 3), np.uint8)
    for cell_id, k in [(1, 0), (1, 0), (2, 1), (3, 1), (1, 0)]:
        cache.get(classifier, cell_id, crop, k)
    assert calls == [0, 1, 1, 0]  # (1, 0) cached, then evicted by two newer keys
    assert len(cache) == 2
