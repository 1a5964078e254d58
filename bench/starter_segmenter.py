"""Train the shipped starter segmenter on real BCCD nuclei and write its model card (issue 13 item 3).

    nice -n 10 python bench/starter_segmenter.py          # ~10 CPU-minutes on a 2-core Xeon

A store with no segmenter of its own detects real fields with this model (mdsdys.segment.starter),
so a lab's first slide gets cells without anyone drawing masks first. It is the default U-Net of
`mdsdys train segmenter`, trained by `train_segmenter` with its strong stain and geometry
augmentation, on the same fixed 80% of ../shared/data/bccd_nuclei that bench/segmenter.py uses;
the other 20% (never seen in training) give the Dice beside the multi-Otsu baseline.

Writes models/starter/segmenter.pt (weights stored as float16: half the size, the same masks),
models/starter/MODEL_CARD.md and, with --json, the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/segmenter.py: busy-waiting on a shared machine

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.segmenter import DATA, machine, split  # noqa: E402  the same fixed 80/20 split
from mdsdys.segment.evaluate import evaluate_otsu, evaluate_segmenter, load_mask_pairs  # noqa: E402
from mdsdys.segment.segmenter import segmenter_from_checkpoint  # noqa: E402
from mdsdys.segment.starter import STARTER_DIR, STARTER_VERSION  # noqa: E402
from mdsdys.segment.train import MaskSample, SegTrainConfig, train_segmenter  # noqa: E402

log = logging.getLogger("bench.starter_segmenter")
# 18 epochs of 40 steps (5,760 augmented crops): validation Dice levels off after ~20 epochs on BCCD
# (bench/segmenter.py), and 720 steps at ~0.8 CPU-s each stay inside the 10 CPU-minute budget.
STARTER_CONFIG = SegTrainConfig(epochs=18, max_seconds=None)
LICENCE = ("BCCD images: Shenggan/BCCD_Dataset, MIT licence. Nucleus masks: Banik, Saha & Kim, Expert Systems "
           "with Applications 149 (2020) 113211, published with the MIT licence.")


def half_checkpoint(checkpoint: dict) -> dict:
    """The checkpoint with float16 weights (GroupNorm and convs load back into float32 unchanged)."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in checkpoint["state_dict"].items()}
    return checkpoint | {"state_dict": state}


def run(args: argparse.Namespace) -> dict:
    """Train, shrink, evaluate against Otsu on the held-out fields; returns the JSON-ready results."""
    pairs = load_mask_pairs(DATA)
    train, test = split(pairs)
    config = STARTER_CONFIG if not args.quick else dataclasses.replace(STARTER_CONFIG, epochs=3, steps_per_epoch=10)
    if args.quick:
        train, test = train[:20], test[:6]
    samples = [MaskSample(image, mask, "BCCD") for _, image, mask in train]
    start, cpu = time.perf_counter(), time.process_time()
    result = train_segmenter(samples, config)
    train_s, train_cpu = time.perf_counter() - start, time.process_time() - cpu
    checkpoint = half_checkpoint(result.checkpoint) | {"version": STARTER_VERSION, "starter": True}
    model = segmenter_from_checkpoint(checkpoint)
    diameter = float(checkpoint["data"]["nucleus_diameters"]["BCCD"])
    out = {"command": " ".join(sys.argv), "machine": machine(), "load_average": os.getloadavg(),
           "data": {"source": "../shared/data/bccd_nuclei", "fields": len(pairs), "train": len(train),
                    "held_out": len(test), "quick": bool(args.quick)},
           "config": config.to_dict(), "train_seconds": train_s, "train_cpu_seconds": train_cpu,
           "train_metrics": result.metrics, "slide_diameter_px": diameter,
           "held_out": {"starter (scale estimated)": evaluate_segmenter(model, test),
                        "starter (scale known)": evaluate_segmenter(model, test, diameter),
                        "otsu (scale known)": evaluate_otsu(test, diameter)}}
    if not args.quick:  # the same shifts bench/cross_microscope.py reports (bench/segmenter_shifts.py)
        from bench.segmenter_shifts import run as run_shifts
        out["shifts"] = run_shifts(model, test)["shifts"]
    checkpoint["metrics"] = result.metrics | {"held_out_dice": out["held_out"]["starter (scale estimated)"]["dice"]}
    target = Path(args.out)
    target.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, target / "segmenter.pt")
    out["weights_bytes"] = (target / "segmenter.pt").stat().st_size
    (target / "MODEL_CARD.md").write_text(model_card(out))
    return out


def model_card(out: dict) -> str:
    """The model card: what it is, the data and licence, the figures and how to reproduce them."""
    rows = ["| method | diameter px | Dice | IoU | object precision | object recall | object F1 |",
            "|---|---|---|---|---|---|---|"]
    for name, r in out["held_out"].items():
        tag = " (est.)" if r["diameter_estimated"] else ""
        rows.append(f"| {name} | {r['diameter']:.0f}{tag} | {r['dice']:.3f} | {r['iou']:.3f} | "
                    f"{r['object_precision']:.3f} | {r['object_recall']:.3f} | {r['object_f1']:.3f} |")
    m, d = out["machine"], out["data"]
    return "\n".join([
        f"# Starter nucleus segmenter ({STARTER_VERSION})", "",
        "A small U-Net (depth 4, width 16, 488k parameters, float16 weights) that finds the nuclei of "
        "nucleated cells in stained smear fields. mdsdys uses it when a store has no segmenter of its own, "
        "so a lab's first slide gets cells and proposals without drawing masks first. Once the store trains "
        "its own segmenter, detection uses whichever of the two is more certain on that slide "
        "(mdsdys.segment.starter.pick_segmenter).", "",
        "## Data and licence",
        f"- {d['train']} of {d['fields']} real BCCD peripheral-blood fields (640x480, many red cells, usually "
        f"one white cell) with hand-drawn nucleus masks; {d['held_out']} fields held out (fixed seed-0 split, "
        "bench/segmenter.py `split`). Red cells are background in every mask, so the model learns not to "
        "count them as nucleated.",
        f"- {LICENCE}", "- The weights are released with the project's code.", "",
        "## Training",
        f"- `train_segmenter` with SegTrainConfig(epochs={out['config']['epochs']}, "
        f"steps_per_epoch={out['config']['steps_per_epoch']}, batch {out['config']['batch_size']}, "
        f"crop {out['config']['crop']} px at a {out['config']['diameter']:.0f} px nucleus scale), BCE + Dice, "
        "AdamW one-cycle; strong augmentation: HED stain jitter with random stain vectors, white balance, gamma, "
        "contrast, desaturation, blur, noise, x1.5 scale jitter, flips and rotations (mdsdys/augment.py).",
        f"- Training time: {out['train_seconds']:.0f} s wall clock, {out['train_cpu_seconds']:.0f} CPU-seconds "
        f"(`nice -n 10`, {m['cores']} cores, {m['cpu']}, torch {m['torch']}, load average "
        f"{', '.join(f'{x:.1f}' for x in out['load_average'])} at the end).",
        f"- Best validation epoch {out['train_metrics']['best_epoch']} of {out['train_metrics']['epochs_run']}, "
        f"validation Dice {out['train_metrics']['val_dice']:.3f} ({out['train_metrics']['split']}).", "",
        f"## Held-out BCCD fields (n = {d['held_out']})", *rows, "",
        "Pixel Dice over all held-out fields; objects match at IoU >= 0.5. Otsu is given the true nucleus "
        "diameter for its post-processing, which can only flatter it; the starter estimates each field's scale.",
        *shift_rows(out.get("shifts", {})),
        "", "## Limits",
        "- Trained on peripheral blood from one microscope and camera. Marrow smears are denser and their nuclei "
        "vary more; check the first slide's boxes on the Annotate page, correct a few fields and train the "
        "store's own segmenter (`mdsdys train segmenter`).",
        "- Megakaryocytes and clumped erythroid precursors never appear in BCCD.", "",
        "## Reproduce", "    nice -n 10 python bench/starter_segmenter.py --json test-output/starter.json", "",
    ])


def shift_rows(shifts: dict) -> list[str]:
    """The model card's shift table (bench/segmenter_shifts.py), empty when it was not run."""
    if not shifts:
        return []
    rows = ["", "## Shifted held-out fields (bench/segmenter_shifts.py)",
            "| shift | image px | true diam. px | est. diam. px | starter Dice | Otsu Dice (scale known) |",
            "|---|---|---|---|---|---|"]
    return rows + [f"| {name} | {r['image_px']} | {r['true_diameter']:.0f} | {r['estimated_diameter']:.0f} | "
                   f"{r['model_dice']:.3f} | {r['otsu_dice']:.3f} |" for name, r in shifts.items()]


def main() -> int:
    """Parse arguments, skip cleanly without the data, train and report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--out", default=str(STARTER_DIR), help="folder for segmenter.pt and MODEL_CARD.md")
    parser.add_argument("--quick", action="store_true", help="tiny run for development (not the shipped model)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not (DATA / "images").is_dir():
        print(f"skipped: BCCD nucleus data not found at {DATA} (see ../shared/data/README.md)")
        return 0
    out = run(args)
    print(model_card(out))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
