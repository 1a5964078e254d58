"""The shipped starter segmenter on stain- and scale-shifted BCCD fields, beside Otsu (issue 13 item 6).

    nice -n 10 python bench/segmenter_shifts.py --json test-output/segmenter-shifts.json

Each shift stands for one kind of "other microscope": a yellow background (a rapid stain under a warm
lamp, with stray light), a blue cast, a faint and a dark stain, defocus, magnification x0.5 and x2,
and small single-cell images (a crop of 1.5-3 nucleus diameters around one nucleus, shrunk so the
nucleus is ~24 or ~40 px, on a yellow background, like a CellaVision-style cell library). Shifts are
applied to the held-out 20% of ../shared/data/bccd_nuclei (bench/segmenter.py `split`), with the
code of bench/segmenter.py's invented microscopes (skimage HED, PIL), not the training augmentation.

The starter estimates each set's nucleus diameter itself, as a user without a scale would run it;
Otsu's two-level threshold gets the true diameter for its post-processing, which can only flatter it.
`run(model, pairs)` is also called by bench/cross_microscope.py; it is seeded and takes ~2 CPU-minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/segmenter.py: busy-waiting on a shared machine

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.segmenter import DATA, Pair, _resize, _restain, _set_diameter, machine, split  # noqa: E402
from mdsdys.segment.evaluate import evaluate_otsu, evaluate_segmenter, load_mask_pairs  # noqa: E402
from mdsdys.segment.postprocess import mask_diameter  # noqa: E402
from mdsdys.segment.segmenter import Segmenter  # noqa: E402

SEED = 0
SHIFT_NAMES = ("unshifted", "yellow background", "blue cast", "faint stain", "dark stain", "blur",
               "magnification x0.5", "magnification x2", "single cells, nucleus ~24 px",
               "single cells, nucleus ~40 px")


def _cast(image: np.ndarray, lamp: tuple[float, float, float], veil: tuple[float, float, float],
          haze: float) -> np.ndarray:
    """A coloured lamp (per-channel gain) plus a coloured veil of stray light over haze of the field."""
    rgb = image / 255.0 * np.asarray(lamp)
    rgb = (1 - haze) * rgb + haze * np.asarray(veil)
    return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)


def yellow(image: np.ndarray) -> np.ndarray:
    """A yellow background: warm lamp with little blue, and a yellowish veil (rapid stains, old lamps)."""
    return _cast(image, (1.0, 0.92, 0.62), (1.0, 0.9, 0.45), 0.15)


def blue(image: np.ndarray) -> np.ndarray:
    """A cool, bluish cast: daylight filter over-corrected, bluish veil."""
    return _cast(image, (0.78, 0.9, 1.0), (0.65, 0.8, 1.0), 0.10)


def _stain(strength: float) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    """Haematoxylin and eosin both scaled by strength (faint < 1 < dark), camera unchanged."""
    return lambda image, rng: _restain(image, strength, strength, 0, (1, 1, 1), 1.0, 0, 0.005, rng)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Defocus: a Gaussian blur of sigma px."""
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(sigma)))


def single_cells(pairs: list[Pair], nucleus: float, rng: np.random.Generator) -> list[Pair]:
    """One small image per field: a square of 1.5-3 nucleus diameters around its largest nucleus,
    shrunk by one factor for the set (nucleus ~`nucleus` px at the set's median), yellow background."""
    factor = nucleus / _set_diameter(pairs)
    out = []
    for stem, image, mask in pairs:
        d = mask_diameter(mask)
        if not d:
            continue
        labels, _ = _components(mask)
        largest = np.bincount(labels.ravel())[1:].argmax() + 1
        ys, xs = np.nonzero(labels == largest)
        side = int(min(rng.uniform(1.5, 3.0) * d, *image.shape[:2]))
        cy, cx = int(ys.mean() + rng.uniform(-0.1, 0.1) * d), int(xs.mean() + rng.uniform(-0.1, 0.1) * d)
        top = int(np.clip(cy - side // 2, 0, image.shape[0] - side))
        left = int(np.clip(cx - side // 2, 0, image.shape[1] - side))
        crop, cmask = image[top:top + side, left:left + side], mask[top:top + side, left:left + side]
        small, smask = _resize(crop, cmask, factor)
        out.append((f"{stem}-cell", yellow(small), smask))
    return out


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected nucleus components of a 255 mask."""
    return ndimage.label(mask > 127)


def shifted_sets(pairs: list[Pair], seed: int = SEED) -> dict[str, list[Pair]]:
    """Every shift's version of the (held-out) fields, in SHIFT_NAMES order; deterministic for a seed."""
    def each(fn: Callable[[np.ndarray, np.random.Generator], np.ndarray], key: int) -> list[Pair]:
        rng = np.random.default_rng([seed, key])
        return [(stem, fn(image, rng), mask) for stem, image, mask in pairs]

    d = _set_diameter(pairs)
    return {
        "unshifted": list(pairs),
        "yellow background": each(lambda im, rng: yellow(im), 1),
        "blue cast": each(lambda im, rng: blue(im), 2),
        "faint stain": each(_stain(0.45), 3),
        "dark stain": each(_stain(1.8), 4),
        "blur": each(lambda im, rng: _blur(im, 0.05 * d), 5),
        "magnification x0.5": [(s, *_resize(im, m, 0.5)) for s, im, m in pairs],
        "magnification x2": [(s, *_resize(im, m, 2.0)) for s, im, m in pairs],
        "single cells, nucleus ~24 px": single_cells(pairs, 24.0, np.random.default_rng([seed, 8])),
        "single cells, nucleus ~40 px": single_cells(pairs, 40.0, np.random.default_rng([seed, 9])),
    }


def run(model: Segmenter, pairs: list[Pair], seed: int = SEED, limit: int | None = None) -> dict:
    """Starter (scale estimated) and Otsu (true scale) Dice on every shift of pairs (held-out fields).

    limit keeps the first N fields (a quicker run). Returns {"shifts": {name: {...}}, "beats_otsu_everywhere"}.
    """
    pairs = pairs[:limit] if limit else pairs
    out: dict[str, dict] = {}
    for name, fields in shifted_sets(pairs, seed).items():
        start = time.perf_counter()
        true_d = _set_diameter(fields)
        model_r = evaluate_segmenter(model, fields)
        otsu_r = evaluate_otsu(fields, true_d)
        out[name] = {"n": len(fields), "true_diameter": true_d, "image_px": _median_size(fields),
                     "estimated_diameter": model_r["diameter"], "model_dice": model_r["dice"],
                     "model_object_f1": model_r["object_f1"], "otsu_dice": otsu_r["dice"],
                     "otsu_object_f1": otsu_r["object_f1"], "seconds": time.perf_counter() - start}
    return {"shifts": out, "seed": seed,
            "beats_otsu_everywhere": all(r["model_dice"] > r["otsu_dice"] for r in out.values())}


def _median_size(fields: list[Pair]) -> str:
    """Median field size as WxH."""
    return f"{np.median([f[1].shape[1] for f in fields]):.0f}x{np.median([f[1].shape[0] for f in fields]):.0f}"


def print_table(result: dict) -> None:
    """The shift table in Markdown."""
    print("| shift | n | image px | true diam. px | est. diam. px | starter Dice | Otsu Dice | "
          "starter obj. F1 | Otsu obj. F1 | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in result["shifts"].items():
        win = "**" if r["model_dice"] > r["otsu_dice"] else ""
        print(f"| {name} | {r['n']} | {r['image_px']} | {r['true_diameter']:.0f} | {r['estimated_diameter']:.0f} | "
              f"{win}{r['model_dice']:.3f}{win} | {r['otsu_dice']:.3f} | {r['model_object_f1']:.3f} | "
              f"{r['otsu_object_f1']:.3f} | {r['seconds']:.1f} |")
    print(f"\nstarter beats Otsu (Dice) on every shift: {result['beats_otsu_everywhere']}")


def main() -> int:
    """Load the starter and the held-out fields, run every shift, print machine + data + table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--model", type=Path, help="a segmenter checkpoint (default: the shipped starter)")
    parser.add_argument("--limit", type=int, help="only the first N held-out fields (development)")
    args = parser.parse_args()
    if not (DATA / "images").is_dir():
        print(f"skipped: BCCD nucleus data not found at {DATA} (see ../shared/data/README.md)")
        return 0
    from mdsdys.segment.segmenter import load_segmenter
    from mdsdys.segment.starter import STARTER_DIR
    model = load_segmenter(args.model or STARTER_DIR / "segmenter.pt")
    _, test = split(load_mask_pairs(DATA))
    start = time.perf_counter()
    result = run(model, test, limit=args.limit)
    result |= {"command": " ".join(sys.argv), "machine": machine(), "seconds": time.perf_counter() - start,
               "load_average": os.getloadavg(),
               "data": {"source": "../shared/data/bccd_nuclei", "held_out": len(test), "used": args.limit or len(test),
                        "split": "bench/segmenter.py split (seed 0, 80/20)"},
               "model": str(args.model or STARTER_DIR / "segmenter.pt")}
    print(json.dumps({k: result[k] for k in ("machine", "data", "model")}, indent=1))
    print_table(result)
    print(f"\n{result['seconds']:.0f} s wall, load average {', '.join(f'{x:.1f}' for x in result['load_average'])}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
