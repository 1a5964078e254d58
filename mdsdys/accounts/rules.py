"""What makes an acceptable user name and password (issue 15 items 6 and 11)."""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Iterable
from importlib import resources

from mdsdys.errors import BadUsernameError, WeakPasswordError

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024   # argon2 takes any length; this bounds the work one login can ask for
MAX_LOGGED_NAME = 64         # what a failed login writes to the audit log of the name typed (item 4)
_USERNAME = re.compile(r"^[A-Za-z0-9_.-]{2,40}$")
# Names that the app itself uses ("system" owns imports, "anonymous" signs failed logins in the
# audit log) or that read as the app speaking. Compared by skeleton, so "SYSTEM" and "syst3m" are refused too.
RESERVED_NAMES = ("system", "anonymous", "root", "administrator", "mdsdys", "superuser", "nobody")
# Look-alikes folded together: digits read as letters, and letters that look like each other.
_LOOKALIKE = str.maketrans({"0": "o", "1": "i", "l": "i", "|": "i", "3": "e", "4": "a", "5": "s", "$": "s",
                            "7": "t", "8": "b", "9": "g", "@": "a"})
_SEQUENCES = ("abcdefghijklmnopqrstuvwxyz", "0123456789", "qwertyuiop", "asdfghjkl", "zxcvbnm")


def canonical_name(username: str) -> str:
    """The form names are compared and counted in: trimmed, case-folded, at most MAX_LOGGED_NAME characters."""
    return username.strip().casefold()[:MAX_LOGGED_NAME]


def name_skeleton(username: str) -> str:
    """A name with case, separators and look-alike characters folded, for spotting impersonation."""
    folded = username.casefold().translate(_LOOKALIKE)
    return re.sub(r"[._\-]", "", folded).replace("rn", "m").replace("vv", "w")


def check_username(username: str, existing: Iterable[str] = ()) -> None:
    """Raise BadUsernameError for a malformed, reserved or look-alike name."""
    if not _USERNAME.match(username):
        raise BadUsernameError("A user name is 2-40 letters, digits, '.', '_' or '-'.")
    skeleton = name_skeleton(username)
    if skeleton in {name_skeleton(name) for name in RESERVED_NAMES}:
        raise BadUsernameError(f"{username!r} is reserved for the app itself; choose another name.")
    for name in existing:
        if name_skeleton(name) == skeleton:
            raise BadUsernameError(f"{username!r} is taken or looks like the existing account {name!r}; "
                                   "choose a name that reads differently.")


def check_password(password: str, username: str) -> None:
    """Raise WeakPasswordError for a short, common or name-derived password, saying why."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPasswordError(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPasswordError(f"A password has at most {MAX_PASSWORD_LENGTH} characters.")
    lowered = password.casefold()
    if len(set(lowered)) < 4:
        raise WeakPasswordError("That password repeats too few characters; use at least 4 different ones.")
    if _is_sequence(lowered):
        raise WeakPasswordError("That password is a keyboard or alphabet run; choose a few unrelated words.")
    if _is_common(lowered):
        raise WeakPasswordError("That password is among the most common ones attackers try first; "
                                "choose a few unrelated words instead.")
    if _from_name(lowered, username):
        raise WeakPasswordError("The password must not be the user name or a variant of it.")


@functools.cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords (package data, 10,000 entries), lower-case."""
    text = resources.files("mdsdys.accounts").joinpath("common_passwords.txt").read_text(encoding="utf-8")
    return frozenset(line.strip().casefold() for line in text.splitlines() if line and not line.startswith("#"))


def _is_common(lowered: str) -> bool:
    """In the list as typed, or once leading and trailing digits and symbols are taken off ("Password1!")."""
    common = common_passwords()
    core = lowered.strip(string.digits + string.punctuation + " ")
    return lowered in common or (len(core) >= 4 and core in common) or lowered.replace(" ", "") in common


def _is_sequence(lowered: str) -> bool:
    """A stretch of the alphabet, the digits or a keyboard row, either way round (wrapping allowed)."""
    compact = lowered.replace(" ", "")
    return any(compact in run * 3 or compact in (run * 3)[::-1] for run in _SEQUENCES)


def _from_name(lowered: str, username: str) -> bool:
    """The name (or its reverse, or the name without its digits) repeated, or with digits around it."""
    name = re.sub(r"[^a-z0-9]", "", username.casefold())
    core = re.sub(r"[^a-z0-9]", "", lowered)
    if len(name) < 2 or not core:
        return False
    stems = {s for s in (name, name[::-1], name.rstrip(string.digits)) if len(s) >= 2}
    return any(_wraps(core, stem) for stem in stems) or name_skeleton(lowered) == name_skeleton(username)


def _wraps(core: str, stem: str) -> bool:
    """`core` is `stem` repeated, or `stem` with only digits before or after it."""
    if core == stem * (len(core) // len(stem)):
        return True
    before, found, after = core.partition(stem)
    return bool(found) and (before + after).isdigit() and (not before or not after)
