"""The background worker: a separate OS process that runs queued jobs one at a time.

Pages only queue jobs (`mdsdys.jobs.queue`) and read their progress from the store (STYLE.md,
convention 7). A file lock makes sure at most one worker runs per store, which also means one
training job at a time; a worker killed mid-job releases the lock, and the next worker marks its
job failed before taking new work. The `mdsdys worker` process lowers its own priority
(`lower_priority`); `run_worker` called in-process leaves the caller's priority alone.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import traceback

from mdsdys.config import Settings
from mdsdys.errors import JobCancelled, MdsdysError
from mdsdys.jobs.context import JobContext
from mdsdys.jobs.handlers import HANDLERS
from mdsdys.jobs.queue import IDLE_EXIT_S, lock_path
from mdsdys.store import connect
from mdsdys.store.jobs import (
    Job,
    claim_next_job,
    fail_orphaned_jobs,
    finish_job,
    get_job,
    heartbeat,
)

log = logging.getLogger(__name__)
HEARTBEAT_S = 2.0          # how often a running job says it is alive
WORKER_NICENESS = 10       # keeps the review pages responsive while a model trains


def run_worker(settings: Settings, idle_exit_s: float = IDLE_EXIT_S, max_jobs: int | None = None) -> int:
    """Run queued jobs until idle for idle_exit_s (or max_jobs done); returns how many ran.

    Exits at once (returning 0) when another worker already holds the lock.
    """
    lock = open(lock_path(settings), "a+")  # noqa: SIM115 - held for the worker's lifetime
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        log.info("another worker is running; this one exits")
        return 0
    try:
        with connect(settings.db_path) as db:
            for job_id in fail_orphaned_jobs(db, os.getpid()):
                log.warning("job %s lost its worker and was marked failed", job_id)
        return _work_loop(settings, idle_exit_s, max_jobs)
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def lower_priority() -> None:
    """Lower this process's scheduling priority, so review pages stay responsive while a model trains."""
    try:
        os.nice(WORKER_NICENESS)
    except OSError as exc:
        log.warning("could not lower the worker's priority: %s", exc)


def _work_loop(settings: Settings, idle_exit_s: float, max_jobs: int | None) -> int:
    ran, idle_since = 0, time.monotonic()
    while max_jobs is None or ran < max_jobs:
        with connect(settings.db_path) as db:
            job = claim_next_job(db, os.getpid())
        if job is None:
            if time.monotonic() - idle_since > idle_exit_s:
                break
            time.sleep(0.5)
            continue
        run_job(settings, job)
        ran, idle_since = ran + 1, time.monotonic()
    return ran


def run_job(settings: Settings, job: Job) -> str:
    """Run one claimed job in this process with a heartbeat; returns its final state."""
    context = JobContext(job, settings)
    stop_beating = threading.Event()
    beater = threading.Thread(target=_beat, args=(settings, job.id, context, stop_beating), daemon=True)
    beater.start()
    state, error = "done", None
    try:
        result = HANDLERS[job.kind](context)
        context.progress["result"] = result
    except JobCancelled:
        state, error = "cancelled", "Cancelled by a user; nothing from this run was kept."
    except MdsdysError as exc:
        state, error = "failed", str(exc)
    except Exception as exc:  # a worker must record any crash on the job rather than die silently
        log.error("job %s crashed:\n%s", job.id, traceback.format_exc())
        state, error = "failed", f"{type(exc).__name__}: {exc}"
    finally:
        stop_beating.set()
        beater.join()
    with connect(settings.db_path) as db:
        finish_job(db, job.id, state, error, context.progress)
    return state


def _beat(settings: Settings, job_id: int, context: JobContext, stop: threading.Event) -> None:
    """Heartbeat thread: keeps heartbeat_at fresh and notices cancel requests between reports."""
    while not stop.wait(HEARTBEAT_S):
        with connect(settings.db_path) as db:
            heartbeat(db, job_id)
            if get_job(db, job_id).cancel_requested:
                context._cancelled = True
