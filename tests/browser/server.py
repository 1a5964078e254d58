"""Build the demo study and run the real Streamlit server on it, for browser tests and bench scripts.

Kept out of the `mdsdys` library on purpose: only tests and `bench/screenshot.py` start servers this way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mdsdys.demo.study import build_demo
from mdsdys.store import connect

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
# A cold start imports torch and pandas; 60 s is several times what it takes on a laptop.
STARTUP_TIMEOUT_S = 60.0


class ServerStartError(RuntimeError):
    """The Streamlit server exited or never answered its health check."""


@dataclass
class DemoServer:
    """A running `streamlit run app.py` process and where to reach it."""

    process: subprocess.Popen
    base_url: str
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's combined stdout and stderr."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def build_demo_home(home: Path, seed: int = 0) -> Path:
    """Build the synthetic demo study into `home`/labels.db (a no-op when already built)."""
    home.mkdir(parents=True, exist_ok=True)
    with connect(home / "labels.db") as db:
        build_demo(db, seed=seed)
    return home


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(home: Path, port: int | None = None, timeout_s: float = STARTUP_TIMEOUT_S,
                 extra_args: Sequence[str] = (), extra_env: Mapping[str, str] | None = None) -> DemoServer:
    """Start the app in demo mode on the store in `home`; return once /_stcore/health answers ok.

    `extra_args` go to `streamlit run` (e.g. ["--server.maxUploadSize", "1"]); `extra_env` to the app.
    """
    port = port or free_port()
    env = os.environ.copy() | {"MDSDYS_HOME": str(home), "MDSDYS_DEMO": "1"} | dict(extra_env or {})
    for name in ("MDSDYS_DB", "MDSDYS_MODELS"):  # they would point the app away from `home`
        env.pop(name, None)
    log_path = home / f"streamlit-{port}.log"
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
               "--server.address", "127.0.0.1", "--server.headless", "true",
               "--browser.gatherUsageStats", "false", *extra_args]
    with log_path.open("wb") as log_file:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # own process group, so stop_server reaches children
    server = DemoServer(process, f"http://127.0.0.1:{port}", log_path)
    try:
        _wait_healthy(server, timeout_s)
    except ServerStartError:
        stop_server(server)
        raise
    log.info("Streamlit demo server up at %s", server.base_url)
    return server


def _wait_healthy(server: DemoServer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerStartError(f"Streamlit exited with code {server.process.returncode}:\n{server.log_tail()}")
        if _health(server.base_url) == "ok":
            return
        time.sleep(0.25)
    raise ServerStartError(f"Streamlit did not answer {server.base_url}/_stcore/health within {timeout_s:.0f} s:\n"
                           f"{server.log_tail()}")


def _health(base_url: str) -> str:
    try:
        with urllib.request.urlopen(f"{base_url}/_stcore/health", timeout=2) as response:
            return response.read().decode().strip()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return ""


def stop_server(server: DemoServer, grace_s: float = 10.0) -> None:
    """Stop the server's whole process group: SIGTERM, then SIGKILL after `grace_s`."""
    if server.process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.process.pid, signal.SIGTERM)
    try:
        server.process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=grace_s)


@contextlib.contextmanager
def running_server(home: Path, port: int | None = None, extra_args: Sequence[str] = (),
                   extra_env: Mapping[str, str] | None = None) -> Iterator[DemoServer]:
    """A demo server on `home` for the length of the with-block."""
    server = start_server(home, port, extra_args=extra_args, extra_env=extra_env)
    try:
        yield server
    finally:
        stop_server(server)
