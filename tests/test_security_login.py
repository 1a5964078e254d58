"""Security of logging in (issue 15 items 1-6, 11; issue 14 items 4-5): lockout, timing, names, passwords,
sessions and the last admin."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
from conftest import REPO_ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdsdys.accounts import auth, rules, sessions
from mdsdys.config import AuthLimits
from mdsdys.errors import AuthError, BadUsernameError, LastAdminError, MdsdysError, WeakPasswordError
from mdsdys.store import connect, write_transaction
from mdsdys.store.audit import list_audit
from mdsdys.store.users import insert_user, system_user

PASSWORD = "correct horse staple"
NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{2,20}", fullmatch=True)
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def ann(db):
    return auth.create_user(db, "ann", PASSWORD, "reader")


def test_the_lockout_counts_every_spelling_of_a_name_together(db, ann):
    for spelling in ("ann", "ANN", "Ann", " aNn ", "anN"):
        with pytest.raises(AuthError, match="Wrong"):
            auth.authenticate(db, spelling, "guess-guess")
    for spelling in ("ANN", "ann"):
        with pytest.raises(AuthError, match="Too many failed logins"):
            auth.authenticate(db, spelling, PASSWORD)


def test_thirty_parallel_attempts_get_at_most_five_password_checks(db, home, ann, monkeypatch):
    checked = []
    real_verify = auth._verify
    monkeypatch.setattr(auth, "_verify", lambda h, p: checked.append(1) or real_verify(h, p))
    outcomes, start = [], threading.Barrier(30)

    def attempt():
        with connect(home / "labels.db") as own:
            start.wait()
            try:
                auth.authenticate(own, "ann", "guess-guess")
            except AuthError as exc:
                outcomes.append(str(exc))

    threads = [threading.Thread(target=attempt) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 30 and len(checked) <= auth.MAX_FAILED_LOGINS
    assert sum("Too many" in o for o in outcomes) >= 30 - auth.MAX_FAILED_LOGINS
    assert len(list_audit(db, action="login_failed")) <= auth.MAX_FAILED_LOGINS


def test_an_unknown_name_costs_one_password_check_like_a_known_one(db, ann, monkeypatch):
    checked = []
    real_verify = auth._verify
    monkeypatch.setattr(auth, "_verify", lambda h, p: checked.append(h) or real_verify(h, p))
    for name in ("ann", "nobody-here"):
        started = time.perf_counter()
        with pytest.raises(AuthError, match="Wrong user name or password"):
            auth.authenticate(db, name, "guess-guess")
        elapsed = time.perf_counter() - started
        assert elapsed > 0.005, f"{name} answered in {elapsed * 1000:.1f} ms: no password check ran"
    assert len(checked) == 2 and all(h.startswith("$argon2id$") for h in checked)


def test_a_system_account_answers_like_any_wrong_password(db, monkeypatch):
    system_user(db)
    checked = []
    monkeypatch.setattr(auth, "_verify", lambda h, p: checked.append(h) or False)
    with pytest.raises(AuthError, match="Wrong"):
        auth.authenticate(db, "system", "")
    assert len(checked) == 1


def test_a_huge_name_is_logged_bounded(db):
    with pytest.raises(AuthError):
        auth.authenticate(db, "x" * 1_000_000, "guess-guess")
    row = list_audit(db, action="login_failed")[0]
    assert len(row["username"]) == rules.MAX_LOGGED_NAME


def test_name_spraying_is_slowed_server_wide_and_the_audit_grows_bounded(db, monkeypatch):
    monkeypatch.setattr(auth, "_verify", lambda h, p: False)  # the count is under test, not argon2
    limits = AuthLimits(max_failures_per_minute=10)
    messages = []
    for index in range(25):
        with pytest.raises(AuthError) as caught:
            auth.authenticate(db, f"spray{index}", "guess-guess", limits)
        messages.append(str(caught.value))
    assert sum("Wrong" in m for m in messages) == 10
    assert all("on this server" in m for m in messages[10:])
    assert len(list_audit(db, action="login_failed")) == 10 and len(list_audit(db, action="login_refused")) == 1


def test_a_locked_name_is_audited_once_however_often_it_is_tried(db, ann):
    for _ in range(auth.MAX_FAILED_LOGINS + 20):
        with pytest.raises(AuthError):
            auth.authenticate(db, "ann", "guess-guess")
    assert len(list_audit(db, action="login_refused")) == 1


@FAST
@given(name=st.text(max_size=300), password=st.text(max_size=50))
def test_any_typed_name_fails_cleanly_and_is_logged_within_bounds(db, monkeypatch, name, password):
    monkeypatch.setattr(auth, "_verify", lambda h, p: False)  # the bounds are under test, not argon2
    limits = AuthLimits(max_failures=10_000, max_failures_per_minute=10_000)
    with pytest.raises(AuthError):
        auth.authenticate(db, name, password, limits)
    assert all(len(row["username"]) <= rules.MAX_LOGGED_NAME for row in list_audit(db, limit=5))


@pytest.mark.parametrize("password", ["password", "Password1", "password123!", "12345678", "qwertyuiop",
                                      "iloveyou", "aaaaaaaa", "abcdefgh", "trustno1", "Dragon2024", "football"])
def test_common_and_trivial_passwords_are_refused(db, password):
    with pytest.raises(WeakPasswordError):
        auth.create_user(db, "bob", password, "reader")


@FAST
@given(name=NAMES, suffix=st.sampled_from(["", "1", "123", "!", "2024", "_"]))
def test_a_password_made_from_the_user_name_is_refused(name, suffix):
    for password in (name + suffix, (name + suffix).upper(), name[::-1] + suffix, suffix + name, name * 3):
        if len(password) >= rules.MIN_PASSWORD_LENGTH:
            with pytest.raises(WeakPasswordError):
                rules.check_password(password, name)


def test_a_passphrase_is_accepted():
    rules.check_password("violet tractor on the moor", "ann")


def test_the_shipped_list_is_package_data_with_thousands_of_entries():
    assert len(rules.common_passwords()) >= 5000
    assert "password" in rules.common_passwords()
    assert "common_passwords.txt" in (REPO_ROOT / "pyproject.toml").read_text()


def test_a_new_password_from_an_admin_obeys_the_same_rules(db, ann):
    boss = auth.create_user(db, "boss", "a-fine-long-passphrase", "admin")
    with pytest.raises(WeakPasswordError):
        auth.reset_password(db, boss, ann.id, "ann12345")


@pytest.mark.parametrize("name", ["system", "SYSTEM", "System", "syst3m", "sy5tem", "s.y.s.t.e.m", "anonymous",
                                  "root", "Administrator"])
def test_reserved_names_and_their_look_alikes_are_refused(db, name):
    with pytest.raises(BadUsernameError, match="reserved"):
        auth.create_user(db, name, "a-fine-long-passphrase", "reader")


def test_a_name_that_looks_like_an_existing_account_is_refused(db, ann):
    auth.create_user(db, "reader1", "a-fine-long-passphrase", "reader")
    for look_alike in ("readerl", "READER1", "reader.1", "AN-N"):
        with pytest.raises(BadUsernameError):
            auth.create_user(db, look_alike, "a-fine-long-passphrase", "reader")


def test_the_system_account_is_found_by_its_flag_never_by_name(db):
    impostor = insert_user(db, "system", "reader", auth.hash_password("a-fine-long-passphrase"))  # an old store
    system = system_user(db)
    assert system.is_system and system.id != impostor.id and system.role == "admin"
    assert system_user(db).id == system.id


def test_a_session_survives_until_its_idle_timeout(db, ann):
    token = sessions.start_session(db, ann)
    assert sessions.resume_session(db, token).user == ann
    _age_session(db, token, minutes=31)
    assert sessions.resume_session(db, token) is None
    assert list_audit(db, action="session_expired")[0]["username"] == "ann"
    assert sessions.resume_session(db, token) is None  # and it stays ended


def test_activity_restarts_the_idle_timeout_but_not_the_absolute_limit(db, ann):
    limits = AuthLimits(idle_minutes=30, session_hours=1)
    token = sessions.start_session(db, ann, limits)
    _age_session(db, token, minutes=20)
    assert sessions.resume_session(db, token, limits) is not None  # 20 min idle: still fine, and touched
    _age_session(db, token, minutes=20, column="last_seen_at", relative_to_now=True)
    assert sessions.resume_session(db, token, limits) is not None
    with write_transaction(db):
        db.execute("UPDATE sessions SET expires_at = '2000-01-01T00:00:00.000+00:00'")
    assert sessions.resume_session(db, token, limits) is None


@FAST
@given(position=st.integers(0, 42), replacement=st.characters(whitelist_categories=("Lu", "Ll", "Nd")))
def test_an_altered_token_is_refused(db, ann, position, replacement):
    token = sessions.start_session(db, ann)
    altered = token[:position] + replacement + token[position + 1:]
    if altered != token:
        assert sessions.resume_session(db, altered) is None
    assert sessions.resume_session(db, token + "x") is None and sessions.resume_session(db, "") is None


def test_logout_revokes_the_token_and_disabling_or_a_new_password_ends_every_session(db, ann):
    boss = auth.create_user(db, "boss", "a-fine-long-passphrase", "admin")
    token = sessions.start_session(db, ann)
    sessions.end_session(db, token)
    assert sessions.resume_session(db, token) is None
    assert list_audit(db, action="logout")[0]["username"] == "ann"
    first, second = sessions.start_session(db, ann), sessions.start_session(db, ann)
    auth.reset_password(db, boss, ann.id, "a-new-long-passphrase")
    assert sessions.resume_session(db, first) is None and sessions.resume_session(db, second) is None
    third = sessions.start_session(db, ann)
    auth.set_active(db, boss, ann.id, False)
    assert sessions.resume_session(db, third) is None


def test_the_store_never_holds_a_session_token(db, ann):
    token = sessions.start_session(db, ann)
    dumped = "\n".join(db.conn.iterdump())
    assert token not in dumped


def test_the_last_active_admin_cannot_be_demoted_or_disabled(db):
    boss = auth.create_user(db, "boss", "a-fine-long-passphrase", "admin")
    for change in (lambda: auth.change_role(db, boss, boss.id, "reader"),
                   lambda: auth.set_active(db, boss, boss.id, False)):
        with pytest.raises(LastAdminError, match="last active admin"):
            change()
    assert auth.authenticate(db, "boss", "a-fine-long-passphrase").role == "admin"
    chief = auth.create_user(db, "chief", "a-fine-long-passphrase", "admin", by=boss)
    auth.change_role(db, chief, boss.id, "reader")  # another admin remains: allowed
    with pytest.raises(LastAdminError):
        auth.set_active(db, chief, chief.id, False)


def test_a_disabled_admin_does_not_count_as_the_remaining_admin(db):
    boss = auth.create_user(db, "boss", "a-fine-long-passphrase", "admin")
    chief = auth.create_user(db, "chief", "a-fine-long-passphrase", "admin", by=boss)
    auth.set_active(db, boss, chief.id, False)
    with pytest.raises(LastAdminError):
        auth.change_role(db, boss, boss.id, "adjudicator")


def test_an_account_change_applies_all_or_nothing(db, ann):
    from mdsdys.accounts import admin
    boss = auth.create_user(db, "boss", "a-fine-long-passphrase", "admin")
    with pytest.raises(MdsdysError):
        admin.change_account(db, boss, ann.id, "adjudicator", "ann12345", True)  # weak password
    assert auth.authenticate(db, "ann", PASSWORD).role == "reader"


def _age_session(db, token: str, minutes: int, column: str = "last_seen_at", relative_to_now: bool = False) -> None:
    """Move a session's last activity `minutes` into the past."""
    from datetime import UTC, datetime, timedelta
    moment = (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat(timespec="milliseconds")
    with write_transaction(db):
        db.execute(f"UPDATE sessions SET {column} = ? WHERE token_hash = ?", [moment, sessions._digest(token)])


def test_disabled_user_objects_are_refused_even_if_stale(db, ann):
    from mdsdys.accounts import policy
    assert not policy.can(dataclasses.replace(ann, active=False), "review")


def test_the_admin_page_shows_a_new_account_at_once_and_refuses_to_demote_the_last_admin(db, home):
    from conftest import open_page
    from mdsdys.store.users import find_user
    build = auth.create_user(db, "boss", "a-fine-long-passphrase", "admin")
    at = open_page("pages/7_Admin.py", build.id)
    at.text_input(key="new_username").input("newreader")
    at.text_input(key="new_password").input("violet tractor on the moor")
    at.button[0].click().run()
    assert "newreader" in set(at.dataframe[0].value["username"]) and at.success
    at.selectbox(key="change_target").select("boss")
    at.selectbox(key="change_role").select("reader")
    at.button[1].click().run()
    assert any("last active admin" in e.value for e in at.error)
    assert find_user(db, "boss")[0].role == "admin"
