"""What the background jobs are doing to each slide, in words for the pages (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlite_utils import Database

from mdsdys.store.jobs import Job, list_jobs

# The newest jobs are enough: a slide's latest detection is what its status line reports.
_RECENT_JOBS = 50


@dataclass(frozen=True)
class SlideJob:
    """The latest detection job touching a slide."""

    job_id: int
    state: str  # queued, running, done, failed, cancelled
    text: str  # one line for people, e.g. "detecting cells: field 3 of 12"
    fraction: float | None  # 0..1 while running with a known total


def slide_jobs(db: Database) -> dict[int, SlideJob]:
    """Per slide id, the newest detection job that names it (a job over all slides names none)."""
    status: dict[int, SlideJob] = {}
    for job in list_jobs(db, limit=_RECENT_JOBS, kind="segment_slides"):
        for slide_id in job.params.get("slide_ids") or []:
            status.setdefault(int(slide_id), _describe(job))
    return status


def _describe(job: Job) -> SlideJob:
    """A job's state as one line."""
    p = job.progress
    if job.state == "queued":
        return SlideJob(job.id, job.state, "detection queued; the background worker starts it shortly", None)
    if job.state == "running":
        done, total = p.get("done"), p.get("total")
        stage = p.get("stage", "starting")
        if done is not None and total:
            return SlideJob(job.id, job.state, f"{stage}: {done} of {total}", min(1.0, done / total))
        return SlideJob(job.id, job.state, stage, None)
    if job.state == "done":
        result = p.get("result", {})
        text = f"cells detected ({result.get('added', 0)} new)"
        if job.params.get("propose"):
            proposed = result.get("proposed", 0)
            text += f", {proposed} proposed" if proposed else ", no classifier yet: no proposals"
        return SlideJob(job.id, job.state, text, 1.0)
    return SlideJob(job.id, job.state, f"detection {job.state}: {job.error or 'no reason recorded'}", None)


def status_line(status: dict[int, SlideJob], slide_id: int) -> str:
    """A suffix for a slide's name in a picker: the running or failed job's line, else nothing."""
    job = status.get(slide_id)
    return f" ({job.text})" if job is not None and job.state in ("queued", "running", "failed") else ""
