"""Counting a multinucleated cell once: nuclei inside one cell's boundary are one cell (issue 14)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from mdsdys.demo import synth
from mdsdys.imaging.measure import equivalent_diameter, measure_cell
from mdsdys.segment.field import _nuclei
from mdsdys.segment.grouping import group_cells
from mdsdys.segment.metrics import label_mask
from mdsdys.segment.postprocess import PostConfig, instances_from_mask

GLASS, CYTOPLASM, NUCLEUS = (238, 232, 236), (170, 150, 200), (90, 55, 125)


def _megakaryocyte_and_touching_pair() -> tuple[np.ndarray, np.ndarray, float]:
    """A generator field: a megakaryocyte with three separate nuclei beside two erythroblasts whose nuclei touch."""
    mk = synth.generate_patch(np.random.default_rng(40), 128, 128, n_cells=1, n_rbc=0, class_weights={"MD": 1})
    pair = synth.generate_patch(np.random.default_rng(0), 128, 96, n_cells=2, n_rbc=0, class_weights={"EN": 1},
                                allow_touching=True)
    assert ndimage.label(mk.mask)[1] == 3 and len(pair.cells) == 2 and label_mask(pair.mask).max() == 1
    diameter = float(np.median([2 * np.sqrt(c.nucleus.sum() / np.pi) for c in pair.cells]))  # a typical nucleus
    return np.concatenate([mk.image, pair.image], axis=1), np.concatenate([mk.mask, pair.mask], axis=1), diameter


def test_a_three_nucleus_megakaryocyte_and_a_touching_pair_are_one_cell_and_two():
    image, mask, diameter = _megakaryocyte_and_touching_pair()
    nuclei = instances_from_mask(mask, diameter)
    assert nuclei.max() == 5  # three separate nuclei, and the pair cut in two by the watershed
    cells = group_cells(image, nuclei, diameter)
    assert cells.max() == 3
    assert np.unique(cells[:, :128][mask[:, :128] > 0]).size == 1  # the megakaryocyte: one label
    assert np.unique(cells[:, 128:][mask[:, 128:] > 0]).size == 2  # the touching pair: two


def test_the_merged_cell_is_cropped_once_with_its_whole_nuclear_mask():
    image, mask, diameter = _megakaryocyte_and_touching_pair()
    cells = group_cells(image, instances_from_mask(mask, diameter), diameter)
    prob = (mask > 0).astype(np.float32)
    found = _nuclei(cells, prob, diameter, PostConfig())
    assert len(found) == 3
    mk = max(found, key=lambda n: n.area)
    assert mk.area == int((mask[:, :128] > 0).sum())  # every nucleus of the megakaryocyte, in one crop
    x, _, w, _ = mk.box
    assert (mk.mask > 0).sum() == mk.area and x + w <= 128 + round(0.5 * diameter)


def _field(cytoplasm_discs: list[tuple[int, int, int]], nuclei: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """A drawn field: cytoplasm discs (y, x, r) on glass, nucleus discs on top; (image, instances)."""
    yy, xx = np.mgrid[:100, :160]
    image = np.empty((100, 160, 3), np.uint8)
    image[:] = GLASS
    for cy, cx, r in cytoplasm_discs:
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = CYTOPLASM
    instances = np.zeros((100, 160), np.int32)
    for k, (cy, cx, r) in enumerate(nuclei, start=1):
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        image[disc], instances[disc] = NUCLEUS, k
    return image, instances


def test_two_lobes_inside_one_cell_join_but_the_same_pieces_with_glass_between_do_not():
    lobes = [(50, 68, 9), (50, 92, 9)]  # lobe-sized (0.6 diameters), 6 px (0.2 diameters) apart
    one_cell, instances = _field([(50, 80, 30)], lobes)
    assert group_cells(one_cell, instances, 30.0).max() == 1
    bare, instances = _field([], lobes)  # the same two pieces with glass between: two objects, not one cell
    assert group_cells(bare, instances, 30.0).max() == 2


def test_two_whole_nuclei_in_shared_cytoplasm_stay_two_cells():
    image, instances = _field([(50, 80, 40)], [(50, 62, 15), (50, 98, 15)])  # a whole diameter each, 6 px apart
    assert group_cells(image, instances, 30.0).max() == 2
    assert group_cells(image, instances, 30.0, PostConfig(cell_gap=0.0)).max() == 2


def test_a_nucleus_touching_one_lobe_is_not_pulled_into_that_cell_through_another():
    image, _ = _field([(50, 70, 45)], [])
    instances = np.zeros((100, 160), np.int32)
    instances[40:60, 50:65] = 1  # lobe A
    instances[40:60, 71:86] = 2  # lobe B of the same cell, 6 px from A
    instances[20:40, 50:65] = 3  # another cell's nucleus: touches A (the watershed cut them), ~7 px from B
    image[instances > 0] = NUCLEUS
    cells = group_cells(image, instances, 30.0)
    assert cells[50, 55] == cells[50, 80] != cells[30, 55]


def test_a_merged_cells_nucleus_is_measured_with_every_lobe():
    image, instances = _field([(50, 80, 30)], [(50, 68, 9), (50, 92, 9)])
    cells = group_cells(image, instances, 30.0)
    (found,) = _nuclei(cells, (cells > 0).astype(np.float32), 30.0, PostConfig())
    nucleus_px, cell_px = measure_cell(image, found.box, found.mask)
    both = equivalent_diameter(float((instances > 0).sum()))
    assert abs(nucleus_px / both - 1) <= 0.1 and cell_px > nucleus_px  # one lobe alone would be 0.71 of both
