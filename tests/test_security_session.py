"""Staying logged in through the app (issue 14 item 4): the cookie token, a reload, logout, tampering,
the idle timeout, and the review position kept across a reload. AppTest has no browser, so a
"reload" here is a new AppTest whose browser sends the cookie the first one was given."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from conftest import REPO_ROOT
from streamlit.testing.v1 import AppTest

from mdsdys.app import ui
from mdsdys.demo.study import build_demo
from mdsdys.store import connect, write_transaction
from mdsdys.store.audit import list_audit

TIMEOUT = 60


@pytest.fixture
def demo(home, monkeypatch):
    monkeypatch.setenv("MDSDYS_DEMO", "1")
    with connect(home / "labels.db") as db:
        build_demo(db, seed=0, patches_per_slide=1, training_cells_per_class=2)
    return home


@pytest.fixture
def browser(monkeypatch):
    """The cookie jar of one browser: what the app's script wrote, sent back on every new connection."""
    jar: dict[str, str] = {}
    monkeypatch.setattr(ui, "_cookie_token", lambda: jar.get(ui.COOKIE))
    return jar


def _open(page: str = "app.py") -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=TIMEOUT).run()
    if page != "app.py":
        at.switch_page(page).run()
    return at


def _store_cookies(at: AppTest, jar: dict[str, str]) -> None:
    """Do what the browser does with the app's cookie script."""
    for element in at.get("html"):
        found = re.search(rf"{ui.COOKIE}=([^;]*); path=/; max-age=(\d+)", element.proto.body)
        if found:
            token, age = found.groups()
            if int(age) > 0:
                jar[ui.COOKIE] = token
            else:
                jar.pop(ui.COOKIE, None)


def _log_in(jar, name="reader1", password="demo-reader-1") -> AppTest:
    at = _open()
    at.text_input(key="login_username").input(name)
    at.text_input(key="login_password").input(password)
    at.button[0].click().run()
    _store_cookies(at, jar)
    return at


def _logged_in(at: AppTest) -> bool:
    return any("Logged in as" in str(m.value) for m in at.markdown)


def test_a_reload_and_a_new_tab_keep_the_login(demo, browser):
    first = _log_in(browser)
    assert _logged_in(first) and browser.get(ui.COOKIE)
    assert first.session_state["mdsdys_session"] == browser[ui.COOKIE]
    for page in ("app.py", "pages/3_Review.py"):   # F5 on Home, and a deep link in a new tab
        again = _open(page)
        assert not again.exception and _logged_in(again), page


def test_logout_revokes_the_token_everywhere(demo, browser):
    at = _log_in(browser)
    token = browser[ui.COOKIE]
    at.button(key="logout").click().run()
    assert not _logged_in(at) and list_audit_action(demo, "logout")
    _store_cookies(at, browser)
    assert ui.COOKIE not in browser
    browser[ui.COOKIE] = token          # a copy of the old cookie, kept by another tab or an attacker
    assert not _logged_in(_open())


def test_a_tampered_or_invented_cookie_shows_the_login_form(demo, browser):
    _log_in(browser)
    token = browser[ui.COOKIE]
    for forged in (token[:-1] + ("A" if token[-1] != "A" else "B"), "x" * 43, "", "'; DROP TABLE users; --"):
        browser[ui.COOKIE] = forged
        at = _open()
        assert not at.exception and not _logged_in(at)
        assert any(b.label == "Log in" for b in at.button)


def test_an_idle_login_ends(demo, browser):
    _log_in(browser)
    long_ago = (datetime.now(UTC) - timedelta(hours=2)).isoformat(timespec="milliseconds")
    with connect(demo / "labels.db") as db, write_transaction(db):
        db.execute("UPDATE sessions SET last_seen_at = ?", [long_ago])
    at = _open()
    assert not _logged_in(at) and any(b.label == "Log in" for b in at.button)


def test_a_disabled_account_is_logged_out_on_its_next_click(demo, browser):
    at = _log_in(browser)
    from mdsdys.accounts import auth
    from mdsdys.store.users import find_user
    with connect(demo / "labels.db") as db:
        auth.set_active(db, find_user(db, "admin")[0], find_user(db, "reader1")[0].id, False)
    at.run()
    assert not _logged_in(at)


def test_the_review_position_and_skips_survive_a_reload(demo, browser):
    _log_in(browser)
    at = _open("pages/3_Review.py")
    at.button(key="review_skip").click().run()
    at.button(key="review_skip").click().run()
    shown = _current_cell(at)
    skipped = _cursor(at).skipped
    assert shown is not None and len(skipped) == 2
    reloaded = _open("pages/3_Review.py")
    assert _current_cell(reloaded) == shown
    assert _cursor(reloaded).skipped == skipped and reloaded.session_state["review_slide"] == at.session_state["review_slide"]


def _cursor(at: AppTest):
    state = at.session_state
    return state[f"review_cursor_{state['review_slide'].id}_{state['review_mode']}"]


def _current_cell(at: AppTest) -> int | None:
    for caption in at.caption:
        found = re.match(r"Cell (\d+) ·", str(caption.value))
        if found:
            return int(found.group(1))
    return None


def list_audit_action(home, action: str) -> list[dict]:
    with connect(home / "labels.db") as db:
        return list_audit(db, action=action)
