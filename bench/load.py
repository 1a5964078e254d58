"""Load test (issue 8): N readers review by keyboard at once in real browsers while a classifier trains.

Starts `streamlit run` on a fresh demo store, queues a long classifier run in the worker, then for each
N in --sessions runs N Playwright sessions (fresh reader accounts, each its own Chromium) that press
--presses class keys on the Review page. For every press it records key press -> next cell shown, and
the cell and code it submitted; afterwards it checks that the store holds each submitted read exactly
once as that reader's current read, and that no page showed "database is locked".

    python bench/load.py --sessions 2,8 --presses 20 --json /tmp/load.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # for tests.browser; the tests are not an installed package

from tests.browser.concurrency import (
    cancel_job,
    create_readers,
    job_state,
    queue_long_training,
    run_sessions,
    summarise,
)
from tests.browser.server import build_demo_home, running_server

log = logging.getLogger("bench.load")
COLUMNS = ("sessions", "presses", "p50_s", "p95_s", "max_s", "lost", "duplicated", "unconfirmed", "repressed",
           "locked_errors", "exception_boxes", "training")


def machine() -> dict:
    """Where the figures come from (they depend on the CPU and what else runs on it)."""
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2)}


def markdown(rows: list[dict]) -> str:
    """The load table in markdown."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(row[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def run(sessions: list[int], presses: int, epochs: int) -> dict:
    """Run every round on one server and one training job; returns machine, data and rows."""
    # Kept after the run (its path is logged), so a surprising row can be checked in the store.
    home = build_demo_home(Path(tempfile.mkdtemp(prefix="mdsdys-load-")))
    log.info("store: %s", home / "labels.db")
    rows = []
    with running_server(home) as server:
        job = queue_long_training(home, epochs)
        try:
            for n in sessions:
                readers = create_readers(home, f"load{n}", n)
                started = time.monotonic()
                result = run_sessions(server.base_url, home, readers, presses)
                row = summarise(home, result) | {"training": job_state(home, job),
                                                 "wall_s": round(time.monotonic() - started, 1)}
                log.info("%d sessions: %s", n, row)
                rows.append(row)
        finally:
            cancelled = cancel_job(home, job)
            log.info("training job %d: %s", job, cancelled)
    data = ("synthetic demo study (mdsdys.demo.study.build_demo, seed 0), Review page in slide order, "
            f"random class keys 1-8, {presses} presses per session; classifier job of {epochs} epochs "
            "training in the worker throughout")
    return {"machine": machine(), "data": data, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="2,8", help="comma-separated session counts, run in turn")
    parser.add_argument("--presses", type=int, default=20, help="class key presses per session")
    parser.add_argument("--epochs", type=int, default=300, help="classifier epochs: long enough to outlast the run")
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = run([int(n) for n in args.sessions.split(",")], args.presses, args.epochs)
    print(f"Machine: {report['machine']}\nData: {report['data']}\n")
    print(markdown(report["rows"]))
    for row in report["rows"]:
        for error in row["session_errors"]:
            print(f"session error ({row['sessions']} sessions): {error}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    failed = any(r["lost"] or r["duplicated"] or r["unconfirmed"] or r["locked_errors"] or r["session_errors"]
                 for r in report["rows"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
