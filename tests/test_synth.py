"""Tests for the seeded synthetic smear generator."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import ConvexHull

from mdsdys.demo.synth import (
    CLASS_CODES,
    DEFAULT_CLASS_WEIGHTS,
    SynthPatch,
    generate_cell,
    generate_patch,
    generate_study,
)

SEEDS = range(6)


def _patch(seed: int, **kw: object) -> SynthPatch:
    """A default 256x256 patch from a fresh generator."""
    return generate_patch(np.random.default_rng(seed), **kw)  # type: ignore[arg-type]


@cache
def _cells(code: str, n: int = 24, size: int = 96, d: float = 24.0) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(n,) single-cell (image (size, size, 3) uint8, nucleus (size, size) bool) pairs for one class."""
    rng = np.random.default_rng(sum(map(ord, code)))
    cells = (generate_cell(rng, code, size=size, nucleus_diameter=d) for _ in range(n))
    return tuple((image, mask > 0) for image, mask in cells)


def _nuclei(code: str, n: int = 24, size: int = 96, d: float = 24.0) -> list[np.ndarray]:
    """(n,) single-cell nucleus masks, (size, size) bool each, for one class."""
    return [nucleus for _, nucleus in _cells(code, n, size, d)]


def _solidity(nucleus: np.ndarray) -> float:
    """Nucleus area over the area of the convex hull of its pixel squares."""
    ys, xs = np.nonzero(nucleus)
    corners = np.concatenate([np.stack([ys + dy, xs + dx], 1) for dy in (-0.5, 0.5) for dx in (-0.5, 0.5)])
    return float(nucleus.sum() / ConvexHull(corners).volume)


def _touching_pairs(instances: np.ndarray) -> int:
    """Number of instance pairs whose nuclei share a 4-connected boundary."""
    pairs = set()
    for i in range(1, int(instances.max()) + 1):
        ring = ndimage.binary_dilation(instances == i) & (instances != i) & (instances > 0)
        pairs |= {tuple(sorted((i, int(j)))) for j in np.unique(instances[ring])}
    return len(pairs)


def test_same_seed_gives_identical_patch() -> None:
    a, b = _patch(3), _patch(3)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.mask, b.mask)
    assert np.array_equal(a.instances, b.instances)
    assert [(c.code, c.box) for c in a.cells] == [(c.code, c.box) for c in b.cells]
    assert all(np.array_equal(x.nucleus, y.nucleus) for x, y in zip(a.cells, b.cells))


def test_different_seed_gives_different_patch() -> None:
    a, b = _patch(3), _patch(4)
    assert not np.array_equal(a.image, b.image)
    assert not np.array_equal(a.mask, b.mask)


def test_patch_arrays_have_documented_shapes_and_dtypes() -> None:
    p = _patch(0, height=200, width=300)
    assert p.image.shape == (200, 300, 3) and p.image.dtype == np.uint8
    assert p.mask.shape == (200, 300) and p.mask.dtype == np.uint8
    assert p.instances.shape == (200, 300) and p.instances.dtype == np.int32
    assert set(np.unique(p.mask)) <= {0, 255}
    assert len(p.cells) > 0


@pytest.mark.parametrize("allow_touching", [False, True])
def test_mask_equals_cell_nuclei_placed_at_their_boxes(allow_touching: bool) -> None:
    for seed in SEEDS:
        p = _patch(seed, allow_touching=allow_touching)
        rebuilt = np.zeros_like(p.instances)
        for i, cell in enumerate(p.cells):
            x, y, w, h = cell.box
            assert cell.code in CLASS_CODES
            assert x >= 0 and y >= 0 and x + w <= p.mask.shape[1] and y + h <= p.mask.shape[0]
            assert cell.nucleus.shape == (h, w) and cell.nucleus.dtype == bool and cell.nucleus.any()
            assert not (rebuilt[y:y + h, x:x + w] & cell.nucleus).any(), "nuclei overlap"
            rebuilt[y:y + h, x:x + w][cell.nucleus] = i + 1
        assert np.array_equal(rebuilt, p.instances)
        assert np.array_equal(p.instances > 0, p.mask == 255)


def test_nuclei_do_not_touch_by_default() -> None:
    assert sum(_touching_pairs(_patch(seed).instances) for seed in SEEDS) == 0


def test_allow_touching_makes_touching_nuclei() -> None:
    assert sum(_touching_pairs(_patch(seed, allow_touching=True).instances) for seed in SEEDS) >= 1


def test_red_cells_are_drawn_outside_the_mask() -> None:
    p = _patch(5)
    rgb = p.image.astype(int)
    reddish = (rgb[..., 0] - rgb[..., 1] > 50) & (rgb[..., 0] - rgb[..., 2] > 40)
    assert (reddish & (p.mask == 0)).sum() > 2000
    assert (reddish & (p.mask > 0)).sum() < 0.01 * (p.mask > 0).sum()


def test_red_cells_never_change_the_mask() -> None:
    none, many = _patch(7, n_rbc=0), _patch(7, n_rbc=200)
    assert np.array_equal(none.mask, many.mask)
    assert not np.array_equal(none.image, many.image)


def test_class_weights_restrict_the_classes_drawn() -> None:
    p = _patch(2, n_cells=6, class_weights={"BL": 1.0})
    assert {c.code for c in p.cells} == {"BL"}
    assert len(p.cells) == 6


def test_default_weights_follow_paper_table_2() -> None:
    assert set(DEFAULT_CLASS_WEIGHTS) == set(CLASS_CODES)
    assert max(DEFAULT_CLASS_WEIGHTS, key=DEFAULT_CLASS_WEIGHTS.get) == "GN"
    assert abs(sum(DEFAULT_CLASS_WEIGHTS.values()) - 100.1) < 0.5


def test_study_is_deterministic_and_named() -> None:
    a, b = generate_study(seed=1, patches_per_slide=2), generate_study(seed=1, patches_per_slide=2)
    assert [s.name for s in a] == ["SYN-001", "SYN-002", "SYN-003"]
    for sa, sb in zip(a, b):
        assert all(np.array_equal(x.image, y.image) for x, y in zip(sa.patches, sb.patches))


def test_study_contains_every_class_and_slides_differ_in_mix() -> None:
    study = generate_study(seed=0)
    counts = [{code: 0 for code in CLASS_CODES} for _ in study]
    for count, slide in zip(counts, study):
        for cell in (c for p in slide.patches for c in p.cells):
            count[cell.code] += 1
    assert all(sum(c[code] for c in counts) > 0 for code in CLASS_CODES)
    ed_share = [c["ED"] / max(1, c["ED"] + c["EN"]) for c in counts]
    blast_share = [c["BL"] / sum(c.values()) for c in counts]
    assert ed_share[1] > 0.1 > ed_share[0]
    assert blast_share[2] > 0.05 > blast_share[0]


@pytest.mark.parametrize("code", CLASS_CODES)
def test_generate_cell_returns_a_centred_nucleus(code: str) -> None:
    image, mask = generate_cell(np.random.default_rng(0), code)
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert mask.shape == (96, 96) and mask.dtype == np.uint8 and mask.any()
    cy, cx = ndimage.center_of_mass(mask > 0)
    assert abs(cy - 47.5) < 16 and abs(cx - 47.5) < 16


def test_megakaryocyte_fits_a_small_cell_image() -> None:
    _, mask = generate_cell(np.random.default_rng(0), "MN", size=64)
    ys, xs = np.nonzero(mask)
    assert ys.min() > 0 and xs.min() > 0 and ys.max() < 63 and xs.max() < 63


def test_megakaryocyte_nucleus_is_over_three_times_erythroid() -> None:
    mn = np.mean([m.sum() for m in _nuclei("MN", size=256)])
    en = np.mean([m.sum() for m in _nuclei("EN")])
    assert mn > 3 * en


def test_dysplastic_megakaryocytes_have_smaller_nuclei_than_normal() -> None:
    md = np.mean([m.sum() for m in _nuclei("MD", size=256)])
    mn = np.mean([m.sum() for m in _nuclei("MN", size=256)])
    assert md < 0.6 * mn


def test_neutrophil_nucleus_is_segmented_unlike_erythroid() -> None:
    gn = np.mean([_solidity(m) for m in _nuclei("GN")])
    en = np.mean([_solidity(m) for m in _nuclei("EN")])
    assert gn < en - 0.1


def test_most_dysplastic_erythroid_nuclei_are_budded_split_or_enlarged() -> None:
    en = _nuclei("EN", n=40)
    big = 1.3 * np.median([m.sum() for m in en])

    def abnormal(m: np.ndarray) -> bool:
        return ndimage.label(m)[1] > 1 or _solidity(m) < 0.88 or m.sum() > big

    assert np.mean([abnormal(m) for m in _nuclei("ED", n=40)]) > 0.8
    assert np.mean([abnormal(m) for m in en]) < 0.15


def test_dysplastic_granulocytes_have_fewer_nuclear_lobes_on_average() -> None:
    def lobes(m: np.ndarray) -> int:
        return ndimage.label(ndimage.binary_opening(m, iterations=2))[1]

    gn, gd = _nuclei("GN"), _nuclei("GD")
    assert np.mean([lobes(m) for m in gd]) < np.mean([lobes(m) for m in gn])


def test_blast_chromatin_is_lighter_than_erythroid() -> None:
    def brightness(code: str) -> float:
        return float(np.mean([img[m].mean() for img, m in _cells(code)]))

    assert brightness("BL") > brightness("EN") + 20


def test_nucleus_diameter_scales_nucleus_area() -> None:
    small = np.mean([m.sum() for m in _nuclei("EN", d=16.0)])
    large = np.mean([m.sum() for m in _nuclei("EN", d=32.0)])
    assert 3.0 < large / small < 5.0


def test_unknown_class_code_raises_value_error() -> None:
    with pytest.raises(ValueError, match="Unknown class code 'XX'"):
        generate_cell(np.random.default_rng(0), "XX")
    with pytest.raises(ValueError, match="Unknown class code"):
        _patch(0, class_weights={"XX": 1.0})


@pytest.mark.parametrize("weights", [{"EN": -1.0}, {"EN": 0.0, "GN": 0.0}])
def test_negative_or_all_zero_class_weights_raise_value_error(weights: dict) -> None:
    with pytest.raises(ValueError, match="weight"):
        _patch(0, class_weights=weights)


@pytest.mark.parametrize(
    "kw", [{"height": 0}, {"width": -5}, {"nucleus_diameter": 0.0}, {"nucleus_diameter": 2.0}, {"n_cells": -1}]
)
def test_non_positive_or_undrawably_small_sizes_raise_value_error(kw: dict) -> None:
    with pytest.raises(ValueError):
        _patch(0, **kw)


def test_non_positive_cell_size_raises_value_error() -> None:
    with pytest.raises(ValueError, match="size"):
        generate_cell(np.random.default_rng(0), "EN", size=0)
