"""Long work off the page: the job queue (`queue`), the worker process (`worker`) and its handlers."""
