"""Accounts: hashed passwords, login with rate limiting, role checks, all audited."""

import pytest

from mdsdys.accounts import auth
from mdsdys.errors import AuthError, MdsdysError, PermissionDeniedError
from mdsdys.store.audit import list_audit
from mdsdys.store.users import find_user


def test_password_is_stored_as_an_argon2_hash_never_in_clear(db):
    auth.create_user(db, "ann", "correct horse", "reader")
    user, stored = find_user(db, "ann")
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert all("correct horse" not in str(row) for row in list_audit(db))


def test_login_with_the_right_password_returns_the_user(db):
    created = auth.create_user(db, "ann", "correct horse", "reader")
    assert auth.authenticate(db, "ann", "correct horse") == created
    assert list_audit(db, action="login")[0]["username"] == "ann"


def test_a_wrong_password_fails_and_is_audited(db):
    auth.create_user(db, "ann", "correct horse", "reader")
    with pytest.raises(AuthError, match="Wrong user name or password"):
        auth.authenticate(db, "ann", "battery staple")
    assert len(list_audit(db, action="login_failed")) == 1


def test_repeated_failures_lock_the_name_even_for_the_right_password(db):
    auth.create_user(db, "ann", "correct horse", "reader")
    for _ in range(auth.MAX_FAILED_LOGINS):
        with pytest.raises(AuthError):
            auth.authenticate(db, "ann", "guess")
    with pytest.raises(AuthError, match="Too many failed logins"):
        auth.authenticate(db, "ann", "correct horse")


def test_the_system_account_cannot_log_in(db):
    from mdsdys.store.users import system_user
    system_user(db)
    with pytest.raises(AuthError):
        auth.authenticate(db, "system", "")


def test_a_reader_cannot_create_accounts(db):
    reader = auth.create_user(db, "ann", "correct horse", "reader")
    with pytest.raises(PermissionDeniedError, match="admin"):
        auth.create_user(db, "eve", "password-p1", "admin", by=reader)


def test_admin_changes_a_role_and_it_is_audited_with_before_and_after(db):
    admin = auth.create_user(db, "boss", "password-p1", "admin")
    reader = auth.create_user(db, "ann", "password-p1", "reader", by=admin)
    auth.change_role(db, admin, reader.id, "adjudicator")
    row = list_audit(db, action="user_role")[0]
    assert '"reader"' in row["before"] and '"adjudicator"' in row["after"]


@pytest.mark.parametrize("name, password, role", [
    ("a", "password-p1", "reader"),           # name too short
    ("ann", "short", "reader"),             # password too short
    ("ann", "password1", "reader"),         # a common password
    ("ann", "password-p1", "superuser"),      # unknown role
])
def test_bad_account_details_are_refused(db, name, password, role):
    with pytest.raises(MdsdysError):
        auth.create_user(db, name, password, role)


def test_the_policy_lets_admins_through_and_refuses_others():
    from mdsdys.accounts import policy
    from mdsdys.store.users import User
    assert policy.require(User(1, "boss", "admin"), "train").username == "boss"
    with pytest.raises(PermissionDeniedError):
        policy.require(User(2, "ann", "reader"), "train")
    with pytest.raises(PermissionDeniedError, match="log in"):
        policy.require(None, "review")
