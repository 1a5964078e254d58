"""The first admin of a new installation: made from the command line, or on the web with a one-time
setup token that only someone at the server's console has seen (issue 15, item 22).

Before this, whoever reached the app first became its admin.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlite_utils import Database

from mdsdys.accounts import auth
from mdsdys.errors import AuthError, MdsdysError
from mdsdys.store import write_transaction
from mdsdys.store.audit import log_action
from mdsdys.store.settings import delete_setting, get_setting, set_setting
from mdsdys.store.users import User, count_humans

SETUP_TOKEN_KEY = "setup_token_sha256"  # only a hash is stored: the token itself is printed once
NO_TOKEN_HELP = ("Create the admin on the server with 'mdsdys create-user NAME --role admin', or start the app "
                 "with 'mdsdys serve', which prints a one-time setup token.")


def _digest(token: str) -> str:
    # A random 128-bit token needs no slow hash: nothing short enough to guess hides behind it.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def needs_first_admin(db: Database) -> bool:
    """True while no person can log in yet."""
    return count_humans(db) == 0


def issue_setup_token(db: Database) -> str | None:
    """A new one-time token for creating the first admin on the web, or None once there are accounts.

    Each call replaces the previous token; the caller prints it to the console.
    """
    if not needs_first_admin(db):
        return None
    token = secrets.token_urlsafe(16)
    with write_transaction(db):
        set_setting(db, SETUP_TOKEN_KEY, _digest(token))
        log_action(db, None, "setup_token_issued", "setting", SETUP_TOKEN_KEY, username="console")
    return token


def create_first_admin(db: Database, username: str, password: str, token: str) -> User:
    """Create the first admin from the web form; the setup token is checked and then used up."""
    with write_transaction(db):  # check, create and spend the token under one lock: one winner
        if not needs_first_admin(db):
            raise MdsdysError("An admin already exists; log in instead.")
        expected = get_setting(db, SETUP_TOKEN_KEY)
        if expected is None:
            raise AuthError(f"This app has no setup token. {NO_TOKEN_HELP}")
        accepted = hmac.compare_digest(expected, _digest(token.strip()))
        if accepted:
            user = auth.create_user(db, username, password, "admin", by=None)
            delete_setting(db, SETUP_TOKEN_KEY)
        else:  # committed with the transaction, so the refusal stays on record
            log_action(db, None, "setup_token_refused", "setting", SETUP_TOKEN_KEY, username=username[:40])
    if not accepted:
        raise AuthError("That setup token is wrong. Copy it from the console where 'mdsdys serve' runs.")
    return user
