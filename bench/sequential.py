"""Does the counting rule keep its 5%? Simulated slides with known true rates (issue 17).

For each true rate, many slides are read one cell at a time and the rule looks after every
cell. A wrong call is settling on the wrong side of 10% (or in the wrong blast band). Compared in
the same run:
- the rule (mdsdys.sequential: beta-binomial confidence sequence, WHO floor, cap of MAX cells);
- the naive rule: stop the first time the 95% Wilson interval clears the line, re-checked after
  every cell (from the first cell, and from the WHO floor);
- fixed counts of 200 and 500 cells, called by the point estimate (never abstain).

    python bench/sequential.py [--replicates 2000] [--json bench/sequential.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mdsdys import sequential  # noqa: E402

LINEAGE_RATES = (0.0, 0.02, 0.04, 0.06, 0.07, 0.08, 0.085, 0.09, 0.095, 0.1, 0.105, 0.11, 0.115, 0.12,
                 0.13, 0.14, 0.16, 0.2, 0.25, 0.3)  # dense near the 10% line, where slides are hard
BLAST_RATES = (0.0, 0.02, 0.04, 0.045, 0.05, 0.055, 0.06, 0.08, 0.095, 0.1, 0.105, 0.12, 0.15, 0.19, 0.2,
               0.21, 0.25, 0.3)


def machine() -> str:
    """One line describing this machine."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, numpy {np.__version__}"


def wilson_clears(k: np.ndarray, n: np.ndarray, line: float, z: float = 1.96) -> np.ndarray:
    """Where the 95% Wilson interval of k of n excludes `line` (vectorised stats.wilson_interval)."""
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return (centre - half > line) | (centre + half < line)


def naive_wrong(paths: np.ndarray, rate: float, floor: int, line: float = 0.10) -> float:
    """Wrong-call rate of the re-checked Wilson rule: stop at the first look whose interval clears."""
    n = np.arange(1, paths.shape[1] + 1, dtype=np.float64)
    k = np.cumsum(paths, axis=1, dtype=np.float64)
    first, call = sequential._first_call(wilson_clears(k, n, line) & (n >= floor), k >= line * n)
    return float(np.mean(call == (-1 if rate >= line else 1)))


def fixed_wrong(paths: np.ndarray, rate: float, cells: int, line: float = 0.10) -> float:
    """Wrong-call rate of a fixed count called by its point estimate."""
    above = paths[:, :cells].mean(axis=1) >= line
    return float(np.mean(above != (rate >= line)))


def lineage_row(rate: float, replicates: int, floor: int, cap: int, rng: np.random.Generator) -> dict:
    """One true dysplasia rate: the rule against the naive rule and fixed counts."""
    paths = rng.random((replicates, cap)) < rate
    stop, call = sequential.first_settled(paths, floor)
    truth = 1 if rate >= sequential.DYSPLASIA_LINE else -1
    settled = call != 0
    return {
        "true_rate": rate, "wrong": float(np.mean(call == -truth)), "settled": float(np.mean(settled)),
        "median_cells": float(np.median(stop[settled])) if settled.any() else None,
        "mean_cells_capped": float(np.mean(np.where(settled, stop, cap))),
        "settled_by_500": float(np.mean(settled & (stop <= 500))),
        "naive_wilson_wrong_from_1": naive_wrong(paths, rate, 1),
        "naive_wilson_wrong_from_floor": naive_wrong(paths, rate, floor),
        "fixed_200_wrong": fixed_wrong(paths, rate, 200), "fixed_500_wrong": fixed_wrong(paths, rate, 500),
    }


def blast_row(rate: float, replicates: int, floor: int, cap: int, rng: np.random.Generator) -> dict:
    """One true blast rate: the rule's band call against a fixed 500-cell differential."""
    paths = rng.random((replicates, cap)) < rate
    stop, band = sequential.first_band_settled(paths, floor)
    truth = int(np.searchsorted(np.asarray(sequential.BLAST_LIMITS), rate, side="right"))
    settled = band >= 0
    fixed = np.searchsorted(np.asarray(sequential.BLAST_LIMITS), paths[:, :500].mean(axis=1), side="right")
    return {
        "true_rate": rate, "wrong": float(np.mean(settled & (band != truth))), "settled": float(np.mean(settled)),
        "median_cells": float(np.median(stop[settled])) if settled.any() else None,
        "mean_cells_capped": float(np.mean(np.where(settled, stop, cap))),
        "settled_by_500": float(np.mean(settled & (stop <= 500))),
        "fixed_500_wrong": float(np.mean(fixed != truth)),
    }


def table(rows: list[dict], columns: list[str]) -> str:
    """A markdown table of some columns."""
    def cell(v: object) -> str:
        return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    """Run both simulations, print the tables and save JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=2000)
    parser.add_argument("--lineage-cap", type=int, default=2000, help="lineage cells on a slide at most")
    parser.add_argument("--blast-cap", type=int, default=5000, help="nucleated cells on a slide at most")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_suffix(".json"))
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    floor = sequential.WHO_FLOORS["erythroid"]
    lineage = [lineage_row(r, args.replicates, floor, args.lineage_cap, rng) for r in LINEAGE_RATES]
    blasts = [blast_row(r, args.replicates, sequential.WHO_FLOORS["differential"], args.blast_cap, rng)
              for r in BLAST_RATES]
    seconds = time.perf_counter() - start
    print(f"machine: {machine()}")
    print(f"data: simulated slides, {args.replicates} per true rate, a look after every cell, seed {args.seed}; "
          f"alpha {sequential.ALPHA}, prior weight {sequential.CONCENTRATION} cells; {seconds:.0f} s")
    print(f"\n## Lineage >= 10% vs < 10% (floor {floor} lineage cells, at most {args.lineage_cap})")
    print(table(lineage, list(lineage[0])))
    print(f"\n## Blast band (floor {sequential.WHO_FLOORS['differential']} cells, at most {args.blast_cap})")
    print(table(blasts, list(blasts[0])))
    worst = max(r["wrong"] for r in lineage + blasts)
    print(f"\nworst wrong-call rate of the rule: {worst:.3f} (stated: {sequential.ALPHA})")
    args.json.write_text(json.dumps({
        "machine": machine(), "replicates": args.replicates, "seed": args.seed, "alpha": sequential.ALPHA,
        "concentration": sequential.CONCENTRATION, "seconds": seconds, "lineage_floor": floor,
        "lineage_cap": args.lineage_cap, "blast_cap": args.blast_cap, "lineage": lineage, "blasts": blasts,
        "worst_wrong": worst}, indent=1))


if __name__ == "__main__":
    main()
