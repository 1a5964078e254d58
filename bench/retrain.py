"""Retraining benchmark (issue 6): click-to-promoted for the classifier on PBC, and review speed meanwhile.

    flock /tmp/mdsdys-bench.lock python bench/retrain.py --json test-output/bench-retrain.json

One run, on this machine, in a temporary store:
1. Seeds a review study (bench/seed.py: 30,000 cells on 58 slides with proposals, two readers) and
   imports ../shared/data/pbc as slide PBC with its own scheme `pbc` (3,200 labelled cells).
2. Trains a quick first PBC classifier in-process (3 epochs): last week's model, active.
3. Times a whole review action (AppTest: press a class key, the page reruns with the next cell)
   on an idle machine.
4. "Click": queues a classifier retrain with the default settings exactly as the Train page's button
   does (mdsdys.registry.retrain.queue_training, which starts the real background worker process), keeps
   timing review actions while the job runs, then promotes the new version through the gate as the
   Models view does (mdsdys.registry.promotion.promote) and waits for the re-proposal of unread PBC cells.

Prints click-to-promoted (and its parts) and the review-action p95 while training against idle
(goal: less than 2x slower).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench"), str(ROOT), str(ROOT / "tests")]

from classifier import import_pbc  # noqa: E402
from dashboard import machine  # noqa: E402
from scale import _summary, time_apptest_review  # noqa: E402
from seed import seed_paper_scale, user_id  # noqa: E402

from mdsdys.registry import promotion  # noqa: E402
from mdsdys.accounts import auth
from mdsdys.classify.train import ClsTrainConfig  # noqa: E402
from mdsdys.config import load_settings  # noqa: E402
from mdsdys.registry.retrain import queue_training, train_classifier_from_store  # noqa: E402
from mdsdys.store import connect  # noqa: E402
from mdsdys.store.jobs import get_job  # noqa: E402
from mdsdys.store.models import active_model  # noqa: E402
from mdsdys.store.users import get_user  # noqa: E402

REVIEW_CELLS = 30_000
IDLE_ACTIONS = 60


def _job(db_path: Path, job_id: int):
    with connect(db_path) as db:
        return get_job(db, job_id)


def _wait_done(db_path: Path, job_id: int, poll_s: float = 0.5) -> float:
    """Wait for a job to end; returns when it ended (monotonic). Raises if it failed."""
    while True:
        job = _job(db_path, job_id)
        if job.state in ("done", "failed", "cancelled"):
            if job.state != "done":
                raise RuntimeError(f"job {job_id} {job.state}: {job.error}")
            return time.monotonic()
        time.sleep(poll_s)


def fresh_reader(db_path: Path, name: str) -> int:
    """A new reader account, so its queue on the first slide is full (reads are per reader)."""
    with connect(db_path) as db:
        return auth.create_user(db, name, "bench-password", "reader").id


def review_while_running(db_path: Path, job_id: int) -> list[float]:
    """Review actions, 20 at a time by a fresh reader each, while the job runs; the seconds of each."""
    times: list[float] = []
    batch = 0
    while _job(db_path, job_id).state in ("queued", "running"):
        batch += 1
        seconds = time_apptest_review(db_path, fresh_reader(db_path, f"busy-{batch}"), n=20)
        if _job(db_path, job_id).state == "running":  # only actions that overlapped training count
            times.extend(seconds)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "pbc")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        os.environ["MDSDYS_HOME"] = str(home)
        settings = load_settings()
        seed_paper_scale(settings.db_path, cells=REVIEW_CELLS)
        with connect(settings.db_path) as db:
            _, cells, _ = import_pbc(db, args.data, None)
            judge = get_user(db, user_id(settings.db_path, "judge"))
        figures = {"machine": machine(), "data": {"pbc_cells": len(cells), "review_cells": REVIEW_CELLS}}

        _, first = train_classifier_from_store(settings, "pbc", ClsTrainConfig(epochs=3), judge)
        idle = time_apptest_review(settings.db_path, fresh_reader(settings.db_path, "idle"), n=IDLE_ACTIONS)

        clicked = time.monotonic()
        job_id = queue_training(settings, judge, "classifier", {"scheme": "pbc"})
        during = review_while_running(settings.db_path, job_id)
        trained = _wait_done(settings.db_path, job_id)
        job = _job(settings.db_path, job_id)
        with connect(settings.db_path) as db:
            gate = promotion.promote(db, settings, judge, job.progress["result"]["model_id"])
            promoted = time.monotonic()
            assert active_model(db, "classifier", "pbc").id == job.progress["result"]["model_id"]
            reproposal = db.execute("SELECT MAX(id) FROM jobs").fetchone()[0]
        reproposed = _wait_done(settings.db_path, reproposal)

        figures |= {
            "first_model": first.version,
            "click_to_promoted_s": promoted - clicked,
            "click_to_trained_s": trained - clicked,
            "promotion_gate": gate.reason,
            "promoted_to_reproposed_s": reproposed - promoted,
            "new_macro_f1": job.progress["result"].get("macro_f1"),
            "review_idle": _summary(idle),
            "review_during_training": _summary(during),
        }
        figures["review_p95_ratio"] = (figures["review_during_training"]["p95_ms"]
                                       / figures["review_idle"]["p95_ms"])
    _print(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


def _print(f: dict) -> None:
    print(f"Machine: {f['machine']}\nData: {f['data']}\n")
    print("| measure | figure | goal |\n|---|---|---|")
    print(f"| click to promoted (classifier, PBC, default settings) | {f['click_to_promoted_s'] / 60:.1f} min "
          f"(trained {f['click_to_trained_s'] / 60:.1f} min; test macro-F1 {f['new_macro_f1']:.3f}) | |")
    print(f"| promoted to unread cells re-proposed | {f['promoted_to_reproposed_s']:.1f} s | |")
    idle, busy = f["review_idle"], f["review_during_training"]
    print(f"| review action p95, idle | {idle['p95_ms']:.0f} ms (p50 {idle['p50_ms']:.0f}, n {idle['n']}) | |")
    print(f"| review action p95, while training | {busy['p95_ms']:.0f} ms (p50 {busy['p50_ms']:.0f}, "
          f"n {busy['n']}) | |")
    print(f"| ratio | {f['review_p95_ratio']:.2f}x | < 2x |")
    print(f"Gate: {f['promotion_gate']}")


if __name__ == "__main__":
    main()
