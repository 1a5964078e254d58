"""The sidebar lists only the pages a role can use, under "Home" (issue 14 item 6)."""

import ast
from pathlib import Path

import pytest
import streamlit as st
from conftest import open_page
from streamlit.testing.v1 import AppTest

from mdsdys.accounts import auth
from mdsdys.app import navigation
from mdsdys.review import consensus

REPO = Path(__file__).resolve().parent.parent
SENIOR_ONLY = {"Admin", "Train", "Import", "Consensus"}


@pytest.fixture
def sidebar(monkeypatch):
    """What each run hands st.navigation: (title, visibility) of every page, in order."""
    calls: list[list[tuple[str, str]]] = []
    real = st.navigation

    def spy(pages, **kwargs):
        calls.append([(page.title, page.visibility) for page in pages])
        return real(pages, **kwargs)

    monkeypatch.setattr(st, "navigation", spy)
    return calls


def _listed(calls) -> list[str]:
    return [title for title, visibility in calls[-1] if visibility == "visible"]


def test_a_readers_sidebar_has_home_and_no_admin_train_import_or_consensus(db, sidebar):
    reader = auth.create_user(db, "rita", "password-r", "reader")
    at = open_page("app.py", reader.id)
    assert not at.exception
    listed = _listed(sidebar)
    assert listed[0] == "Home" and not SENIOR_ONLY & set(listed)
    assert {"Review", "Annotate", "Dashboard"} <= set(listed)


def test_an_admins_sidebar_lists_every_page(db, sidebar):
    admin = auth.create_user(db, "ada", "password-a", "admin")
    at = open_page("app.py", admin.id)
    assert not at.exception
    assert _listed(sidebar) == ["Home", *(navigation.title_of(e) for e in navigation.PAGES)]
    assert SENIOR_ONLY <= set(_listed(sidebar))


def test_a_visitor_who_is_not_logged_in_sees_only_home_titled_home(db, sidebar):
    auth.create_user(db, "ada", "password-a", "admin")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    assert not at.exception and any(b.label == "Log in" for b in at.button)
    assert _listed(sidebar) == ["Home"]
    assert len(sidebar[-1]) == 1 + len(navigation.PAGES)  # the rest are registered hidden, so deep links answer


def test_readers_see_consensus_once_an_admin_opens_it_to_them(db):
    admin = auth.create_user(db, "ada", "password-a", "admin")
    reader = auth.create_user(db, "rita", "password-r", "reader")
    titles = lambda: {navigation.title_of(e) for e in navigation.usable_pages(db, reader)}  # noqa: E731
    assert "Consensus" not in titles()
    consensus.set_readers_may_settle(db, admin, True)
    assert "Consensus" in titles() and "Admin" not in titles()


def test_a_hidden_page_still_refuses_a_reader_who_types_its_address(db):
    """The sidebar is convenience: the page itself refuses (server-side), whatever the sidebar shows."""
    reader = auth.create_user(db, "rita", "password-r", "reader")
    at = open_page("pages/7_Admin.py", reader.id)
    assert not at.exception and at.error and "rita is a reader" in at.error[0].value
    assert not at.dataframe


def test_each_page_asks_require_login_for_the_action_the_sidebar_table_names():
    for entry in navigation.PAGES:
        calls = [node for node in ast.walk(ast.parse((REPO / entry.path).read_text()))
                 if isinstance(node, ast.Call) and ast.unparse(node.func) == "ui.require_login"]
        assert len(calls) == 1, entry.path
        asked = [arg.value for arg in calls[0].args if isinstance(arg, ast.Constant)]
        if entry.action == "settle":  # the Consensus page checks consensus.may_settle itself
            assert "consensus.may_settle(" in (REPO / entry.path).read_text()
        else:
            assert asked == [entry.action], f"{entry.path} asks {asked}, the sidebar table says {entry.action!r}"


def test_the_home_page_is_titled_home_and_links_only_usable_pages(db):
    reader = auth.create_user(db, "rita", "password-r", "reader")
    at = open_page("app.py", reader.id)
    links = [link.proto.label for link in at.get("page_link")]
    assert links and not any(label.split(":")[0] in SENIOR_ONLY for label in links)
