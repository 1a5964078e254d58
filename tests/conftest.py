"""Shared fixtures: a fresh store per test, pointed to by MDSDYS_* environment variables."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mdsdys.store import connect

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty app home folder that load_settings() points at."""
    monkeypatch.setenv("MDSDYS_HOME", str(tmp_path))
    for name in ("MDSDYS_DB", "MDSDYS_MODELS", "MDSDYS_DEMO"):
        monkeypatch.delenv(name, raising=False)
    # The shipped starter segmenter stays off unless a test turns it on, so "no segmenter yet" stays testable.
    monkeypatch.setenv("MDSDYS_STARTER_SEGMENTER", "")
    return tmp_path


@pytest.fixture
def db(home: Path):
    """A migrated, empty store in the test's home folder."""
    with connect(home / "labels.db") as database:
        yield database


def image_bytes(seed: int = 0, size: tuple[int, int] = (48, 40), fmt: str = "PNG", mode: str = "RGB") -> bytes:
    """A small random image encoded in memory; different seeds give different files."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def requires_shared(*parts: str) -> Path:
    """The path of a shared data folder, skipping the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not present at {path}")
    return path


def login_token(user_id: int) -> str:
    """A live session token for this user, as the login form leaves in the server-side session."""
    from mdsdys.accounts.sessions import start_session
    from mdsdys.config import load_settings
    from mdsdys.store.users import get_user
    with connect(load_settings().db_path) as db:
        return start_session(db, get_user(db, user_id))


def open_page(page: str, user_id: int | None = None, query: dict[str, str] | None = None,
              timeout: float = 60):
    """Run a page as the real app does (app.py is the entry, so page links resolve), logged in as user_id."""
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=timeout)
    if user_id is not None:
        at.session_state["mdsdys_session"] = login_token(user_id)
    at.run()
    if page != "app.py":
        for key, value in (query or {}).items():
            at.query_params[key] = value
        at.switch_page(page)
        at.run()
    return at
