"""The `mdsdys` command: a thin layer over the library (sqlite-utils style).

Commands that need torch import their modules inside the command, so `mdsdys status` starts fast.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mdsdys.accounts import admin, auth, setup
from mdsdys.config import REPO_ROOT, Settings, load_settings
from mdsdys.demo import study as demo
from mdsdys.errors import MdsdysError
from mdsdys.ingest import importer
from mdsdys.jobs import queue
from mdsdys.review import counting
from mdsdys.schemes import DEFAULT_SCHEME_NAME, load_scheme_file
from mdsdys.store import check_integrity, connect
from mdsdys.store.backup import backup_store, restore_store
from mdsdys.store.models import active_model
from mdsdys.store.slides import ensure_default_scheme, find_slide
from mdsdys.store.stats import store_counts
from mdsdys.store.users import ROLES, system_user

log = logging.getLogger("mdsdys")


class ProgressBar:
    """A one-line text progress bar on stderr, for long imports."""

    def __init__(self, label: str, width: int = 30) -> None:
        self.label, self.width, self._last_tenth = label, width, -1

    def __call__(self, done: int, total: int, name: str) -> None:
        if sys.stderr.isatty():
            filled = int(self.width * done / max(total, 1))
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total}")
            sys.stderr.write("\n" if done >= total else "")
        else:  # logs and CI: one line per tenth
            tenth = 10 * done // max(total, 1)
            if tenth != self._last_tenth:
                self._last_tenth = tenth
                sys.stderr.write(f"{self.label}: {done}/{total}\n")
        sys.stderr.flush()


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    """import-patches / import-cells / import-masks DIR|ZIP --slide NAME."""
    files = importer.files_from_path(Path(args.dir), settings)
    bar = ProgressBar(f"Importing {args.dir}")
    kind = args.command.removeprefix("import-")
    with connect(settings.db_path) as db:
        report = importer.run_import(db, kind, args.slide, files, scheme_name=getattr(args, "scheme", None),
                                   max_pixels=settings.max_image_pixels, progress=bar, settings=settings,
                                   start_worker=not args.no_worker)
    for name, reason in report.skipped:
        print(f"error: {reason}", file=sys.stderr)
    print(report.summary())
    if report.detection_job is not None:
        print(f"Detection and proposals queued as job {report.detection_job}; the background worker runs it "
              "and the Import page shows its progress.")
    elif report.detection_note and kind != "cells":
        print(report.detection_note)
    return 0 if report.ok else 1


def cmd_import_slide(args: argparse.Namespace, settings: Settings) -> int:
    """import-slide FILE --slide NAME: overview, reading zones, chosen fields, then detection queued."""
    from mdsdys.ingest import slide_import
    bar = ProgressBar(f"Importing {Path(args.file).name}")
    with connect(settings.db_path) as db:
        report, plan = slide_import.import_slide(settings, db, Path(args.file), args.slide, n_fields=args.fields,
                                                 um_per_px=args.um_per_px, progress=bar,
                                                 start_worker=not args.no_worker)
    if args.json:
        print(json.dumps({"slide": report.slide, "added": report.added, "duplicates": report.duplicates,
                          "um_per_px": report.um_per_px, "scale_source": plan.scale_source, "job_id": report.job_id,
                          "fields": [list(c.box) for c in plan.chosen], "expected_cells": plan.expected_cells,
                          "seconds": report.seconds, "format": plan.info.format}))
        return 0
    if plan.scale_source == "assumed":
        print(f"warning: {plan.info.file_name} has no resolution tags; fields were sized as if "
              f"{plan.um_per_px:g} µm per px. Give --um-per-px, or set the scale on the Annotate page.", file=sys.stderr)
    print(f"{plan.info.file_name} ({plan.info.format}, {plan.info.width} x {plan.info.height} px): "
          f"{len(plan.chosen)} fields chosen in the monolayer, ~{plan.expected_cells:.0f} nucleated cells expected.")
    print(report.summary())
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Print the store's counts, as JSON with --json."""
    with connect(settings.db_path) as db:
        counts = store_counts(db)
    if args.json:
        print(json.dumps(counts))
    else:
        print(f"Store: {settings.db_path}")
        for key, value in counts.items():
            print(f"  {key:10} {value}")
    return 0


def cmd_count(args: argparse.Namespace, settings: Settings) -> int:
    """Print where a slide's count stands (issue 17): each lineage's 10% call and the blast band, from the human labels."""
    with connect(settings.db_path) as db:
        slide = find_slide(db, args.slide)
        if slide is None:
            raise MdsdysError(f"There is no slide {args.slide!r}; 'mdsdys status' counts the slides stored.")
        states = counting.slide_states(db, system_user(db), slide.id)
    rows = counting.state_rows(states)
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            print(f"  {row['count']:15} {row['cells']:6} cells  {row['95% sequence']:>12}  {row['state']}")
    return 0


def cmd_create_user(args: argparse.Namespace, settings: Settings) -> int:
    """Create an account; the password comes from a prompt or from stdin with --password-stdin."""
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("Password: ")
    with connect(settings.db_path) as db:
        user = auth.create_user(db, args.username, password, args.role, by=None)
    print(f"Created {user.role} {user.username}.")
    return 0


def cmd_load_scheme(args: argparse.Namespace, settings: Settings) -> int:
    """Store a label scheme from a JSON or TOML file."""
    scheme = load_scheme_file(Path(args.file))
    with connect(settings.db_path) as db:
        admin.load_scheme(db, system_user(db), scheme)
    print(f"Loaded scheme {scheme.name} with {len(scheme.classes)} classes: {', '.join(scheme.codes)}.")
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Start the web app (refusing a damaged store)."""
    check_integrity(settings.db_path)
    with connect(settings.db_path) as db:
        ensure_default_scheme(db)
        token = setup.issue_setup_token(db)
    if token:
        print(f"No accounts yet. Create the admin in the browser with this one-time setup token: {token}\n"
              "(or stop the app and run 'mdsdys create-user NAME --role admin').")
    return _run_streamlit(args.address, args.port, os.environ.copy())


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Build the synthetic demo study (first run only) and start the app in demo mode."""
    home = Path(args.home or os.environ.get("MDSDYS_DEMO_HOME", settings.home / "demo"))
    env = os.environ.copy() | {"MDSDYS_HOME": str(home), "MDSDYS_DEMO": "1"}
    env.pop("MDSDYS_DB", None)
    env.pop("MDSDYS_MODELS", None)
    demo_settings = Settings(home, home / "labels.db", home / "models", demo=True)
    check_integrity(demo_settings.db_path)
    with connect(demo_settings.db_path) as db:
        built = demo.build_demo(db, seed=args.seed, with_cells=False)
        bootstrap = demo.needs_bootstrap(db)
    print("Demo study ready (synthetic images)." if built else "Demo study already present.")
    if bootstrap:
        queue.enqueue(demo_settings, "demo_bootstrap", {}, None, start_worker=not args.no_serve)
        print("Training the demo's first segmenter and classifier in the background; see the Train page.")
    if args.no_serve:
        return 0
    return _run_streamlit(args.address, args.port, env)


def _run_streamlit(address: str, port: int, env: dict[str, str]) -> int:
    app = REPO_ROOT / "app.py"
    if not app.exists():
        raise MdsdysError(f"Cannot find {app}; install from a checkout with 'pip install -e .'.")
    shown = "localhost" if address in ("127.0.0.1", "localhost") else address
    print(f"Open http://{shown}:{port} in your browser (Ctrl+C stops the app).")
    if address not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: anyone who can reach this machine can open the login page", address)
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", address,
               "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    return subprocess.call(command, cwd=REPO_ROOT, env=env)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Run queued background jobs (the app also starts this by itself when a job is queued)."""
    from mdsdys.jobs import worker  # loads the handlers, and with them torch

    worker.lower_priority()
    ran = worker.run_worker(settings, idle_exit_s=args.idle_exit, max_jobs=args.max_jobs)
    print(f"Worker finished: {ran} job(s) run.")
    return 0


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    """Write a consistent copy of the label store, even while the app is running."""
    size = backup_store(settings.db_path, Path(args.file))
    print(f"Backed up {settings.db_path} to {args.file} ({size / 1e6:.1f} MB).")
    return 0


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    """Replace the label store with a backup (stop the app first)."""
    restore_store(Path(args.file), settings.db_path)
    print(f"Restored {settings.db_path} from {args.file}; the previous store is kept as *.before-restore.")
    return 0


def _epoch_bar(label: str, metric: str) -> Callable[[Any], None]:
    bar = ProgressBar(label)

    def on_epoch(report: Any) -> None:
        bar(report.epoch, report.epochs, "")
        value = getattr(report, metric, None)
        if value is not None and not sys.stderr.isatty():
            sys.stderr.write(f"  epoch {report.epoch}: {metric} {value:.3f}\n")
    return on_epoch


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    """Train the segmenter on every stored mask, or a scheme's classifier on its human labels.

    Under torchrun (`torchrun --nproc_per_node=N -m mdsdys train ...`) every process trains its
    share with DDP and rank 0 alone reports and registers the model (mdsdys.compute).
    """
    from mdsdys.classify.train import ClsTrainConfig
    from mdsdys.compute import process_group
    from mdsdys.jobs.handlers import apply_overrides
    from mdsdys.registry import retrain
    from mdsdys.segment import train as segtrain
    overrides = json.loads(args.settings) if args.settings else {}
    with process_group() as world:
        if args.what == "segmenter":
            config = apply_overrides(segtrain.SegTrainConfig(), overrides)
            result, record = retrain.train_segmenter_from_store(settings, config, None,
                                                       _epoch_bar("Training segmenter", "val_dice"))
            if world.is_main:
                print(f"Segmenter {record.version} ({record.status}): validation Dice "
                      f"{result.metrics['val_dice']:.3f}, split {result.split}{_processes(world)}.")
            return 0
        if args.arch:
            overrides["arch"] = args.arch
        config = apply_overrides(ClsTrainConfig(), overrides)
        result, record = retrain.train_classifier_from_store(settings, args.scheme, config, None,
                                                              _epoch_bar("Training classifier", "val_macro_f1"))
        if world.is_main:
            print(f"Classifier {record.version} ({record.status}) for scheme {args.scheme}: test macro-F1 "
                  f"{result.metrics.get('macro_f1', float('nan')):.3f} ({result.split.kind} split, "
                  f"{result.checkpoint['start']['how']}){_processes(world)}.")
    return 0


def _processes(world: Any) -> str:
    return f", trained by {world.size} processes" if world.distributed else ""


def _slide_id(db: Any, name: str) -> int:
    slide = find_slide(db, name)
    if slide is None:
        raise MdsdysError(f"No slide named {name!r}; 'mdsdys status' lists how many there are.")
    return slide.id


def cmd_segment(args: argparse.Namespace, settings: Settings) -> int:
    """Detect the cells of a slide with the store's segmenter or the starter, whichever suits it (read cells are kept)."""
    from mdsdys.registry.starter import segmenter_for_slide
    from mdsdys.segment import detect
    with connect(settings.db_path) as db:
        slide_id = _slide_id(db, args.slide)
        chosen = segmenter_for_slide(db, settings, slide_id)
        print(f"Using {chosen.record.version}: {chosen.reason}.")
        summary = detect.segment_slide(db, slide_id, chosen.record, ProgressBar(f"Segmenting {args.slide}"))
    print(f"Slide {args.slide}: {summary['cells']} nuclei found; {summary['added']} cells added, "
          f"{summary['removed']} unread cells replaced; nucleus diameter {summary['diameter']:.1f} px"
          + (" (estimated)" if summary["diameter_estimated"] else "") + ".")
    return 0


def cmd_propose(args: argparse.Namespace, settings: Settings) -> int:
    """Store the active classifier's proposals for every cell of a slide."""
    from mdsdys.classify.proposals import propose_labels
    bar = ProgressBar(f"Classifying {args.slide}")
    with connect(settings.db_path) as db:
        n = propose_labels(db, _slide_id(db, args.slide), progress=lambda done, total: bar(done, total, ""))
    print(f"Slide {args.slide}: proposals stored for {n} cells.")
    return 0


def cmd_eval_segmenter(args: argparse.Namespace, settings: Settings) -> int:
    """Evaluate the active segmenter on DIR/images + DIR/masks; write dice, iou and object_f1 as JSON."""
    from mdsdys.segment.evaluate import evaluate_segmenter, load_mask_pairs
    from mdsdys.segment.segmenter import load_segmenter
    with connect(settings.db_path) as db:
        record = active_model(db, "segmenter")
    if record is None:
        raise MdsdysError("No segmenter yet: run 'mdsdys train segmenter' first.")
    result = evaluate_segmenter(load_segmenter(record.path), load_mask_pairs(args.dir), args.diameter)
    result["model"] = record.version
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"Dice {result['dice']:.3f}, IoU {result['iou']:.3f}, object F1 {result['object_f1']:.3f} "
          f"on {result['n']} fields (nucleus diameter {result['diameter']:.1f} px).")
    return 0


def cmd_eval_classifier(args: argparse.Namespace, settings: Settings) -> int:
    """Evaluate the scheme's active classifier on DIR (one folder per class); JSON plus a markdown table."""
    from mdsdys.classify.classifier import load_classifier
    from mdsdys.classify.evaluate import evaluate_classifier, markdown_table
    with connect(settings.db_path) as db:
        record = active_model(db, "classifier", args.scheme)
    if record is None:
        raise MdsdysError(f"No classifier for scheme {args.scheme!r} yet: run 'mdsdys train classifier' first.")
    result = evaluate_classifier(load_classifier(record.path), Path(args.dir))
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(markdown_table(result))
    return 0


def _address_option(parser: argparse.ArgumentParser) -> None:
    # This machine only by default (issue 15, item 22): serving a lab network is a choice to make.
    parser.add_argument("--address", default="127.0.0.1",
                        help="interface to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for every one)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="mdsdys", description="Find dysplastic cells in bone-marrow smears.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="build the synthetic demo study and start the app on it")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--seed", type=int, default=0, help="generator seed for the synthetic study")
    p.add_argument("--home", help="folder for the demo's store and models (default: ./demo)")
    p.add_argument("--no-serve", action="store_true", help="only build the demo study")
    _address_option(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("serve", help="start the app on the configured store")
    p.add_argument("--port", type=int, default=8501)
    _address_option(p)
    p.set_defaults(func=cmd_serve)

    for name, what in (("import-patches", "smear field images"),
                       ("import-cells", "single-cell images, one folder per class"),
                       ("import-masks", "images/ plus masks/ pairs")):
        p = sub.add_parser(name, help=f"import {what} from a folder or a .zip into a slide")
        p.add_argument("dir", help="a folder, or a .zip of one (same limits as a browser upload)")
        p.add_argument("--slide", required=True, help="slide (case) name; created if new")
        p.add_argument("--no-worker", action="store_true",
                       help="queue detection without starting a background worker (run 'mdsdys worker' yourself)")
        if name == "import-cells":
            p.add_argument("--scheme", help="label scheme; an unknown name is created from the folder names")
        p.set_defaults(func=cmd_import)

    p = sub.add_parser("import-slide", help="import a whole-slide scan: choose fields in its monolayer, queue detection")
    p.add_argument("file", help="the scan: .svs, .ndpi, .mrxs, .scn, tiled or pyramidal .tif, ...")
    p.add_argument("--slide", required=True, help="slide (case) name; created if new")
    p.add_argument("--fields", type=int, help="take this many fields (default: enough for 500 nucleated cells)")
    p.add_argument("--um-per-px", type=float, help="the scan's µm per pixel, when its file does not say")
    p.add_argument("--no-worker", action="store_true", help="queue detection but do not start the worker")
    p.add_argument("--json", action="store_true", help="print what was done as JSON")
    p.set_defaults(func=cmd_import_slide)

    p = sub.add_parser("status", help="print counts of what is stored")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("count", help="where a slide's count stands: each lineage's 10% call and the blast band")
    p.add_argument("--slide", required=True, help="slide (case) name")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_count)

    p = sub.add_parser("create-user", help="create an account (the first one should be an admin)")
    p.add_argument("username")
    p.add_argument("--role", choices=ROLES, default="reader")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=cmd_create_user)

    p = sub.add_parser("train", help="train the segmenter or a classifier now, with a progress bar")
    p.add_argument("what", choices=["segmenter", "classifier"])
    p.add_argument("--scheme", default=DEFAULT_SCHEME_NAME, help="label scheme (classifier only)")
    p.add_argument("--arch", help="classifier architecture, e.g. resnet18 or inception_v3")
    p.add_argument("--settings", help='advanced settings as JSON, e.g. \'{"epochs": 5}\'')
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("segment", help="detect the cells of a slide with the active segmenter")
    p.add_argument("slide")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("propose", help="store the active classifier's proposals for a slide's cells")
    p.add_argument("slide")
    p.set_defaults(func=cmd_propose)

    p = sub.add_parser("eval-segmenter", help="score the active segmenter on DIR/images and DIR/masks")
    p.add_argument("dir")
    p.add_argument("--diameter", type=float, help="nucleus diameter in px (estimated when left out)")
    p.add_argument("--json", required=True, help="write the figures to this file")
    p.set_defaults(func=cmd_eval_segmenter)

    p = sub.add_parser("eval-classifier", help="score a scheme's active classifier on DIR/<class>/*")
    p.add_argument("dir")
    p.add_argument("--scheme", default=DEFAULT_SCHEME_NAME)
    p.add_argument("--json", required=True, help="write the figures to this file")
    p.set_defaults(func=cmd_eval_classifier)

    p = sub.add_parser("worker", help="run queued background jobs (training, detection, proposals)")
    p.add_argument("--idle-exit", type=float, default=queue.IDLE_EXIT_S, help="seconds idle before exiting")
    p.add_argument("--max-jobs", type=int, default=None, help="exit after this many jobs")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("backup", help="copy the label store to FILE with SQLite's online backup")
    p.add_argument("file")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("restore", help="replace the label store with the backup FILE (stop the app first)")
    p.add_argument("file")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("load-scheme", help="store a label scheme from a JSON or TOML file")
    p.add_argument("file")
    p.set_defaults(func=cmd_load_scheme)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mdsdys` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(levelname)s %(message)s")
    try:
        return args.func(args, load_settings())
    except MdsdysError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
