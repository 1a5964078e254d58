"""WHO 2016 arithmetic as the paper applies it (DOMAIN.md): the 10% dysplasia line, blast bands, minimum counts."""

from __future__ import annotations

DYSPLASIA_LINE = 0.10  # a lineage is dysplastic when at least 10% of its cells are
# Cells WHO-practice wants per lineage before a dysplasia % is judged (DOMAIN.md, "Enough cells").
MIN_CELLS = {"erythroid": 200, "granulocytic": 200, "megakaryocytic": 30}
MIN_DIFFERENTIAL = 500  # nucleated cells of a differential count
# Blasts as a share of all nucleated cells: <5% MDS with single/multi-lineage dysplasia, 5-9% MDS-EB-1,
# 10-19% MDS-EB-2, >=20% AML.
BLAST_BANDS = ((0.05, "<5%"), (0.10, "5-9%"), (0.20, "10-19%"), (float("inf"), ">=20%"))


def blast_band(fraction: float) -> str:
    """The WHO blast band of a blast fraction: <5%, 5-9%, 10-19% or >=20%."""
    return next(label for limit, label in BLAST_BANDS if fraction < limit)
