"""The one module of the library that imports Streamlit: login, page setup and error display.

Pages call these helpers and the library; they hold no SQL and no model code (STYLE.md).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import streamlit as st
from sqlite_utils import Database

from mdsdys.accounts import auth, policy, sessions, setup
from mdsdys.app import navigation as nav
from mdsdys.config import Settings, load_auth_limits, load_settings
from mdsdys.demo.study import DEMO_ACCOUNTS
from mdsdys.errors import MdsdysError
from mdsdys.report.shift import ModelShift
from mdsdys.store import check_integrity, connect
from mdsdys.store.users import User, count_humans

# The server-side session holds the login token; no widget may use this key (tests/test_security.py).
_SESSION_KEY = "mdsdys_session"
_SAVED_KEY = "mdsdys_saved_state"      # what the pages kept with the login (sessions.keep)
_COOKIE_KEY = "mdsdys_cookie_write"   # a token to write to the browser's cookie on this run ("" clears it)
COOKIE = "mdsdys_session"


def settings() -> Settings:
    """The app's settings, read from the environment."""
    return load_settings()


@contextlib.contextmanager
def store() -> Iterator[Database]:
    """A short-lived store connection for one page run."""
    with connect(settings().db_path) as db:
        yield db


@st.cache_resource(show_spinner=False)
def _checked_store(db_path: str) -> bool:
    """Check the store once per server process; a damaged store stops every page."""
    check_integrity(db_path)
    return True


def refuse_damaged_store() -> None:
    """Show why and stop the run when the store is damaged (checked once per server process)."""
    try:
        _checked_store(str(settings().db_path))
    except MdsdysError as exc:
        st.error(str(exc))
        st.stop()


def page_setup(title: str) -> None:
    """Configure the page, refuse a damaged store, and mark demo mode."""
    st.set_page_config(page_title=f"{title} · mdsdys", page_icon=":material/biotech:", layout="wide")
    refuse_damaged_store()
    if settings().demo:
        st.caption("Demo mode: every image here is synthetic, made by the mdsdys generator. Not patient data.")


def _cookie_token() -> str | None:
    """The session token the browser sent when this tab connected (a reload or a new tab)."""
    value = st.context.cookies.get(COOKIE)
    return value if isinstance(value, str) else None  # AppTest has no browser, hence no cookies


def current_user() -> User | None:
    """The logged-in user, re-read from the store on every run so role changes, disabled accounts,
    logouts elsewhere and the idle timeout apply at once."""
    token = st.session_state.get(_SESSION_KEY) or _cookie_token()
    if not token:
        return None
    with store() as db:
        session = sessions.resume_session(db, token)
    if session is None:
        st.session_state.pop(_SESSION_KEY, None)
        if _cookie_token():
            st.session_state[_COOKIE_KEY] = ""  # forget a token the server no longer accepts
        return None
    st.session_state[_SESSION_KEY] = token
    st.session_state[_SAVED_KEY] = (session.id, session.state)
    return session.user


def recall(key: str) -> Any:
    """A value a page kept with this login, before a reload too (see `remember`), or None."""
    return st.session_state.get(_SAVED_KEY, (None, {}))[1].get(key)


def remember(key: str, value: Any) -> None:
    """Keep a JSON-able value with the login, so it survives a reload or a new tab."""
    value = json.loads(json.dumps(value))
    session_id, saved = st.session_state.get(_SAVED_KEY, (None, {}))
    if session_id is None or saved.get(key) == value:
        return
    with store() as db:
        sessions.keep(db, session_id, key, value)
    st.session_state[_SAVED_KEY] = (session_id, saved | {key: value})


def require_login(action: str | None = None) -> User:
    """The logged-in user; otherwise show the login form and stop the page.

    With an action (mdsdys.accounts.policy), a user whose role may not do it sees why and the page stops.
    """
    user = current_user()
    _write_cookie()
    if user is None:
        _login_or_first_admin()
        st.stop()
    _sidebar(user)
    if action:
        try:
            policy.require(user, action)
        except MdsdysError as exc:
            st.error(str(exc))
            st.stop()
    return user


def recheck_login(action: str | None = None) -> User:
    """Inside a fragment: the user as the store has them now; a logged-out, disabled or demoted one
    reruns the whole page, which then shows the login form or the refusal (issue 15 item 9)."""
    user = current_user()
    if user is None or (action and not policy.can(user, action)):
        st.rerun(scope="app")
    return user


def _write_cookie() -> None:
    """Give the browser the token (or clear it): a cookie, so a reload and a new tab stay logged in.

    A cookie rather than a `?s=` URL parameter: a URL is copied into chats and bookmarks with the
    login in it, and a new tab opened by hand has no parameter. Streamlit reads cookies but cannot
    set them, so a one-line script does; the server still decides whether the token is valid.
    """
    if _COOKIE_KEY not in st.session_state:
        return
    token = st.session_state.pop(_COOKIE_KEY)
    age = load_auth_limits().session_hours * 3600 if token else 0
    st.html(f"<script>document.cookie = '{COOKIE}={token}; path=/; max-age={age}; SameSite=Strict'"
            f" + (location.protocol === 'https:' ? '; Secure' : '');</script>", unsafe_allow_javascript=True)


def _log_in(user: User) -> None:
    """Start a server-side session for a user who just proved who they are."""
    with store() as db:
        token = sessions.start_session(db, user)
    st.session_state[_SESSION_KEY] = token
    st.session_state[_COOKIE_KEY] = token
    st.rerun()


def _sidebar(user: User) -> None:
    with st.sidebar:
        st.write(f"Logged in as **{user.username}** ({user.role})")
        if st.button("Log out", key="logout"):
            with store() as db:
                sessions.end_session(db, st.session_state.get(_SESSION_KEY))
            st.session_state.clear()
            st.session_state[_COOKIE_KEY] = ""
            st.rerun()


def _login_or_first_admin() -> None:
    with store() as db:
        first_run = count_humans(db) == 0
    if first_run:
        _first_admin_form()
    else:
        _login_form()


def _login_form() -> None:
    st.subheader("Log in")
    with st.form("login", clear_on_submit=False):
        username = st.text_input("User name", key="login_username")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in")
    if settings().demo:
        st.info("Demo accounts (shown in demo mode only):\n\n" + "\n".join(
            f"- **{name}** / `{secret}` ({role})" for name, secret, role in DEMO_ACCOUNTS))
    if submitted:
        try:
            with store() as db:
                user = auth.authenticate(db, username.strip(), password)
        except MdsdysError as exc:
            st.error(str(exc))
            return
        _log_in(user)


def _first_admin_form() -> None:
    st.subheader("Welcome: create the administrator account")
    st.write("No one can log in yet. The first account is the admin, who then adds readers and adjudicators. "
             "Type the one-time setup token that `mdsdys serve` printed on the server's console.")
    st.caption(setup.NO_TOKEN_HELP)
    with st.form("first_admin"):
        token = st.text_input("Setup token", type="password", key="first_admin_token")
        username = st.text_input("Admin user name", key="first_admin_username")
        password = st.text_input("Password", type="password", key="first_admin_password")
        again = st.text_input("Password again", type="password", key="first_admin_again")
        submitted = st.form_submit_button("Create admin")
    if submitted:
        if password != again:
            st.error("The two passwords differ; type them again.")
            return
        try:
            with store() as db:
                user = setup.create_first_admin(db, username.strip(), password, token)
        except MdsdysError as exc:
            st.error(str(exc))
            return
        _log_in(user)


def navigation(home: Callable[[], None], user: User | None) -> Any:
    """Register Home and every page, listing only those this user may use; return the page to run.

    The others are registered hidden, so their URLs still answer with the login form or the page's
    own refusal (mdsdys.app.navigation says why).
    """
    with store() as db:
        usable = {entry.path for entry in nav.usable_pages(db, user)}
    pages = [st.Page(home, title=nav.HOME_TITLE, icon=":material/home:", default=True)]
    pages += [st.Page(entry.path, title=nav.title_of(entry), icon=entry.icon,
                      visibility="visible" if entry.path in usable else "hidden") for entry in nav.PAGES]
    return st.navigation(pages)


def home_links(user: User) -> None:
    """The Home page's "Where to go" links: the pages the sidebar lists."""
    with store() as db:
        usable = nav.usable_pages(db, user)
    for entry in usable:
        st.page_link(entry.path, label=f"{nav.title_of(entry)}: {entry.blurb}", icon=entry.icon)


def show_error(exc: MdsdysError) -> None:
    """Show one of the project's own errors to the user."""
    st.error(str(exc))


def show_shift(shift: ModelShift | None) -> None:
    """A slide against the model that proposed its labels (None: no proposals yet): a warning when its images differ."""
    if shift is None:
        return
    if shift.level == "warning":
        st.warning(shift.text(), icon="⚠️")
    else:
        st.caption(shift.text())
