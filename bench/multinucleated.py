"""Counting a multinucleated cell once (issue 14): cells per field before and after grouping nuclei into cells.

    python bench/multinucleated.py [--json FILE] [--bccd-fields N] [--synthetic-fields N] [--no-starter]

Before = every nucleus instance of the post-processing is a cell (the old rule); after = nuclei
within one cell's boundary share one cell (mdsdys.segment.grouping).

- BCCD (../shared/data/bccd_nuclei): each field holds one white cell, or as many as labels.csv lists
  types. Cells per field are counted from the ground-truth masks (post-processed at the set's true
  nucleus diameter, 121 px) and from the starter segmenter (models/starter/segmenter.pt, given the
  same diameter). A BCCD white cell is often a lobed neutrophil or eosinophil whose lobes are
  separate mask components.
- Synthetic fields (mdsdys.demo.synth, touching cells allowed, all eight classes): ground-truth
  masks post-processed, then grouped; with every cell's true identity known we count wrong merges
  (one detected cell holding nuclei of two true cells) and split cells (one true cell detected as
  several).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mdsdys.demo import synth
from mdsdys.segment.grouping import group_cells
from mdsdys.segment.postprocess import PostConfig, instances_from_mask, mask_diameter

DATA = REPO.parent / "shared" / "data" / "bccd_nuclei"
BCCD_DIAMETER = 121.0  # median nucleus diameter of the BCCD masks (models/starter/MODEL_CARD.md)
# Multinucleated classes drawn more often than the paper's mix, so the synthetic set holds enough of them.
SYNTH_WEIGHTS = {"GN": 3, "EN": 2, "GD": 2, "ED": 2, "BL": 1, "MN": 1, "OT": 1, "MD": 2}


def machine() -> dict:
    """Cores, CPU model and versions, printed with every result."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "numpy": np.__version__, "load": os.getloadavg()}


def bccd_expected() -> dict[str, int]:
    """White cells per field: the number of types labels.csv lists (1 for most)."""
    with open(DATA / "labels.csv", newline="") as handle:
        return {row["image"]: len([t for t in row["wbc_type"].split(",") if t.strip()]) for row in csv.DictReader(handle)}


def count_summary(counts: list[int], expected: list[int]) -> dict:
    """How often the count per field is right, too high and too low, and the mean count."""
    c, e = np.asarray(counts), np.asarray(expected)
    return {"fields": int(c.size), "right": float(np.mean(c == e)), "too_many": float(np.mean(c > e)),
            "too_few": float(np.mean(c < e)), "mean_cells": float(c.mean()), "mean_expected": float(e.mean())}


def bench_bccd(n_fields: int, starter: bool) -> dict:
    """Cells per BCCD field from the true masks and from the starter segmenter, before and after grouping."""
    expected = bccd_expected()
    names = sorted(p.name for p in (DATA / "images").glob("*.jpg"))
    names = [n for n in names if n in expected][:: max(1, len(names) // n_fields)][:n_fields]
    model = None
    if starter:
        from mdsdys.config import STARTER_SEGMENTER
        from mdsdys.segment.field import segment_patch
        from mdsdys.segment.segmenter import load_segmenter
        model = load_segmenter(STARTER_SEGMENTER)
    rows: dict[str, list[int]] = {"expected": [], "masks_before": [], "masks_after": [],
                                  "starter_before": [], "starter_after": []}
    changed, grouping_s = [], []
    for name in names:
        image = np.asarray(Image.open(DATA / "images" / name).convert("RGB"))
        mask = np.asarray(Image.open(DATA / "masks" / name.replace(".jpg", ".png"))) > 127
        nuclei = instances_from_mask(mask, BCCD_DIAMETER)
        started = time.perf_counter()
        cells = group_cells(image, nuclei, BCCD_DIAMETER)
        grouping_s.append(time.perf_counter() - started)
        rows["expected"].append(expected[name])
        rows["masks_before"].append(int(nuclei.max()))
        rows["masks_after"].append(int(cells.max()))
        if model is not None:
            result = segment_patch(model, image, BCCD_DIAMETER)
            rows["starter_before"].append(int(result.instances.max()))
            rows["starter_after"].append(len(result.nuclei))
        if rows["masks_before"][-1] != rows["masks_after"][-1] or (model and rows["starter_before"][-1] != rows["starter_after"][-1]):
            changed.append(name)
    out = {key: count_summary(rows[key], rows["expected"]) for key in rows if key != "expected" and rows[key]}
    last = "starter_after" if rows["starter_after"] else "masks_after"
    wrong = {name: [rows[last][k], rows["expected"][k]] for k, name in enumerate(names) if rows[last][k] != rows["expected"][k]}
    return out | {"changed_fields": changed, f"still_wrong_{last}": wrong, "diameter_px": BCCD_DIAMETER,
                  "group_cells_ms_per_field": round(1000 * float(np.mean(grouping_s)), 1)}


def _owners(cells: np.ndarray, truth: np.ndarray) -> list[set[int]]:
    """For each detected cell, the true cells that hold at least a fifth of its nucleus pixels."""
    owners = []
    for label in range(1, int(cells.max()) + 1):
        inside = truth[cells == label]
        counts = np.bincount(inside[inside > 0])
        owners.append({int(k) for k in np.flatnonzero(counts >= max(1, 0.2 * inside.size))})
    return owners


def _synthetic_errors(cells: np.ndarray, truth: np.ndarray) -> tuple[set[tuple[int, int]], int]:
    """(pairs of true cells sharing one detected cell, true cells spread over two or more detected cells)."""
    owners = _owners(cells, truth)
    pairs = {(a, b) for o in owners for a in o for b in o if a < b}
    spread = np.bincount([k for o in owners for k in o], minlength=int(truth.max()) + 1)
    return pairs, int((spread[1:] >= 2).sum())


def bench_synthetic(n_fields: int, touching: bool, diameter: float = 24.0) -> dict:
    """Wrongly merged pairs of cells and split cells on synthetic fields, before and after grouping.

    A wrong merge is a pair of true cells that share one detected cell after grouping but not before
    (`new_wrong_merges`); `wrong_merged_pairs` counts all, the post-processing's own included.
    """
    rng = np.random.default_rng([14, touching])
    out = {"fields": n_fields, "touching_allowed": touching, "true_cells": 0, "multi_piece_cells": 0}
    sums = {key: {"cells": 0, "wrong_merged_pairs": 0, "split_cells": 0} for key in ("before", "after")}
    new_merges = 0
    for _ in range(n_fields):
        patch = synth.generate_patch(rng, 256, 256, n_cells=10, class_weights=SYNTH_WEIGHTS,
                                     nucleus_diameter=diameter, allow_touching=touching)
        d = mask_diameter(patch.mask) or diameter  # the app's own definition of the slide's diameter
        nuclei = instances_from_mask(patch.mask, d)
        cells = group_cells(patch.image, nuclei, d)
        out["true_cells"] += len(patch.cells)
        out["multi_piece_cells"] += sum(np.unique(nuclei[(patch.instances == k + 1) & (nuclei > 0)]).size >= 2
                                        for k in range(len(patch.cells)))
        merged = {}
        for key, labels in (("before", nuclei), ("after", cells)):
            merged[key], split = _synthetic_errors(labels, patch.instances)
            sums[key]["cells"] += int(labels.max())
            sums[key]["wrong_merged_pairs"] += len(merged[key])
            sums[key]["split_cells"] += split
        new_merges += len(merged["after"] - merged["before"])
    return out | sums | {"new_wrong_merges": new_merges}


def table(result: dict) -> str:
    """A short markdown table of the figures."""
    lines = ["| data | counted from | fields right | too many | too few | mean cells / expected |", "|---|---|---|---|---|---|"]
    for key, label in (("masks", "true masks"), ("starter", "starter segmenter")):
        for when in ("before", "after"):
            s = result.get("bccd", {}).get(f"{key}_{when}")
            if s:
                lines.append(f"| BCCD | {label}, {when} | {s['right']:.1%} | {s['too_many']:.1%} | {s['too_few']:.1%} "
                             f"| {s['mean_cells']:.2f} / {s['mean_expected']:.2f} |")
    header = "| synthetic fields (true masks) | cells (true) | true cells split | pairs of cells merged | new wrong merges |"
    lines += ["", header, "|---|---|---|---|---|"]
    for syn in result.get("synthetic", []):
        kind = "touching cells" if syn["touching_allowed"] else "cells apart"
        for when in ("before", "after"):
            s = syn[when]
            new = syn["new_wrong_merges"] if when == "after" else "-"
            lines.append(f"| {syn['fields']} fields, {kind}, {when} | {s['cells']} ({syn['true_cells']}) "
                         f"| {s['split_cells']} of {syn['multi_piece_cells']} in pieces | {s['wrong_merged_pairs']} | {new} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--bccd-fields", type=int, default=294)
    parser.add_argument("--synthetic-fields", type=int, default=60)
    parser.add_argument("--no-starter", action="store_true", help="count from the true masks only (no torch)")
    args = parser.parse_args()
    start = time.monotonic()
    result: dict = {"machine": machine(), "post": dataclasses.asdict(PostConfig())}
    if DATA.exists():
        result["bccd"] = bench_bccd(args.bccd_fields, not args.no_starter)
    else:
        print(f"skipping BCCD: {DATA} is absent")
    result["synthetic"] = [bench_synthetic(args.synthetic_fields, touching) for touching in (False, True)]
    result["seconds"] = round(time.monotonic() - start, 1)
    print(json.dumps(result, indent=1))
    print(table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
        args.json.with_suffix(".md").write_text(table(result) + "\n")


if __name__ == "__main__":
    main()
