"""Cross-microscope benchmark (issue 13): does the default classifier hold up on a microscope it never saw?

    flock /tmp/mdsdys-bench.lock python bench/cross_microscope.py --json test-output/bench-cross.json

In one run, on 2 CPU cores:
1. In-domain PBC (../shared/data/pbc, CellaVision DM96, May-Grünwald-Giemsa). A fixed, stratified 80%
   of the files is imported into a temporary store as slide PBC with scheme `pbc` (as
   `mdsdys import-cells DIR --slide PBC --scheme pbc` does: each image cut around its nucleus), and
   the default classifier is trained from the store exactly as the worker retrains
   (registry.retrain.train_classifier_from_store with ClsTrainConfig()). The other 20% is scored by
   `evaluate_classifier`, the function behind `mdsdys eval-classifier DIR --scheme pbc`.
2. BCCD white cells (../shared/data/bccd_nuclei, another microscope, camera and stain), with no
   retraining: each field's white cell is cut around its masked nucleus by the one geometry rule and
   written as a single-cell image into DIR/<class>/ (fields that list two types are skipped); the same
   `evaluate_classifier` scores the folder. Accuracy, macro-F1 over the classes present, confusion.
   The same cells are scored again as wider single-cell images (1.5 nucleus diameters past the
   nucleus, red cells around it), whose nucleus eval-classifier finds itself, as in a lab's images.
3. The k-curve: k = 10, 25, 50, 100 labelled BCCD cells (a fixed, nested, stratified pool) are
   imported as slide BCCD and the classifier is retrained from the store by the worker's function,
   which fine-tunes the active (base) model (classify.train.FineTuneConfig); each model is scored on
   the BCCD cells outside the pool (k = 0 is the base model on those cells). At k = 50 it is also
   fine-tuned without slide balancing and trained from scratch, to show what each buys. Each k's model
   also meets the promotion gate against the base model (registry.promotion), as a lab's would.
4. The out-of-distribution score's AUROC between held-out PBC cells and BCCD cells, and whether
   each folder, taken as one slide, is flagged.
5. The segmenter on stain- and scale-shifted fields beside Otsu (bench/segmenter_shifts.py, when present).

--quick trains 3 epochs on 40 cells per class, to check the script; its figures are not the benchmark.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/classifier.py

import argparse
import csv
import dataclasses
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from classifier import heldout_split, machine  # noqa: E402  (bench/classifier.py)

from mdsdys import stats  # noqa: E402
from mdsdys.classify.classifier import load_classifier, slide_colour  # noqa: E402
from mdsdys.classify.evaluate import evaluate_classifier, folder_squares  # noqa: E402
from mdsdys.classify.ood import score_cells, slide_ood  # noqa: E402
from mdsdys.classify.train import ClsTrainConfig  # noqa: E402
from mdsdys.config import Settings  # noqa: E402
from mdsdys.imaging.geometry import mask_cell_box  # noqa: E402
from mdsdys.ingest.importer import files_in_folder, import_cells  # noqa: E402
from mdsdys.registry.promotion import promotion_gate  # noqa: E402
from mdsdys.registry.retrain import train_classifier_from_store  # noqa: E402
from mdsdys.store import connect  # noqa: E402

DATA = REPO.parent / "shared" / "data"
PBC, BCCD = DATA / "pbc", DATA / "bccd_nuclei"
K_VALUES = (10, 25, 50, 100)
# At these k the curve is also retrained without slide balancing and from scratch: the comparisons
# that chose the defaults.
K_COMPARED = (50,)
# The BCCD cells are also scored as wider single-cell images, the nucleus found by eval-classifier:
# 1.5 nucleus diameters past the nucleus on each side is a field 3.5-4 diameters wide.
FIELD_MARGIN = 1.5
GOALS = {"pbc_macro_f1": 0.95, "pbc_min_auc": 0.985, "bccd_accuracy": 0.85, "bccd_accuracy_k50": 0.92,
         "ood_auroc": 0.95, "train_s": 600.0}
log = logging.getLogger("bench.cross_microscope")


def bccd_cells(out: Path, fields: Path | None = None) -> list[tuple[Path, str]]:
    """Each BCCD field's white cell, cut around its masked nucleus, as DIR/<class>/<field>.png; (path, class).

    With `fields`, each cell is also written there as a wider single-cell image (FIELD_MARGIN nucleus
    diameters past its nucleus on each side, red cells and neighbours in view), for eval-classifier to
    find its nucleus in, as it does in a lab's own single-cell images.
    """
    cells = []
    with open(BCCD / "labels.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            kind = row["wbc_type"].strip().lower()
            stem = Path(row["image"]).stem
            image, mask = BCCD / "images" / f"{stem}.jpg", BCCD / "masks" / f"{stem}.png"
            if "," in kind or not kind or not image.exists() or not mask.exists():
                continue  # two types in one field, or no mask: no single label for the cell
            nucleus = np.asarray(Image.open(mask))
            box = mask_cell_box(nucleus)
            if box is None:
                continue
            rgb = Image.open(image).convert("RGB")
            x, y, w, h = box
            path = out / kind / f"{stem}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            rgb.crop((x, y, x + w, y + h)).save(path)
            cells.append((path, kind))
            if fields is not None:
                x, y, w, h = mask_cell_box(nucleus, margin=FIELD_MARGIN)
                (fields / kind).mkdir(parents=True, exist_ok=True)
                rgb.crop((x, y, x + w, y + h)).save(fields / kind / f"{stem}.png")
    return cells


def first_per_class(files: list, n: int) -> list:
    """The first n files of each class folder (--quick)."""
    counts: dict[str, int] = {}
    kept = []
    for file in files:
        kind = file.name.split("/")[0]
        counts[kind] = counts.get(kind, 0) + 1
        if counts[kind] <= n:
            kept.append(file)
    return kept


def label_pool(cells: list[tuple[Path, str]], size: int, seed: int = 13) -> list[int]:
    """A fixed order of `size` cell indices, stratified by class, whose every prefix is roughly stratified."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = {}
    for i, (_, kind) in enumerate(cells):
        by_class.setdefault(kind, []).append(i)
    queues = {kind: list(rng.permutation(idx)) for kind, idx in sorted(by_class.items())}
    share = {kind: len(idx) / len(cells) for kind, idx in by_class.items()}
    order, taken = [], {kind: 0 for kind in queues}
    while len(order) < size and any(queues.values()):
        kind = min((k for k in queues if queues[k]), key=lambda k: taken[k] / max(share[k], 1e-9))
        order.append(int(queues[kind].pop(0)))
        taken[kind] += 1
    return order


def link_folder(out: Path, items: list[tuple[Path, str]]) -> Path:
    """DIR/<class>/<name> links to the given images: a folder for evaluate_classifier."""
    for path, kind in items:
        target = out / kind / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(path)
    return out


def scored(classifier, folder: Path) -> dict:
    """evaluate_classifier's figures, with macro-F1 over the classes present in the folder."""
    report = evaluate_classifier(classifier, folder)
    present = [code for code, row in report["per_class"].items() if row.get("support")]
    f1 = [report["per_class"][code]["f1"] for code in present]
    codes = list(report["per_class"])
    confusion = {codes[i]: {codes[j]: n for j, n in enumerate(row) if n}
                 for i, row in enumerate(report["confusion"]) if codes[i] in present}
    aucs = [row["auc"] for row in report["per_class"].values() if row.get("auc") is not None]
    return {"n": report["n"], "accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
            "macro_f1_present": float(np.mean(f1)) if f1 else None, "min_auc": min(aucs) if aucs else None,
            "confusion": confusion}


def train_timed(settings: Settings, config: ClsTrainConfig):
    """Retrain from the store as the worker does; (result, record, seconds)."""
    start = time.perf_counter()
    result, record = train_classifier_from_store(settings, "pbc", config, min_train_per_class=1)
    return result, record, time.perf_counter() - start


def ood_auroc(classifier, pbc_folder: Path, bccd_folder: Path) -> dict | None:
    """AUROC of the per-cell OOD score, held-out PBC (negative) against BCCD (positive), and each folder's verdict."""
    scores, flagged = {}, {}
    for name, folder in (("pbc", pbc_folder), ("bccd", bccd_folder)):
        squares, _, _ = folder_squares(classifier, folder)
        colour = slide_colour(classifier, squares)  # each folder is one slide, as eval-classifier takes it
        scores[name] = score_cells(classifier, squares, colour=colour)
        flagged[name] = slide_ood(scores[name], classifier.ood).flagged
    y = np.r_[np.zeros(len(scores["pbc"])), np.ones(len(scores["bccd"]))]
    s = np.r_[scores["pbc"], scores["bccd"]]
    return {"auroc": stats.roc_auc(y.astype(bool), s), "pbc_median": float(np.median(scores["pbc"])),
            "bccd_median": float(np.median(scores["bccd"])), "threshold": classifier.ood["threshold"],
            "pbc_flagged": flagged["pbc"], "bccd_flagged": flagged["bccd"]}


def segmenter_part(quick: bool) -> dict | None:
    """bench/segmenter_shifts.py's table, when that module is present."""
    if not (REPO / "bench" / "segmenter_shifts.py").exists():
        return None
    import segmenter_shifts
    from segmenter import split  # bench/segmenter.py: the held-out fields of the starter's model card

    from mdsdys.segment.evaluate import load_mask_pairs
    from mdsdys.segment.segmenter import load_segmenter
    from mdsdys.segment.starter import STARTER_DIR
    _, test = split(load_mask_pairs(BCCD))
    return segmenter_shifts.run(load_segmenter(STARTER_DIR / "segmenter.pt"), test, limit=5 if quick else None)


def run(args: argparse.Namespace) -> dict:
    config = ClsTrainConfig()
    if args.quick:
        config = dataclasses.replace(config, epochs=3, patience=3)
    out: dict = {"machine": machine(), "config": config.to_dict(), "data": {"pbc": str(PBC), "bccd": str(BCCD)}}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        settings = Settings(home, home / "labels.db", home / "models")
        files = files_in_folder(PBC)
        names = [f.name for f in files]
        held = heldout_split(names, [n.split("/")[0] for n in names])
        train_files = [f for f in files if f.name not in held]
        if args.quick:
            train_files = first_per_class(train_files, 40)
        with connect(settings.db_path) as db:
            import_cells(db, "PBC", train_files, scheme_name="pbc")
        pbc_held = link_folder(home / "pbc-held", [(PBC / n, n.split("/")[0]) for n in sorted(held)])
        cells = bccd_cells(home / "bccd-all", home / "bccd-fields")
        pool = label_pool(cells, max(K_VALUES))
        rest = [cells[i] for i in range(len(cells)) if i not in set(pool)]
        bccd_all, bccd_rest = home / "bccd-all", link_folder(home / "bccd-rest", rest)
        out["data"] |= {"pbc_train": len(train_files), "pbc_held_out": len(held), "bccd_cells": len(cells),
                        "bccd_pool": len(pool), "bccd_scored_in_curve": len(rest)}

        result, record, seconds = train_timed(settings, config)
        base = load_classifier(record.path)
        out["train_s"] = seconds
        out["epochs"] = len(result.history)
        out["pbc"] = scored(base, pbc_held)
        out["bccd"] = scored(base, bccd_all)
        out["bccd_fields"] = scored(base, home / "bccd-fields")
        out["ood"] = ood_auroc(base, pbc_held, bccd_all)
        curve = [{"k": 0, "train_s": seconds, **scored(base, bccd_rest)}]
        imported = 0
        for k in K_VALUES:
            new = [cells[i] for i in pool[imported:k]]
            staging = link_folder(home / f"bccd-label-{k}", new)
            with connect(settings.db_path) as db:
                import_cells(db, "BCCD", files_in_folder(staging), scheme_name="pbc")
            imported = k
            _, record_k, seconds_k = train_timed(settings, config)
            curve.append({"k": k, "train_s": seconds_k, **scored(load_classifier(record_k.path), bccd_rest)})
            if k in K_COMPARED:
                unbalanced = dataclasses.replace(config.fine_tune, slide_balance_power=0.0)
                _, record_u, _ = train_timed(settings, dataclasses.replace(config, fine_tune=unbalanced))
                curve[-1]["unbalanced"] = scored(load_classifier(record_u.path), bccd_rest)
                scratch = dataclasses.replace(config.fine_tune, enabled=False)
                _, record_s, seconds_s = train_timed(settings, dataclasses.replace(config, fine_tune=scratch))
                curve[-1]["scratch"] = {"train_s": seconds_s, **scored(load_classifier(record_s.path), bccd_rest)}
            curve[-1]["start"] = record_k.metrics.get("start")
            with connect(settings.db_path) as db:
                gate = promotion_gate(db, record_k)
            curve[-1]["gate"] = {"allowed": gate.allowed, "candidate": gate.candidate, "active": gate.active,
                                 "reason": gate.reason}
            log.info("k=%d: accuracy %.3f", k, curve[-1]["accuracy"])
        out["k_curve"] = curve
    out["segmenter"] = segmenter_part(args.quick)
    out["machine"]["load_after"] = os.getloadavg()[0]
    return out


def _f(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def report(out: dict) -> str:
    m = out["machine"]
    lines = [f"machine: {m['cores']} cores, {m['cpu']}, torch {m['torch']}, load {m['load_before']:.1f} -> "
             f"{m.get('load_after', 0):.1f}",
             f"data: PBC {out['data']['pbc_train']} training / {out['data']['pbc_held_out']} held out; BCCD "
             f"{out['data']['bccd_cells']} white cells ({out['data']['bccd_pool']} pool, "
             f"{out['data']['bccd_scored_in_curve']} scored in the curve)",
             f"default classifier trained in {out['train_s']:.0f} s ({out['epochs']} epochs)", "",
             "| cells | n | accuracy | macro-F1 (present classes) | lowest AUC | goal |", "|---|---|---|---|---|---|",
             f"| PBC held out | {out['pbc']['n']} | {_f(out['pbc']['accuracy'])} | {_f(out['pbc']['macro_f1'])} | "
             f"{_f(out['pbc']['min_auc'])} | macro-F1 >= {GOALS['pbc_macro_f1']}, AUC >= {GOALS['pbc_min_auc']} |",
             f"| BCCD, no retraining | {out['bccd']['n']} | {_f(out['bccd']['accuracy'])} | "
             f"{_f(out['bccd']['macro_f1_present'])} | - | accuracy >= {GOALS['bccd_accuracy']} |",
             f"| BCCD as fields around one cell (nucleus found by eval-classifier), no retraining | "
             f"{out['bccd_fields']['n']} | {_f(out['bccd_fields']['accuracy'])} | "
             f"{_f(out['bccd_fields']['macro_f1_present'])} | - | |", "",
             "BCCD confusion, no retraining (true -> predicted: n):"]
    for true, row in out["bccd"]["confusion"].items():
        lines.append(f"  {true}: " + ", ".join(f"{p} {n}" for p, n in sorted(row.items(), key=lambda t: -t[1])))
    tune = out["config"]["fine_tune"]
    lines += ["", f"k-curve (BCCD cells outside the pool; fine-tuned from the base model, at most {tune['epochs']} epochs, "
                  f"slides balanced with power {tune['slide_balance_power']}; at k in {K_COMPARED} also fine-tuned "
                  f"without slide balancing, and trained from scratch):",
              "| k | accuracy | macro-F1 (present) | train s | unbalanced accuracy | from scratch accuracy | "
              "from scratch s | passes the gate | goal |",
              "|---|---|---|---|---|---|---|---|---|"]
    for row in out["k_curve"]:
        plain, scratch = row.get("unbalanced") or {}, row.get("scratch") or {}
        goal = f"accuracy >= {GOALS['bccd_accuracy_k50']}" if row["k"] == 50 else ""
        scratch_s = f"{scratch['train_s']:.0f}" if scratch else "-"
        gate = row.get("gate")
        passes = "-" if gate is None else ("yes" if gate["allowed"] else "no")
        lines.append(f"| {row['k']} | {_f(row['accuracy'])} | {_f(row['macro_f1_present'])} | {row['train_s']:.0f} | "
                     f"{_f(plain.get('accuracy'))} | {_f(scratch.get('accuracy'))} | {scratch_s} | {passes} | {goal} |")
    lines += [f"  gate at k = {row['k']}: {row['gate']['reason']}" for row in out["k_curve"] if row.get("gate")]
    ood = out.get("ood")
    lines += ["", f"OOD AUROC per cell, held-out PBC vs BCCD: {_f(ood['auroc'])} (goal >= {GOALS['ood_auroc']}); "
                  f"slide score (median) PBC {ood['pbc_median']:.2f}, BCCD {ood['bccd_median']:.2f}, threshold "
                  f"{ood['threshold']:.2f}: PBC flagged {ood['pbc_flagged']}, BCCD flagged {ood['bccd_flagged']}"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--quick", action="store_true", help="3 epochs on a subset: checks the script only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not PBC.is_dir() or not BCCD.is_dir():
        print(f"skipped: needs {PBC} and {BCCD} (../shared/data beside the checkout)")
        return 0
    out = run(args)
    print(report(out))
    if out.get("segmenter"):
        import segmenter_shifts
        print("\nStarter segmenter on shifted held-out BCCD fields, beside two-level Otsu:")
        segmenter_shifts.print_table(out["segmenter"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(stats.jsonable(out), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
