"""The one module of the library that imports Streamlit: login, page setup and error display.

Pages call these helpers and the library; they hold no SQL and no model code (STYLE.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import streamlit as st
from sqlite_utils import Database

from mdsdys.accounts import auth
from mdsdys.config import Settings, load_settings
from mdsdys.demo.study import DEMO_ACCOUNTS
from mdsdys.errors import MdsdysError
from mdsdys.store import check_integrity, connect
from mdsdys.store.users import User, count_humans, get_active_user

_USER_KEY = "mdsdys_user_id"


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


def page_setup(title: str) -> None:
    """Configure the page, refuse a damaged store, and mark demo mode."""
    st.set_page_config(page_title=f"{title} · mdsdys", page_icon=":material/biotech:", layout="wide")
    try:
        _checked_store(str(settings().db_path))
    except MdsdysError as exc:
        st.error(str(exc))
        st.stop()
    if settings().demo:
        st.caption("Demo mode: every image here is synthetic, made by the mdsdys generator. Not patient data.")


def current_user() -> User | None:
    """The logged-in user, re-read from the store so role changes and disabled accounts apply at once."""
    user_id = st.session_state.get(_USER_KEY)
    if user_id is None:
        return None
    with store() as db:
        user = get_active_user(db, int(user_id))
    if user is None:
        st.session_state.pop(_USER_KEY, None)
    return user


def require_login(*roles: str) -> User:
    """The logged-in user; otherwise show the login form and stop the page."""
    user = current_user()
    if user is None:
        _login_or_first_admin()
        st.stop()
    _sidebar(user)
    if roles:
        try:
            auth.require_role(user, *roles)
        except MdsdysError as exc:
            st.error(str(exc))
            st.stop()
    return user


def recheck_login(*roles: str) -> User:
    """Inside a fragment: the user as the store has them now; a logged-out, disabled or demoted one
    reruns the whole page, which then shows the login form or the refusal."""
    user = current_user()
    if user is None or (roles and not auth.has_role(user, *roles)):
        st.rerun(scope="app")
    return user


def _sidebar(user: User) -> None:
    with st.sidebar:
        st.write(f"Logged in as **{user.username}** ({user.role})")
        if st.button("Log out", key="logout"):
            st.session_state.clear()
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
        st.session_state[_USER_KEY] = user.id
        st.rerun()


def _first_admin_form() -> None:
    st.subheader("Welcome: create the administrator account")
    st.write("No one can log in yet. The first account is the admin, who then adds readers and adjudicators.")
    with st.form("first_admin"):
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
                if count_humans(db):
                    raise MdsdysError("An admin was created meanwhile; log in instead.")
                user = auth.create_user(db, username.strip(), password, "admin", by=None)
        except MdsdysError as exc:
            st.error(str(exc))
            return
        st.session_state[_USER_KEY] = user.id
        st.rerun()


def show_error(exc: MdsdysError) -> None:
    """Show one of the project's own errors to the user."""
    st.error(str(exc))
