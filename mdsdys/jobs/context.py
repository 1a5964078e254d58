"""What a running job's handler gets: its parameters, the settings, and progress and cancel hooks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mdsdys.config import Settings
from mdsdys.errors import JobCancelled
from mdsdys.store import connect
from mdsdys.store.jobs import Job, update_progress


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
