"""The `mdsdys` command: a thin layer over the library (sqlite-utils style)."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from mdsdys import admin, auth, demo, ingest, jobs
from mdsdys.backup import backup_store, restore_store
from mdsdys.config import REPO_ROOT, Settings, load_settings
from mdsdys.errors import MdsdysError
from mdsdys.schemes import load_scheme_file
from mdsdys.store import check_integrity, connect
from mdsdys.store.slides import ensure_default_scheme
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
    """import-patches / import-cells / import-masks DIR --slide NAME."""
    files = ingest.files_in_folder(Path(args.dir))
    bar = ProgressBar(f"Importing {args.dir}")
    kind = args.command.removeprefix("import-")
    with connect(settings.db_path) as db:
        report = ingest.run_import(db, kind, args.slide, files, scheme_name=getattr(args, "scheme", None),
                                   max_pixels=settings.max_image_pixels, progress=bar)
    for name, reason in report.skipped:
        print(f"error: {reason}", file=sys.stderr)
    print(report.summary())
    return 0 if report.ok else 1


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
    return _run_streamlit(args.port, os.environ.copy())


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
        jobs.enqueue(demo_settings, "demo_bootstrap", {}, None, start_worker=not args.no_serve)
        print("Training the demo's first segmenter and classifier in the background; see the Train page.")
    if args.no_serve:
        return 0
    return _run_streamlit(args.port, env)


def _run_streamlit(port: int, env: dict[str, str]) -> int:
    app = REPO_ROOT / "app.py"
    if not app.exists():
        raise MdsdysError(f"Cannot find {app}; install from a checkout with 'pip install -e .'.")
    print(f"Open http://localhost:{port} in your browser (Ctrl+C stops the app).")
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(port),
               "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    return subprocess.call(command, cwd=REPO_ROOT, env=env)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Run queued background jobs (the app also starts this by itself when a job is queued)."""
    ran = jobs.run_worker(settings, idle_exit_s=args.idle_exit, max_jobs=args.max_jobs)
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
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("serve", help="start the app on the configured store")
    p.add_argument("--port", type=int, default=8501)
    p.set_defaults(func=cmd_serve)

    for name, what in (("import-patches", "smear field images"),
                       ("import-cells", "single-cell images, one folder per class"),
                       ("import-masks", "images/ plus masks/ pairs")):
        p = sub.add_parser(name, help=f"import {what} from a folder into a slide")
        p.add_argument("dir")
        p.add_argument("--slide", required=True, help="slide (case) name; created if new")
        if name == "import-cells":
            p.add_argument("--scheme", help="label scheme; an unknown name is created from the folder names")
        p.set_defaults(func=cmd_import)

    p = sub.add_parser("status", help="print counts of what is stored")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("create-user", help="create an account (the first one should be an admin)")
    p.add_argument("username")
    p.add_argument("--role", choices=ROLES, default="reader")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=cmd_create_user)

    p = sub.add_parser("worker", help="run queued background jobs (training, detection, proposals)")
    p.add_argument("--idle-exit", type=float, default=jobs.IDLE_EXIT_S, help="seconds idle before exiting")
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
