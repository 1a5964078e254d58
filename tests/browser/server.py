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

from mdsdys.config import Settings
from mdsdys.demo.study import build_demo
from mdsdys.jobs import queue
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
    home: Path

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's combined stdout and stderr."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def settings_for(home: Path) -> Settings:
    """The app's settings for a demo home (what the server sees with MDSDYS_HOME=home)."""
    return Settings(home=home, db_path=home / "labels.db", models_dir=home / "models", demo=True)


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
    server = DemoServer(process, f"http://127.0.0.1:{port}", log_path, home)
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
    """Stop the server's whole process group (SIGTERM, then SIGKILL after `grace_s`), then its store's worker."""
    if server.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=grace_s)
    stop_worker(server.home, grace_s)


def stop_worker(home: Path, grace_s: float = 10.0) -> None:
    """Kill every worker process of the store in `home` (started with MDSDYS_HOME = home), and wait for them.

    The app starts its worker in a session of its own, so that jobs outlive a restarted server; a test's
    worker would otherwise go on detecting or training through the tests after it (the killed-import
    test's detection of 400 fields ran for 18 minutes) and starve their workers.
    """
    for pid in worker_pids(home):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace_s
    while queue.worker_alive(settings_for(home)):  # a dead worker's lock is released with its files
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker of {home} did not stop within {grace_s:.0f} s")
        time.sleep(0.1)


def worker_pids(home: Path) -> list[int]:
    """Pids of `mdsdys.cli worker` processes whose MDSDYS_HOME is `home` (Linux /proc)."""
    wanted = {f"MDSDYS_HOME={path}".encode() for path in (home, home.resolve())}
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours
            continue
        if b"mdsdys.cli" in command and b"worker" in command and wanted & set(environment):
            pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def running_server(home: Path, port: int | None = None, extra_args: Sequence[str] = (),
                   extra_env: Mapping[str, str] | None = None) -> Iterator[DemoServer]:
    """A demo server on `home` for the length of the with-block."""
    server = start_server(home, port, extra_args=extra_args, extra_env=extra_env)
    try:
        yield server
    finally:
        stop_server(server)
