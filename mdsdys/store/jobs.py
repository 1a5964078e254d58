"""Background jobs: a queue in the store, so a job survives page reloads and server restarts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from mdsdys.errors import NotFoundError
from mdsdys.store.db import utcnow, write_transaction

ACTIVE_STATES = ("queued", "running")


@dataclass(frozen=True)
class Job:
    """One queued, running or finished job."""

    id: int
    kind: str
    params: dict[str, Any]
    state: str
    progress: dict[str, Any]
    error: str | None
    cancel_requested: bool
    worker_pid: int | None
    heartbeat_at: str | None
    created_by: int | None
    created_at: str
    started_at: str | None
    finished_at: str | None


def _job(row: dict) -> Job:
    return Job(row["id"], row["kind"], json.loads(row["params"]), row["state"], json.loads(row["progress"]),
               row["error"], bool(row["cancel_requested"]), row["worker_pid"], row["heartbeat_at"],
               row["created_by"], row["created_at"], row["started_at"], row["finished_at"])


def insert_job(db: Database, kind: str, params: dict[str, Any], created_by: int | None) -> int:
    """Queue a job; returns its id."""
    return db.execute(
        "INSERT INTO jobs (kind, params, created_by, created_at) VALUES (?, ?, ?, ?)",
        [kind, json.dumps(params), created_by, utcnow()],
    ).lastrowid


def get_job(db: Database, job_id: int) -> Job:
    """One job; raises NotFoundError."""
    rows = list(db.query("SELECT * FROM jobs WHERE id = ?", [job_id]))
    if not rows:
        raise NotFoundError(f"No job with id {job_id}.")
    return _job(rows[0])


def list_jobs(db: Database, limit: int = 50, kind: str | None = None) -> list[Job]:
    """Recent jobs, newest first."""
    rows = db.query("SELECT * FROM jobs WHERE (? IS NULL OR kind = ?) ORDER BY id DESC LIMIT ?", [kind, kind, limit])
    return [_job(r) for r in rows]


def claim_next_job(db: Database, worker_pid: int) -> Job | None:
    """Atomically move the oldest queued job to running for this worker."""
    with write_transaction(db):
        row = db.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1").fetchone()
        if row is None:
            return None
        now = utcnow()
        db.execute("UPDATE jobs SET state = 'running', worker_pid = ?, started_at = ?, heartbeat_at = ? WHERE id = ?",
                   [worker_pid, now, now, row[0]])
    return get_job(db, row[0])


def update_progress(db: Database, job_id: int, progress: dict[str, Any]) -> bool:
    """Store a running job's progress and heartbeat; returns True if cancel was requested."""
    db.execute("UPDATE jobs SET progress = ?, heartbeat_at = ? WHERE id = ?",
               [json.dumps(progress, default=float), utcnow(), job_id])
    return cancel_requested(db, job_id)


def heartbeat(db: Database, job_id: int) -> None:
    """Say the job's worker is alive."""
    db.execute("UPDATE jobs SET heartbeat_at = ? WHERE id = ?", [utcnow(), job_id])


def cancel_requested(db: Database, job_id: int) -> bool:
    """Whether someone asked to cancel this job."""
    row = db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", [job_id]).fetchone()
    return bool(row and row[0])


def finish_job(db: Database, job_id: int, state: str, error: str | None = None,
               progress: dict[str, Any] | None = None) -> None:
    """Mark a job done, failed or cancelled."""
    sets, params = ["state = ?", "finished_at = ?", "error = ?"], [state, utcnow(), error]
    if progress is not None:
        sets.append("progress = ?")
        params.append(json.dumps(progress, default=float))
    db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ?", [*params, job_id])


def request_cancel(db: Database, job_id: int) -> str:
    """Ask a job to stop: a queued one is cancelled at once, a running one at its next check."""
    with write_transaction(db):
        job = get_job(db, job_id)
        if job.state == "queued":
            finish_job(db, job_id, "cancelled", "Cancelled before it started.")
        elif job.state == "running":
            db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", [job_id])
    return get_job(db, job_id).state


def fail_orphaned_jobs(db: Database, live_pid: int) -> list[int]:
    """Mark running jobs whose worker is gone as failed; returns their ids.

    Called by a worker at start: one worker runs at a time, so any other 'running' job lost its worker.
    """
    with write_transaction(db):
        rows = db.execute("SELECT id, heartbeat_at FROM jobs WHERE state = 'running' AND "
                          "(worker_pid IS NULL OR worker_pid != ?)", [live_pid]).fetchall()
        for job_id, last_seen in rows:
            finish_job(db, job_id, "failed",
                       f"The worker running this job stopped (killed or crashed; last heartbeat {last_seen}). "
                       "Nothing it was writing was kept and the active model is unchanged. Start the job again.")
    return [r[0] for r in rows]


def has_active_job(db: Database, kind: str | None = None) -> bool:
    """Whether any job (of a kind) is queued or running."""
    row = db.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running') AND (? IS NULL OR kind = ?)",
                     [kind, kind]).fetchone()
    return bool(row[0])
