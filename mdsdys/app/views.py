"""What pages list and show, read from the store for the logged-in user (role-checked where it matters).

Pages never reach `mdsdys.store` themselves (STYLE.md, convention 1; issue 16): each list a page
shows comes from here or from a domain package, so the checks sit in the library, not the page.
"""

from __future__ import annotations

from sqlite_utils import Database

from mdsdys.accounts import policy
from mdsdys.review import reads
from mdsdys.schemes import LabelScheme
from mdsdys.store.audit import audit_actions
from mdsdys.store.consensus import active_readers
from mdsdys.store.jobs import Job, list_jobs
from mdsdys.store.models import ModelRecord, list_models
from mdsdys.store.patches import list_patches
from mdsdys.store.reads import slides_with_cells
from mdsdys.store.review import gallery_rows
from mdsdys.store.slides import Slide, list_scheme_names, list_slides, load_scheme
from mdsdys.store.stats import own_read_count, slide_overview, store_counts
from mdsdys.store.users import ROLES, User, list_users

__all__ = ["ROLES"]


def home_counts(db: Database, user: User) -> dict[str, int]:
    """Slides, fields, masks, cells, reads, consensus decisions, models and jobs in the store.

    A reader sees their own reads instead of everyone's, which would show how far the other
    reader has got (issue 15 item 12).
    """
    counts = store_counts(db)
    if not policy.can(user, "progress_view"):
        counts.pop("reads")
        counts.pop("consensus")
        counts["your reads"] = own_read_count(db, user.id)
    return counts


def home_slides(db: Database, user: User) -> list[dict]:
    """One row per slide for the home page: a reader sees how many cells they have read, not everyone's count."""
    hidden = "my_reads" if policy.can(user, "progress_view") else "labelled_cells"
    return [{k: v for k, v in row.items() if k != hidden} for row in slide_overview(db, user.id)]


def slides(db: Database) -> list[Slide]:
    """Every slide, by name."""
    return list_slides(db)


def scheme_names(db: Database) -> list[str]:
    """The names of the stored label schemes."""
    return list_scheme_names(db)


def scheme(db: Database, name: str) -> LabelScheme:
    """A stored label scheme by name."""
    return load_scheme(db, name)


def review_slides(db: Database) -> list[Slide]:
    """The slides that have cells to review."""
    with_cells = set(slides_with_cells(db))
    return [s for s in list_slides(db) if s.id in with_cells]


def my_progress(db: Database, user: User, slide_id: int) -> dict[str, int]:
    """A slide's cells and how many of them this reader has read (their own reads only); the queue's gold
    cells are counted from the start, so progress moves the same for every cell (issue 17)."""
    return reads.review_progress(db, user, slide_id)


def my_gallery(db: Database, user: User, slide_id: int, order: str = "class") -> list[dict]:
    """A slide's cells with the proposal, this viewer's OWN read (never another reader's) and sizes in µm.

    `order`: 'class', or 'cell_um' / 'nucleus_um' for the largest first (issue 18).
    """
    return gallery_rows(db, user.id, slide_id, order=order)


def slide_fields(db: Database, slide_id: int) -> list[dict]:
    """A slide's fields with their sizes and mask counts, in import order."""
    return list_patches(db, slide_id)


def readers(db: Database, user: User) -> list[tuple[int, str]]:
    """(id, name) of everyone with a current read: for those who settle disagreements."""
    policy.require(user, "review")
    return active_readers(db)


def jobs(db: Database, user: User, limit: int = 50) -> list[Job]:
    """Recent background jobs, newest first: for adjudicators and admins."""
    policy.require(user, "jobs_view")
    return list_jobs(db, limit=limit)


def model_versions(db: Database, user: User, kind: str) -> list[ModelRecord]:
    """Every version of one kind of model, newest first: for adjudicators and admins."""
    policy.require(user, "models_view")
    return list_models(db, kind)


def accounts(db: Database, user: User) -> list[dict]:
    """Accounts without their password hashes: for admins."""
    policy.require(user, "user_manage")
    return list_users(db)


def audit_action_names(db: Database, user: User) -> list[str]:
    """The distinct actions in the audit log: for admins."""
    policy.require(user, "audit_view")
    return audit_actions(db)
