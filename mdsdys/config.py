"""Where the app keeps its files, read once from environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
STARTER_SEGMENTER = REPO_ROOT / "models" / "starter" / "segmenter.pt"


@dataclass(frozen=True)
class Settings:
    """Paths and limits for one installation of the app."""

    home: Path  # MDSDYS_HOME: the folder that holds labels.db and models/ by default
    db_path: Path  # MDSDYS_DB: the SQLite label store
    models_dir: Path  # MDSDYS_MODELS: versioned model checkpoints
    demo: bool = False  # MDSDYS_DEMO=1: show the demo accounts on the login page
    # A 640x480 field is ~100 kB and a zip of a whole slide's patches some hundred MB;
    # 1 GB of uploads per import keeps them well below this machine's memory.
    max_upload_mb: int = 1024
    # MDSDYS_MAX_IMPORT_MB: image bytes one import may unpack from all its zips and folders together
    # (issue 15, item 17); zips are inflated one image at a time, so this bounds the store's growth.
    max_import_mb: int = 2048
    # 40 MP admits a 6000x6000 camera field and refuses decompression bombs
    # such as the 20000x20000 image of issue 8.
    max_image_pixels: int = 40_000_000
    # MDSDYS_STARTER_SEGMENTER: the shipped segmenter trained on real BCCD nuclei, used when the store
    # has none of its own (models/starter/MODEL_CARD.md); "" turns it off. None here = off, so a
    # Settings built by hand (tests, scripts) never picks it up by surprise.
    starter_segmenter: Path | None = None


def load_settings() -> Settings:
    """Read the settings from MDSDYS_* environment variables, with defaults next to the repository."""
    home = Path(os.environ.get("MDSDYS_HOME", REPO_ROOT)).expanduser()
    return Settings(
        home=home,
        db_path=Path(os.environ.get("MDSDYS_DB", home / "labels.db")).expanduser(),
        models_dir=Path(os.environ.get("MDSDYS_MODELS", home / "models")).expanduser(),
        demo=os.environ.get("MDSDYS_DEMO", "") == "1",
        max_upload_mb=int(os.environ.get("MDSDYS_MAX_UPLOAD_MB", "1024")),
        max_import_mb=int(os.environ.get("MDSDYS_MAX_IMPORT_MB", "2048")),
        max_image_pixels=int(os.environ.get("MDSDYS_MAX_IMAGE_PIXELS", "40000000")),
        starter_segmenter=_optional_path(os.environ.get("MDSDYS_STARTER_SEGMENTER", str(STARTER_SEGMENTER))),
    )


@dataclass(frozen=True)
class AuthLimits:
    """Login and session limits (issue 15 items 1-5, issue 14 item 4); each has an MDSDYS_* override."""

    # 5 failures per name per 15 minutes: 480 guesses a day against one name, well under what any
    # password that passes mdsdys.accounts.rules falls to.
    max_failures: int = 5             # MDSDYS_LOGIN_MAX_FAILURES
    lockout_minutes: int = 15         # MDSDYS_LOGIN_LOCKOUT_MINUTES
    # Failed attempts per minute over all names together: a name-spraying attacker is slowed to this,
    # and the audit log grows by at most this many rows a minute.
    max_failures_per_minute: int = 30  # MDSDYS_LOGIN_RATE_PER_MINUTE
    idle_minutes: int = 30            # MDSDYS_SESSION_IDLE_MINUTES: a login with no activity for this long ends
    session_hours: int = 12           # MDSDYS_SESSION_HOURS: every login ends after this, however active


def load_auth_limits() -> AuthLimits:
    """Read the login and session limits from MDSDYS_* environment variables."""
    env = os.environ.get
    return AuthLimits(
        max_failures=int(env("MDSDYS_LOGIN_MAX_FAILURES", "5")),
        lockout_minutes=int(env("MDSDYS_LOGIN_LOCKOUT_MINUTES", "15")),
        max_failures_per_minute=int(env("MDSDYS_LOGIN_RATE_PER_MINUTE", "30")),
        idle_minutes=int(env("MDSDYS_SESSION_IDLE_MINUTES", "30")),
        session_hours=int(env("MDSDYS_SESSION_HOURS", "12")),
    )


def _optional_path(value: str) -> Path | None:
    """A path from an environment variable, or None when it is set to the empty string."""
    return Path(value).expanduser() if value.strip() else None
