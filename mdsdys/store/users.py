"""User accounts and roles."""

from __future__ import annotations

from dataclasses import dataclass

from sqlite_utils import Database

from mdsdys.errors import NotFoundError
from mdsdys.store.db import utcnow

ROLES = ("reader", "adjudicator", "admin")
SYSTEM_USERNAME = "system"  # owns command-line actions and imported labels; cannot log in


@dataclass(frozen=True)
class User:
    """A logged-in person (or the built-in system account)."""

    id: int
    username: str
    role: str
    is_system: bool = False
    active: bool = True

    @property
    def is_admin(self) -> bool:
        """True for administrators."""
        return self.role == "admin"


def _user(row: dict) -> User:
    return User(row["id"], row["username"], row["role"], bool(row["is_system"]), bool(row["active"]))


def insert_user(db: Database, username: str, role: str, password_hash: str | None, is_system: bool = False) -> User:
    """Insert an account row; the caller has validated the name and hashed the password."""
    cursor = db.execute(
        "INSERT INTO users (username, role, password_hash, is_system, created_at) VALUES (?, ?, ?, ?, ?)",
        [username, role, password_hash, int(is_system), utcnow()],
    )
    return User(cursor.lastrowid, username, role, is_system)


def find_user(db: Database, username: str) -> tuple[User, str | None] | None:
    """The active user with this name (any case) and their password hash, or None."""
    rows = list(db.query("SELECT * FROM users WHERE username = ? AND active = 1", [username]))
    return (_user(rows[0]), rows[0]["password_hash"]) if rows else None


def username_taken(db: Database, username: str) -> bool:
    """Whether any account, active or disabled, has this name (names match case-insensitively)."""
    return db.execute("SELECT 1 FROM users WHERE username = ?", [username]).fetchone() is not None


def get_user(db: Database, user_id: int) -> User:
    """The user with this id; raises NotFoundError."""
    rows = list(db.query("SELECT * FROM users WHERE id = ?", [user_id]))
    if not rows:
        raise NotFoundError(f"No user with id {user_id}.")
    return _user(rows[0])


def list_users(db: Database, include_system: bool = False) -> list[dict]:
    """Accounts without their password hashes, by name."""
    rows = db.query(
        "SELECT id, username, role, is_system, active, created_at FROM users "
        "WHERE is_system = 0 OR ? ORDER BY username", [int(include_system)],
    )
    return list(rows)


def update_user(db: Database, user_id: int, role: str | None = None,
                password_hash: str | None = None, active: bool | None = None) -> None:
    """Change a user's role, password hash or active flag."""
    for column, value in (("role", role), ("password_hash", password_hash), ("active", active)):
        if value is not None:
            db.execute(f"UPDATE users SET {column} = ? WHERE id = ?", [value, user_id])


def system_user(db: Database) -> User:
    """The built-in account for CLI actions and imported labels, created on first use.

    Found by its is_system flag, never by name: a person's account called "system" (possible before
    the name was reserved, issue 15 item 11) never stands in for it.
    """
    rows = list(db.query("SELECT * FROM users WHERE is_system = 1 ORDER BY id LIMIT 1"))
    if rows:
        return _user(rows[0])
    taken = db.execute("SELECT 1 FROM users WHERE username = ?", [SYSTEM_USERNAME]).fetchone()
    return insert_user(db, f"{SYSTEM_USERNAME}-account" if taken else SYSTEM_USERNAME, "admin", None, is_system=True)


def all_usernames(db: Database) -> list[str]:
    """Every account name, disabled and built-in ones too (new names must not look like any)."""
    return [r[0] for r in db.execute("SELECT username FROM users").fetchall()]


def count_active_admins(db: Database, excluding: int | None = None) -> int:
    """Active human admins, optionally not counting one account."""
    return int(db.execute("SELECT COUNT(*) FROM users WHERE role = 'admin' AND active = 1 AND is_system = 0 "
                          "AND id IS NOT ?", [excluding]).fetchone()[0])


def count_humans(db: Database) -> int:
    """How many accounts people can log in with."""
    return int(db.execute("SELECT COUNT(*) FROM users WHERE is_system = 0").fetchone()[0])


def get_active_user(db: Database, user_id: int) -> User | None:
    """The user with this id if the account is active, else None."""
    rows = list(db.query("SELECT * FROM users WHERE id = ? AND active = 1", [user_id]))
    return _user(rows[0]) if rows else None
