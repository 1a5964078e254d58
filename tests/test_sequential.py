"""The counting rule (issue 17): a confidence sequence that keeps its 5% under a look after every cell."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

from mdsdys import sequential as seq


def test_sequence_holds_the_estimate_and_narrows_with_more_cells() -> None:
    wide = seq.confidence_sequence(10, 100)
    narrow = seq.confidence_sequence(100, 1000)
    assert wide[0] < 0.10 < wide[1] and narrow[0] < 0.10 < narrow[1]
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
    assert seq.confidence_sequence(0, 0) == (0.0, 1.0)
    assert seq.confidence_sequence(0, 50)[0] == 0.0


def test_sequence_edges_are_where_the_evidence_reaches_one_over_alpha() -> None:
    low, high = seq.confidence_sequence(30, 200)
    prior = seq._prior(seq.DYSPLASIA_LINE)
    for edge in (low, high):
        assert float(seq.log_evidence(30, 200, edge, prior)) == pytest.approx(math.log(20), abs=1e-6)


def test_sequence_is_wider_than_the_wilson_interval_it_replaces() -> None:
    from mdsdys.stats import wilson_interval
    low, high = seq.confidence_sequence(40, 300)
    w_low, w_high = wilson_interval(40, 300)
    assert low < w_low and high > w_high


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        seq.confidence_sequence(5, 3)
    with pytest.raises(ValueError):
        seq.log_evidence(1, 2, 1.0, (1.0, 1.0))


def test_clear_slides_settle_on_the_right_side() -> None:
    assert seq.lineage_state("erythroid", 0, 200, floor=200).state == seq.SETTLED_BELOW
    above = seq.lineage_state("erythroid", 100, 200, floor=200)
    assert above.state == seq.SETTLED_ABOVE and above.describe() == "settled: >=10% dysplastic"


def test_nothing_settles_before_the_who_floor() -> None:
    state = seq.lineage_state("erythroid", 0, 150, floor=200)
    assert state.high < seq.DYSPLASIA_LINE  # the interval has cleared...
    assert state.state == seq.COUNTING and state.more_needed == 50  # ...but WHO wants 200 cells
    assert state.describe() == "about 50 more erythroid cells needed"
    assert seq.lineage_state("erythroid", 0, 150, floor=0).state == seq.SETTLED_BELOW  # an admin lowered it


def test_a_slide_at_the_line_is_too_close_to_call() -> None:
    state = seq.lineage_state("granulocytic", 20, 200, floor=200)
    assert state.state == seq.COUNTING and state.more_needed is None
    assert state.describe().startswith("too close to call")


def test_more_cells_are_needed_the_nearer_the_slide_is_to_the_line() -> None:
    near = seq.lineage_state("erythroid", 16, 200, floor=200).more_needed
    far = seq.lineage_state("erythroid", 10, 200, floor=200).more_needed
    assert near is not None and far is not None and near > far > 0


def test_projected_count_is_roughly_where_the_rule_then_settles() -> None:
    state = seq.lineage_state("erythroid", 12, 200, floor=200)  # 6%
    target = state.n + state.more_needed
    assert seq.lineage_state("erythroid", round(0.06 * target), target, floor=200).state == seq.SETTLED_BELOW
    before = int(target * 0.8)
    assert seq.lineage_state("erythroid", round(0.06 * before), before, floor=200).state == seq.COUNTING


def test_blast_band_settles_only_when_the_interval_sits_in_one_band() -> None:
    assert seq.blast_state(0, 500, floor=500).band == "<5%"
    assert seq.blast_state(150, 500, floor=500).band == ">=20%"
    middle = seq.blast_state(25, 500, floor=500)  # 5%: right on a limit
    assert middle.state == seq.COUNTING and middle.band is None
    assert seq.band_of(0.05) == "5-9%" and seq.band_of(0.0999) == "5-9%" and seq.band_of(0.2) == ">=20%"


def _stepwise(path: np.ndarray, floor: int, blasts: bool) -> tuple[int, str | None]:
    k = 0
    for n, hit in enumerate(path, start=1):
        k += int(hit)
        state = seq.blast_state(k, n, floor) if blasts else seq.lineage_state("erythroid", k, n, floor)
        if state.settled:
            return n, state.band
    return 0, None


@pytest.mark.parametrize("blasts", [False, True])
def test_the_vectorised_rule_is_the_rule_the_app_applies(blasts: bool) -> None:
    rng = np.random.default_rng(3)
    rate = 0.15 if blasts else 0.04
    paths = rng.random((3, 500)) < rate
    if blasts:
        stops, bands = seq.first_band_settled(paths, floor=100)
        expected = [seq.BLAST_BANDS[b] if b >= 0 else None for b in bands]
    else:
        stops, calls = seq.first_settled(paths, floor=100)
        expected = [{1: ">=10%", -1: "<10%", 0: None}[int(c)] for c in calls]
    for path, stop, band in zip(paths, stops, expected, strict=True):
        assert _stepwise(path, 100, blasts) == (int(stop), band)


def test_wrong_calls_stay_under_five_percent_at_the_line_with_a_look_after_every_cell() -> None:
    rng = np.random.default_rng(17)
    paths = rng.random((600, 1500)) < 0.10  # truth: >= 10%, so any 'below' call is wrong
    _, calls = seq.first_settled(paths, floor=1)
    assert np.mean(calls == -1) <= seq.ALPHA
    # The re-checked Wilson interval, on the same paths, is wrong far more often (the point).
    n = np.arange(1, 1501)
    k = np.cumsum(paths, axis=1)
    p, z2 = k / n, 1.96 ** 2
    centre, half = (p + z2 / (2 * n)) / (1 + z2 / n), 1.96 / (1 + z2 / n) * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    assert np.mean((centre + half < 0.10).any(axis=1)) > 2 * seq.ALPHA


def test_projected_counts_are_rounded_as_a_person_says_them() -> None:
    assert [seq.about(n) for n in (7, 19, 24, 155, 1234, 20_000)] == [7, 19, 20, 160, 1200, 20_000]


def test_module_is_base_level() -> None:
    tree = ast.parse(Path(seq.__file__).read_text())
    imported = {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    allowed = {"__future__", "math", "collections.abc", "dataclasses", "numpy", "scipy.optimize", "scipy.special",
               "mdsdys", "mdsdys.who", "mdsdys.errors", "mdsdys.schemes", "mdsdys.config"}
    assert imported <= allowed, imported - allowed
