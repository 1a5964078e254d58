"""The background worker: a separate OS process that runs queued jobs one at a time.

Pages only queue jobs and read their progress from the store (STYLE.md, convention 7).
A file lock makes sure at most one worker runs per store, which also means one training
job at a time; a worker killed mid-job releases the lock, and the next worker marks its
job failed before taking new work.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdsdys.accounts import auth
from mdsdys.config import Settings
from mdsdys.errors import JobCancelled, MdsdysError
from mdsdys.store import connect, write_transaction
from mdsdys.store.audit import log_action
from mdsdys.store.jobs import (
    Job,
    claim_next_job,
    fail_orphaned_jobs,
    finish_job,
    get_job,
    heartbeat,
    insert_job,
    update_progress,
)
from mdsdys.store.users import User

log = logging.getLogger(__name__)
HEARTBEAT_S = 2.0          # how often a running job says it is alive
IDLE_EXIT_S = 120.0        # a worker with nothing to do exits; the app starts a new one on demand
WORKER_NICENESS = 10       # keeps the review pages responsive while a model trains


@dataclass
class JobContext:
    """What a job handler gets: its parameters, the settings, and progress/cancel hooks."""

    job: Job
    settings: Settings
    progress: dict[str, Any] = field(default_factory=dict)
    _cancelled: bool = False

    @property
    def params(self) -> dict[str, Any]:
        """The job's parameters as queued."""
        return self.job.params

    def report(self, **values: Any) -> None:
        """Merge values into the job's progress and store it (also a heartbeat)."""
        self.progress.update(values)
        with connect(self.settings.db_path) as db:
            self._cancelled = update_progress(db, self.job.id, self.progress) or self._cancelled

    def should_stop(self) -> bool:
        """True once someone asked to cancel; training loops call this between batches."""
        return self._cancelled

    def check_cancelled(self) -> None:
        """Raise JobCancelled when cancel was requested."""
        if self._cancelled:
            raise JobCancelled("Cancelled by a user.")


Handler = Callable[[JobContext], dict[str, Any]]
HANDLERS: dict[str, Handler] = {}


def job_handler(kind: str) -> Callable[[Handler], Handler]:
    """Register a function as the handler of a job kind."""
    def register(function: Handler) -> Handler:
        HANDLERS[kind] = function
        return function
    return register


# Who may queue each kind of job (issue 6: retraining is for admins and adjudicators).
JOB_ROLES = {"train_segmenter": ("adjudicator",), "train_classifier": ("adjudicator",)}


def enqueue(settings: Settings, kind: str, params: dict[str, Any], user: User | None,
            start_worker: bool = True) -> int:
    """Queue a job, audit it, and make sure a worker is running to take it."""
    _load_handlers()
    if kind not in HANDLERS:
        raise MdsdysError(f"Unknown job kind {kind!r}; known: {', '.join(sorted(HANDLERS))}.")
    if user is not None and not user.is_system:
        auth.require_role(user, *JOB_ROLES.get(kind, ("adjudicator",)))
    with connect(settings.db_path) as db, write_transaction(db):
        job_id = insert_job(db, kind, params, user.id if user else None)
        log_action(db, user, "job_queue", "job", job_id, after={"kind": kind, "params": params})
    if start_worker:
        ensure_worker(settings)
    return job_id


def _lock_path(settings: Settings) -> Path:
    return settings.db_path.with_name(settings.db_path.name + ".worker.lock")


def worker_alive(settings: Settings) -> bool:
    """Whether a worker holds this store's lock right now."""
    path = _lock_path(settings)
    if not path.exists():
        return False
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def ensure_worker(settings: Settings) -> int | None:
    """Start a detached worker process unless one is alive; returns its pid when started."""
    if worker_alive(settings):
        return None
    # PASSIVE: torch threads sleep instead of spinning, so training does not starve the app (issue 6).
    env = os.environ | {"OMP_WAIT_POLICY": "PASSIVE", "MDSDYS_DB": str(settings.db_path), "MDSDYS_MODELS": str(settings.models_dir),
                        "MDSDYS_HOME": str(settings.home)}
    log_file = open(settings.db_path.with_name("worker.log"), "ab")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen([sys.executable, "-m", "mdsdys.cli", "worker"], env=env, stdout=log_file,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    log_file.close()
    return process.pid


def run_worker(settings: Settings, idle_exit_s: float = IDLE_EXIT_S, max_jobs: int | None = None) -> int:
    """Run queued jobs until idle for idle_exit_s (or max_jobs done); returns how many ran.

    Exits at once (returning 0) when another worker already holds the lock.
    """
    _load_handlers()
    lock = open(_lock_path(settings), "a+")  # noqa: SIM115 - held for the worker's lifetime
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        log.info("another worker is running; this one exits")
        return 0
    try:
        _lower_priority()
        with connect(settings.db_path) as db:
            for job_id in fail_orphaned_jobs(db, os.getpid()):
                log.warning("job %s lost its worker and was marked failed", job_id)
        return _work_loop(settings, idle_exit_s, max_jobs)
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def _lower_priority() -> None:
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


def _load_handlers() -> None:
    """Import the modules that register the real job handlers."""
    import mdsdys.jobs.handlers  # noqa: F401  (registers handlers on import)
