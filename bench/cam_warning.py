"""How often the Grad-CAM "outside the nucleus" warning fires (issue 14): the old fixed threshold against the calibrated one.

    python bench/cam_warning.py [--json FILE] [--per-class N] [--epochs E]

Trains a small classifier (the default architecture, mdsdys.classify.train) on cells from the demo
generator (mdsdys.demo.synth.generate_cell, each with its nucleus mask), which calibrates the warning
on its validation cells as every training does, then computes the Grad-CAM of the top class on
held-out generated cells (other seeds) and counts how often each rule warns:
- before: outside-nucleus share > 0.5 (the fixed threshold the Review page used);
- after: share > the model's calibrated 95th percentile (checkpoint["cam_warning"]).
The generator's cells are cartoons: the figures show how the rule behaves, not how a model reads marrow.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mdsdys.classify.cam import cam_outside_fraction, grad_cam
from mdsdys.classify.classifier import CellSample, classifier_from_checkpoint, slide_colour
from mdsdys.classify.inputs import stack_squares
from mdsdys.classify.train import ClsTrainConfig, train_classifier
from mdsdys.demo import synth
from mdsdys.imaging.thumbnails import square_resize
from mdsdys.review.explain import OLD_OUTSIDE_WARNING
from mdsdys.schemes import scheme_from_folders


def machine() -> dict:
    """Cores, CPU model and versions, printed with every result."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cores": os.cpu_count(), "cpu": cpu, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(), "load": os.getloadavg()}


def cells(seed: int, per_class: int, slides: int = 4) -> list[CellSample]:
    """per_class generated cells of each class, with nucleus masks, spread over a few 'slides'."""
    rng = np.random.default_rng(seed)
    out = []
    for code in synth.CLASS_CODES:
        for k in range(per_class):
            image, mask = synth.generate_cell(rng, code, size=72)
            out.append(CellSample(image, code, f"SYN-{seed}-{k % slides}", None, mask))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--held-out-per-class", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=ClsTrainConfig().epochs)
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    start = time.monotonic()
    scheme = scheme_from_folders("syn8", list(synth.CLASS_CODES))
    config = ClsTrainConfig(epochs=args.epochs, patience=args.epochs, min_per_class=3)
    result = train_classifier(cells(1, args.per_class), scheme, config)
    train_s = time.monotonic() - start
    classifier = classifier_from_checkpoint(result.checkpoint)  # the threshold as a reloaded model has it
    held_out = cells(2, args.held_out_per_class)
    # Each held-out slide's cells share its colour fit, as the Review page's CAMs do (explain._slide_colour).
    colours = {slide: slide_colour(classifier, stack_squares([square_resize(s.crop, classifier.input_size)
                                                               for s in held_out if s.group == slide]))
               for slide in sorted({s.group for s in held_out})}
    fractions = np.array([cam_outside_fraction(grad_cam(classifier, s.crop, colour=colours[s.group]), s.nucleus)
                          for s in held_out])
    threshold = classifier.cam_warning
    codes = np.array([s.code for s in held_out])
    figures = {
        "machine": machine(),
        "data": f"demo generator cells (72 px, nucleus masks): {args.per_class}/class to train, "
                f"{args.held_out_per_class}/class held out (other seed)",
        "model": {"arch": config.arch, "epochs": args.epochs, "test_macro_f1": result.metrics.get("macro_f1"),
                  "train_s": round(train_s, 1)},
        "calibration": result.checkpoint["cam_warning"],
        "held_out_cells": int(fractions.size),
        "held_out_outside_median": float(np.median(fractions)),
        "before": {"rule": f"outside > {OLD_OUTSIDE_WARNING}", "firing_rate": float(np.mean(fractions > OLD_OUTSIDE_WARNING))},
        "after": {"rule": f"outside > {threshold:.3f} (calibrated p95)" if threshold is not None else "no threshold",
                  "firing_rate": float(np.mean(fractions > threshold)) if threshold is not None else 0.0},
        "after_by_class": {code: float(np.mean(fractions[codes == code] > threshold)) if threshold is not None else 0.0
                           for code in synth.CLASS_CODES},
        "before_by_class": {code: float(np.mean(fractions[codes == code] > OLD_OUTSIDE_WARNING))
                            for code in synth.CLASS_CODES},
        "seconds": round(time.monotonic() - start, 1),
    }
    table = ("| rule | threshold | firing rate on held-out cells |\n|---|---|---|\n"
             f"| before (fixed) | {OLD_OUTSIDE_WARNING:.2f} | {figures['before']['firing_rate']:.1%} |\n"
             f"| after (calibrated p95) | {threshold if threshold is None else round(threshold, 3)} "
             f"| {figures['after']['firing_rate']:.1%} |")
    print(json.dumps(figures, indent=1))
    print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1))
        args.json.with_suffix(".md").write_text(table + "\n")


if __name__ == "__main__":
    main()
