"""The job queue: queue a job (audited, role-checked), start the worker process for it, cancel it.

Torch-free, so pages and importers can queue work without loading a model runtime; the worker
(`mdsdys.jobs.worker`) runs the jobs in its own process.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from mdsdys.accounts import policy
from mdsdys.config import Settings
from mdsdys.errors import MdsdysError
from mdsdys.store import connect, write_transaction
from mdsdys.store.audit import log_action
from mdsdys.store.jobs import get_job, insert_job, request_cancel
from mdsdys.store.users import User

IDLE_EXIT_S = 120.0  # a worker with nothing to do exits; ensure_worker starts a new one on demand
# Every kind of job the worker runs (mdsdys.jobs.handlers.HANDLERS has one handler for each).
JOB_KINDS = ("train_segmenter", "segment_slides", "train_classifier", "propose_slides", "demo_bootstrap")


def enqueue(settings: Settings, kind: str, params: dict[str, Any], user: User | None,
            start_worker: bool = True) -> int:
    """Queue a job, audit it, and make sure a worker is running to take it."""
    if kind not in JOB_KINDS:
        raise MdsdysError(f"Unknown job kind {kind!r}; known: {', '.join(sorted(JOB_KINDS))}.")
    if user is not None:  # None: the command line, run by whoever owns the store file
        policy.require(user, "job_queue")
    with connect(settings.db_path) as db, write_transaction(db):
        job_id = insert_job(db, kind, params, user.id if user else None)
        log_action(db, user, "job_queue", "job", job_id, after={"kind": kind, "params": params})
    if start_worker:
        ensure_worker(settings)
    return job_id


def cancel(db: Database, user: User | None, job_id: int) -> str:
    """Ask a job to stop, as someone who may cancel jobs; audited. Returns its new state."""
    policy.require(user, "job_cancel")
    job = get_job(db, job_id)
    with write_transaction(db):
        state = request_cancel(db, job_id)
        log_action(db, user, "job_cancel", "job", job_id, before={"state": job.state}, after={"state": state})
    return state


def lock_path(settings: Settings) -> Path:
    """The file whose lock the one worker of this store holds."""
    return settings.db_path.with_name(settings.db_path.name + ".worker.lock")


def worker_alive(settings: Settings) -> bool:
    """Whether a worker holds this store's lock right now."""
    path = lock_path(settings)
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


