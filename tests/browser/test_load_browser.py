"""Two readers review at once while a classifier trains in the worker (issue 8, short version of
bench/load.py): nothing lost, nothing duplicated, no "database is locked"."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .concurrency import (
    cancel_job,
    create_readers,
    job_state,
    queue_long_training,
    run_sessions,
    summarise,
)
from .server import build_demo_home, start_server, stop_server

pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright package: pip install -e '.[dev]'")
pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def load_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_home(tmp_path_factory.mktemp("load-home"))


@pytest.fixture(scope="module")
def load_server(load_home: Path) -> Iterator[str]:
    server = start_server(load_home)
    try:
        yield server.base_url
    finally:
        stop_server(server)


def test_two_readers_at_once_during_training_lose_nothing(load_server: str, load_home: Path) -> None:
    readers = create_readers(load_home, "loadtest", 2)
    job = queue_long_training(load_home, epochs=300)  # far longer than the test; cancelled below
    try:
        sessions = run_sessions(load_server, load_home, readers, presses=5)
        state_during = job_state(load_home, job)
    finally:
        cancel_job(load_home, job)
    row = summarise(load_home, sessions)
    assert row["session_errors"] == []
    assert row["presses"] == 10
    assert (row["lost"], row["duplicated"], row["unconfirmed"], row["locked_errors"], row["exception_boxes"]) == (
        0, 0, 0, 0, 0), row
    # A press the server never received is pressed again (see concurrency.MAX_REPRESSES); most runs have none.
    assert row["repressed"] <= 2, row
    assert state_during in ("queued", "running"), f"the training job was {state_during} during the test"
