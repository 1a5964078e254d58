"""Which pages the sidebar lists for a user (issue 14 item 6): one table, page -> the action it needs.

The sidebar is a convenience, not the lock: every page still refuses on its own (`ui.require_login`
with the same action, or the Consensus page's own check) and every library write calls the policy.
A page a user may not use is registered *hidden* rather than left out, so its URL still answers: a
logged-out deep link shows the login form and, once logged in, the page it pointed at; a reader who
types /Admin is told why not instead of landing on Home with "page not found".
Streamlit-free: `ui.navigation` turns the table into `st.Page`s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from mdsdys.accounts import policy
from mdsdys.review import consensus

HOME_TITLE = "Home"


@dataclass(frozen=True)
class PageEntry:
    """One page of the app: its file (relative to app.py), the policy action it needs, its Home link."""

    path: str
    action: str
    icon: str
    blurb: str


# The action each page passes to ui.require_login (tests/test_navigation.py keeps the two in step).
PAGES: tuple[PageEntry, ...] = (
    PageEntry("pages/1_Import.py", "import", ":material/upload:",
              "add smear fields, labelled cells or masks"),
    PageEntry("pages/2_Annotate.py", "annotate", ":material/draw:",
              "draw nucleus masks to train the segmenter"),
    PageEntry("pages/3_Review.py", "review", ":material/visibility:",
              "label cells from the keyboard, blinded"),
    PageEntry("pages/4_Consensus.py", "settle", ":material/handshake:",
              "settle disagreements between readers"),
    PageEntry("pages/5_Train.py", "train", ":material/model_training:",
              "retrain the segmenter or classifier"),
    PageEntry("pages/6_Dashboard.py", "report_view", ":material/monitoring:",
              "differential, dysplasia %, blasts, M:E"),
    PageEntry("pages/7_Admin.py", "user_manage", ":material/admin_panel_settings:",
              "users, roles and label schemes"),
    PageEntry("pages/8_Readers.py", "readers_view", ":material/verified:",
              "each reader against gold cells"),
)


def title_of(entry: PageEntry) -> str:
    """The sidebar label Streamlit gives a page file: its name without the number, e.g. "Review"."""
    return entry.path.rsplit("/", 1)[-1].removesuffix(".py").split("_", 1)[-1].replace("_", " ")


def may_use(db: Database, user: Any, entry: PageEntry) -> bool:
    """Whether this user may use the page: the policy, plus the admin's "readers may settle" setting."""
    if entry.action == "settle":  # the one setting applied on top of the policy (see policy.ACTIONS)
        return consensus.may_settle(db, user)
    return policy.can(user, entry.action)


def usable_pages(db: Database, user: Any) -> list[PageEntry]:
    """The pages this user may use, in sidebar order; none for a visitor who is not logged in."""
    return [entry for entry in PAGES if user is not None and may_use(db, user, entry)]
