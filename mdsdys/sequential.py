"""Count to a decision: when a lineage's dysplasia call and the blast band are settled (issue 17).

Why not re-check the Wilson interval after every cell: each look is a fresh 5% chance of a wrong
call, and looking after every cell of a 500-cell count inflates that to far more than 5% (the
benchmark `bench/sequential.py` measures it). This module uses a *confidence sequence* instead:
a sequence of intervals that covers the true rate at every count at once with probability 95%,
so a reader may look after every cell and stop whenever the interval clears the line.

The sequence is Robbins' beta-binomial mixture (Robbins 1970; Howard, Ramdas, McAuliffe & Sekhon,
"Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist. 2021, section 3.3
and the conjugate-mixture examples). For k dysplastic cells among n cells of a lineage and a
candidate rate p, the mixture likelihood ratio

    M_n(p) = B(a + k, b + n - k) / B(a, b) / (p^k (1 - p)^(n - k))

is a nonnegative martingale with mean 1 when p is the true rate, so by Ville's inequality
P(M_n(p) >= 1/alpha for some n) <= alpha. The 95% confidence sequence at count n is
{p : M_n(p) < 1/alpha}, an interval around k/n (log M_n is convex in p). A lineage is settled
above (>= 10%) when that interval lies wholly at or above 10%, settled below when it lies wholly
below; the blast band is settled when the interval lies inside one band. A wrong call needs the
interval to miss the true rate at some count, which happens on at most 5% of slides, at every
true rate, however often one looks (Wald's SPRT with an indifference zone, Wald 1945, would
only promise 5% outside the zone, and rates near 10% are exactly the hard slides).

The mixing prior Beta(a, b) only moves where the power goes: it is centred on the decision
line with the weight of CONCENTRATION cells, so the sequence is tightest for slides a few
points from 10% after some hundreds of cells (see the benchmark).

Assumption the guarantee rests on: the cells counted are a fair sample of the lineage on the
slide, read in an order that does not depend on whether they are dysplastic (slide order, or
the "settle this slide" queue, which orders by the model's lineage call, not its dysplasia call).
WHO's minimum counts (DOMAIN.md) are a floor: nothing settles before them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import betaln

from mdsdys import who
from mdsdys.who import DYSPLASIA_LINE

ALPHA = 0.05  # the stated wrong-call rate, per lineage and for the blast band
# WHO 2016 (mdsdys.who): the 10% line, and the blast bands among all nucleated cells.
BLAST_LIMITS = tuple(limit for limit, _ in who.BLAST_BANDS[:-1])  # 5%, 10%, 20%
BLAST_BANDS = tuple(label for _, label in who.BLAST_BANDS)
# WHO-practice minimum counts (DOMAIN.md, "Enough cells"); an admin may change them in the store.
WHO_FLOORS: Mapping[str, int] = {**who.MIN_CELLS, "differential": who.MIN_DIFFERENTIAL}
# Prior weight of the mixture in cells. A sweep of 2-1000 in bench/sequential.py gave the fewest
# cells (mean over the true rates, capped at 2000) at 50; 20-100 are within 2%.
CONCENTRATION = 50.0
BLAST_PRIOR_MEAN = 0.08  # centre of the blast mixture, between the 5% and 10% limits where slides crowd
# Beyond this many cells of a lineage a slide is "too close to call", not "about N more".
MAX_CELLS = 20_000

SETTLED_ABOVE, SETTLED_BELOW, SETTLED, COUNTING = "settled above", "settled below", "settled", "counting"


@dataclass(frozen=True)
class CountState:
    """Where one count stands: its 95% confidence-sequence interval and whether it is settled."""

    name: str               # a lineage, or 'blasts'
    k: int                  # dysplastic cells (or blasts)
    n: int                  # cells of the lineage (or all nucleated cells, for blasts)
    low: float              # the interval, valid at every count at once
    high: float
    state: str              # lineages: SETTLED_ABOVE / SETTLED_BELOW / COUNTING; blasts: SETTLED / COUNTING
    band: str | None        # blasts: the settled band; lineages: '>=10%' / '<10%' when settled
    more_needed: int | None  # COUNTING: about how many more cells; None when too close to call
    floor: int              # the minimum count in force

    @property
    def settled(self) -> bool:
        """Whether the call is made."""
        return self.state != COUNTING

    def describe(self) -> str:
        """The state in a hematologist's words, e.g. 'about 140 more erythroid cells needed'."""
        what = "cells" if self.name == "blasts" else f"{self.name} cells"
        if self.settled:
            return f"settled: {self.band}" + ("" if self.name == "blasts" else " dysplastic")
        if self.more_needed is None:
            return f"too close to call: more than {MAX_CELLS - self.n} more {what} would be needed"
        return f"about {about(self.more_needed)} more {what} needed"


def about(cells: int) -> int:
    """A projected count rounded as a person would say it: exact under 20, then to 10s, then 2 figures."""
    if cells < 20:
        return cells
    if cells < 200:
        return int(round(cells, -1))
    return int(round(cells, -(len(str(cells)) - 2)))


def _prior(centre: float, concentration: float | None = None) -> tuple[float, float]:
    """Beta(a, b) with mean `centre` and the weight of `concentration` cells (default CONCENTRATION)."""
    weight = CONCENTRATION if concentration is None else concentration
    return weight * centre, weight * (1.0 - centre)


def log_evidence(k: float | np.ndarray, n: float | np.ndarray, p: float,
                 prior: tuple[float, float]) -> np.ndarray:
    """log M_n(p), the beta-binomial mixture's evidence against rate p after k of n (arrays broadcast)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"log_evidence needs 0 < p < 1; got {p}.")
    a, b = prior
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    return betaln(a + k, b + n - k) - betaln(a, b) - k * math.log(p) - (n - k) * math.log1p(-p)


def confidence_sequence(k: int, n: int, alpha: float = ALPHA,
                        prior: tuple[float, float] | None = None) -> tuple[float, float]:
    """The interval {p : M_n(p) < 1/alpha} after k of n (prior centred on 10% by default); (0, 1) for no cells."""
    prior = prior or _prior(DYSPLASIA_LINE)
    if not 0 <= k <= n:
        raise ValueError(f"confidence_sequence needs 0 <= k <= n; got k={k}, n={n}.")
    if n == 0:
        return 0.0, 1.0
    bound, centre = math.log(1.0 / alpha), min(max(k / n, 1e-12), 1 - 1e-12)

    def excess(p: float) -> float:
        return float(log_evidence(k, n, p, prior)) - bound

    edge = 1e-12
    low = 0.0 if excess(edge) < 0 or centre <= edge else brentq(excess, edge, centre)
    high = 1.0 if excess(1 - edge) < 0 or centre >= 1 - edge else brentq(excess, centre, 1 - edge)
    return float(low), float(high)


def cells_to_clear(rate: float, n: int, line: float, alpha: float, prior: tuple[float, float],
                   cap: int = MAX_CELLS) -> int | None:
    """The count at which the sequence would clear `line` if the rate stayed at `rate`; None past `cap`."""
    if n >= cap:
        return None
    bound = math.log(1.0 / alpha)

    def first_clear(counts: np.ndarray) -> int | None:
        hits = np.flatnonzero(log_evidence(rate * counts, counts, line, prior) >= bound)
        return int(hits[0]) if hits.size else None

    # Coarse to fine: a geometric grid finds the step in which it clears, then every count inside it.
    grid = np.unique(np.geomspace(max(n, 1), cap, 256).round()).astype(np.float64)
    step = first_clear(grid)
    if step is None:
        return None
    fine = np.arange(grid[step - 1] if step else grid[0], grid[step] + 1, dtype=np.float64)
    return int(fine[first_clear(fine)])


def _estimate(k: int, n: int) -> float:
    """The rate to project from: k/n with half a cell added (so 0 of 3 is not 'exactly 0%')."""
    return (k + 0.5) / (n + 1.0)


def lineage_state(name: str, k: int, n: int, floor: int, alpha: float = ALPHA,
                  line: float = DYSPLASIA_LINE) -> CountState:
    """Settled above / below the 10% line, or about how many more cells of the lineage are needed."""
    prior = _prior(line)
    low, high = confidence_sequence(k, n, alpha, prior)
    if n >= floor and low >= line:
        return CountState(name, k, n, low, high, SETTLED_ABOVE, f">={line:.0%}", None, floor)
    if n >= floor and high < line:
        return CountState(name, k, n, low, high, SETTLED_BELOW, f"<{line:.0%}", None, floor)
    rate = _estimate(k, n)
    target = cells_to_clear(rate, n, line, alpha, prior) if abs(rate - line) > 1e-9 else None
    more = None if target is None else max(target, floor) - n
    if low >= line or high < line:  # the interval has cleared: only the WHO floor is left to reach
        more = floor - n
    return CountState(name, k, n, low, high, COUNTING, None, max(more, 1) if more is not None else None, floor)


def band_of(rate: float, limits: Sequence[float] = BLAST_LIMITS, bands: Sequence[str] = BLAST_BANDS) -> str:
    """The band a rate falls in: below the first limit, ..., at or above the last."""
    return bands[int(np.searchsorted(np.asarray(limits), rate, side="right"))]


def blast_state(k: int, n: int, floor: int, alpha: float = ALPHA) -> CountState:
    """The blast band once one 95% sequence lies inside one band, else about how many more cells."""
    prior = _prior(BLAST_PRIOR_MEAN)
    low, high = confidence_sequence(k, n, alpha, prior)
    if n >= floor and n > 0 and band_of(low) == band_of(high):
        return CountState("blasts", k, n, low, high, SETTLED, band_of(low), None, floor)
    rate = _estimate(k, n)
    needed = []
    for line in _bounding_limits(rate):
        needed.append(cells_to_clear(rate, n, line, alpha, prior) if abs(rate - line) > 1e-9 else None)
    more = None if None in needed else max([*needed, floor]) - n
    return CountState("blasts", k, n, low, high, COUNTING, None, max(more, 1) if more is not None else None, floor)


def _bounding_limits(rate: float) -> list[float]:
    """The band limits just below and above a rate (one or two of them)."""
    below = [x for x in BLAST_LIMITS if x <= rate]
    above = [x for x in BLAST_LIMITS if x > rate]
    return ([below[-1]] if below else []) + ([above[0]] if above else [])


def first_settled(dysplastic: np.ndarray, floor: int, alpha: float = ALPHA, line: float = DYSPLASIA_LINE,
                  prior: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For (R, T) bool paths read one cell at a time: (R,) count at the first settled look (0 = never)
    and (R,) call there (+1 above, -1 below, 0 never). The look-after-every-cell rule, vectorised."""
    prior = prior or _prior(line)
    paths = np.asarray(dysplastic, dtype=bool)
    n = np.arange(1, paths.shape[1] + 1, dtype=np.float64)
    k = np.cumsum(paths, axis=1, dtype=np.float64)
    cleared = (log_evidence(k, n, line, prior) >= math.log(1.0 / alpha)) & (n >= floor)
    return _first_call(cleared, k >= line * n)


def _first_call(cleared: np.ndarray, above: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    any_hit = cleared.any(axis=1)
    first = np.where(any_hit, cleared.argmax(axis=1), -1)
    rows = np.arange(cleared.shape[0])
    call = np.where(any_hit, np.where(above[rows, np.maximum(first, 0)], 1, -1), 0)
    return np.where(any_hit, first + 1, 0), call


def first_band_settled(blasts: np.ndarray, floor: int, alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """For (R, T) bool paths (True = blast): (R,) count at the first settled look (0 = never) and (R,)
    index into BLAST_BANDS there (-1 = never). The sequence lies in a band exactly when the MLE does
    and the evidence against each limit bounding that band has reached 1/alpha."""
    prior = _prior(BLAST_PRIOR_MEAN)
    paths = np.asarray(blasts, dtype=bool)
    n = np.arange(1, paths.shape[1] + 1, dtype=np.float64)
    k = np.cumsum(paths, axis=1, dtype=np.float64)
    band = np.searchsorted(np.asarray(BLAST_LIMITS), k / n, side="right")  # (R, T) band of the MLE
    excluded = [log_evidence(k, n, line, prior) >= math.log(1.0 / alpha) for line in BLAST_LIMITS]
    cleared = n >= floor
    for j, hit in enumerate(excluded):
        bounds_band = (band == j) | (band == j + 1)  # limit j is the upper edge of band j, lower of j + 1
        cleared = cleared & (hit | ~bounds_band)
    any_hit = cleared.any(axis=1)
    first = np.where(any_hit, cleared.argmax(axis=1), -1)
    rows = np.arange(paths.shape[0])
    return np.where(any_hit, first + 1, 0), np.where(any_hit, band[rows, np.maximum(first, 0)], -1)
