"""Mistakes and stale links end in a message that says what to do, never in a traceback (issue 15, item 21)."""

import pytest
from conftest import open_page

from mdsdys.accounts import auth
from mdsdys.demo.study import build_demo
from mdsdys.errors import MdsdysError, PermissionDeniedError
from mdsdys.report import numbers as summary
from mdsdys.store.users import find_user


def test_recreating_a_disabled_users_name_says_to_re_enable_it(db):
    boss = auth.create_user(db, "boss", "a-long-password", "admin")
    ann = auth.create_user(db, "ann", "a-long-password", "reader", by=boss)
    auth.set_active(db, boss, ann.id, False)
    for spelling in ("ann", "ANN"):
        with pytest.raises(MdsdysError, match="disabled account; re-enable it"):
            auth.create_user(db, spelling, "another-password", "reader", by=boss)
    assert find_user(db, "ann") is None  # nothing was created and the old account is still disabled


def test_dashboard_without_a_user_asks_to_log_in(db):
    with pytest.raises(PermissionDeniedError, match="log in"):
        summary.dashboard(db, None)
    with pytest.raises(PermissionDeniedError, match="log in"):
        summary.cell_labels(db, None, 1)


@pytest.mark.slow
def test_review_link_to_a_missing_cell_shows_a_message(db, home):
    build_demo(db, seed=0, patches_per_slide=1)
    reader, _ = find_user(db, "reader1")
    at = open_page("pages/3_Review.py", reader.id, query={"cell": "999999"})
    assert not at.exception
    assert any("No cell with id 999999" in e.value for e in at.error)
    assert any("Cell " in str(m.value) for m in at.caption)  # the ordinary queue still shows
