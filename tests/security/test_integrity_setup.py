"""The app listens on this machine only unless told otherwise, and the first visitor cannot make
themself admin without the console's one-time token (issue 15, item 22)."""

import re

import pytest
from conftest import REPO_ROOT
from streamlit.testing.v1 import AppTest

from mdsdys import cli
from mdsdys.accounts import auth, setup
from mdsdys.errors import AuthError, MdsdysError
from mdsdys.store import connect
from mdsdys.store.audit import list_audit
from mdsdys.store.users import count_humans, find_user


@pytest.fixture
def streamlit_calls(monkeypatch):
    """Capture the `streamlit run` command instead of starting a server."""
    calls = []
    monkeypatch.setattr(cli.subprocess, "call", lambda command, **kw: calls.append(command) or 0)
    return calls


def _address(command: list[str]) -> str:
    return command[command.index("--server.address") + 1]


def test_serve_listens_on_localhost_by_default(home, streamlit_calls):
    assert cli.main(["serve"]) == 0
    assert _address(streamlit_calls[0]) == "127.0.0.1"


def test_serve_listens_where_address_says(home, streamlit_calls):
    assert cli.main(["serve", "--address", "0.0.0.0", "--port", "9000"]) == 0
    assert _address(streamlit_calls[0]) == "0.0.0.0" and "9000" in streamlit_calls[0]


def test_demo_has_the_same_address_option():
    parser = cli.build_parser()
    assert parser.parse_args(["demo"]).address == "127.0.0.1"
    assert parser.parse_args(["demo", "--address", "10.0.0.5"]).address == "10.0.0.5"


def _printed_token(capsys) -> str:
    match = re.search(r"setup token: (\S+)", capsys.readouterr().out)
    assert match, "serve printed no setup token"
    return match.group(1)


def test_serve_on_a_new_store_prints_a_token_that_makes_one_admin(home, streamlit_calls, capsys):
    cli.main(["serve"])
    token = _printed_token(capsys)
    with connect(home / "labels.db") as db:
        with pytest.raises(AuthError, match="setup token is wrong"):
            setup.create_first_admin(db, "mallory", "a-long-password", "guessed")
        boss = setup.create_first_admin(db, "boss", "a-long-password", token)
        with pytest.raises(MdsdysError, match="already exists"):
            setup.create_first_admin(db, "mallory", "a-long-password", token)
        assert boss.role == "admin" and find_user(db, "mallory") is None
        actions = [r["action"] for r in list_audit(db)]
        assert "setup_token_refused" in actions and token not in str(list_audit(db))


def test_serve_prints_no_token_once_someone_can_log_in(home, streamlit_calls, capsys):
    with connect(home / "labels.db") as db:
        auth.create_user(db, "boss", "a-long-password", "admin")
    cli.main(["serve"])
    assert "setup token" not in capsys.readouterr().out


def test_without_a_token_the_web_cannot_make_an_admin(db):
    with pytest.raises(AuthError, match="create-user NAME --role admin"):
        setup.create_first_admin(db, "boss", "a-long-password", "")
    assert count_humans(db) == 0


def test_the_cli_still_makes_the_first_admin(home, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("a-long-password\n"))
    assert cli.main(["create-user", "boss", "--role", "admin", "--password-stdin"]) == 0
    with connect(home / "labels.db") as db:
        assert find_user(db, "boss")[0].role == "admin"


def _first_run_form(token: str) -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=60).run()
    at.text_input(key="first_admin_token").input(token)
    at.text_input(key="first_admin_username").input("boss")
    at.text_input(key="first_admin_password").input("a-long-password")
    at.text_input(key="first_admin_again").input("a-long-password")
    return at.button[0].click().run()


@pytest.mark.slow
def test_the_first_visitor_needs_the_token(db):
    at = _first_run_form("not-the-token")
    assert not at.exception and any("no setup token" in e.value for e in at.error)
    token = setup.issue_setup_token(db)
    at = _first_run_form(token)
    assert not at.exception and not at.error
    assert find_user(db, "boss")[0].role == "admin"
