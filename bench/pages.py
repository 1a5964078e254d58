"""Pages without torch (issue 16): server memory after Home, Review and Dashboard, and cold start, before and after.

For each code revision compared (this checkout, and `--before REV` checked out into a temporary git
worktree), in one run:
- builds the demo study (synthetic, no models) in a fresh home;
- starts `streamlit run app.py` from that revision and times the cold start: process start to the
  health check, and to the login form drawn in Chromium (the first page);
- logs in as the demo admin and opens Home, Review (Grad-CAM off) and Dashboard in turn, reading the
  server process's resident memory after each page and whether torch is loaded in it
  (libtorch in /proc/PID/maps).

    python bench/pages.py --before 3439ebf --json test-output/bench-pages.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for tests.browser; the tests are not an installed package
PAGES = ("Home", "Review", "Dashboard")
BUILD = """
import sys
from pathlib import Path
try:
    from mdsdys.demo.study import build_demo
except ImportError:  # revisions before issue 16's layout
    from mdsdys.demo import build_demo
from mdsdys.store import connect
with connect(Path(sys.argv[1]) / "labels.db") as db:
    build_demo(db, seed=0, patches_per_slide=4)
"""


def machine() -> str:
    """One line about this machine."""
    load = os.getloadavg()[0]
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, load {load:.1f}"


def rss_mb(pid: int) -> float:
    """Resident memory of one process, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def torch_loaded(pid: int) -> bool:
    """Whether the process has mapped libtorch (imported torch)."""
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


@contextmanager
def server(repo: Path, home: Path, port: int):
    """`streamlit run app.py` from `repo` on the store in `home`; yields (process, seconds to health ok)."""
    env = os.environ | {"MDSDYS_HOME": str(home), "MDSDYS_DEMO": "1", "PYTHONPATH": str(repo)}
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
               "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none"]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                time.sleep(0.05)
            if time.perf_counter() - start > 120:
                raise RuntimeError("the server did not start within 120 s")
        yield process, time.perf_counter() - start, start
    finally:
        process.terminate()
        process.wait(timeout=30)


def measure(repo: Path, port: int) -> dict:
    """Cold start and per-page memory of the app at `repo`."""
    from playwright.sync_api import sync_playwright

    from tests.browser.actions import open_sidebar_page, submit_login, wait_for_app
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        subprocess.run([sys.executable, "-c", BUILD, str(home)], check=True, cwd=repo,
                       env=os.environ | {"PYTHONPATH": str(repo)})
        with server(repo, home, port) as (process, health_s, started), sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.get_by_role("button", name="Log in").wait_for(timeout=120_000)
            figures = {"health_s": round(health_s, 2), "first_page_s": round(time.perf_counter() - started, 2),
                       "rss_mb_at_login": round(rss_mb(process.pid))}
            submit_login(page, "admin", "demo-admin-pass")
            page.get_by_text("Logged in as").first.wait_for(timeout=120_000)
            wait_for_app(page)
            for name in PAGES:
                if name != "Home":
                    open_sidebar_page(page, name)
                time.sleep(1.0)  # let the server settle before reading its memory
                figures[f"rss_mb_after_{name.lower()}"] = round(rss_mb(process.pid))
                figures[f"torch_after_{name.lower()}"] = torch_loaded(process.pid)
            browser.close()
    return figures


@contextmanager
def checkout(rev: str):
    """The repository at `rev` in a temporary git worktree."""
    folder = Path(tempfile.mkdtemp(prefix="mdsdys-before-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(folder), rev], cwd=REPO, check=True,
                   capture_output=True)
    try:
        yield folder
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=REPO, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a git revision to compare with (e.g. the commit before issue 16)")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    results = {"machine": machine(), "data": "the demo study (3 synthetic slides x 4 fields), no models"}
    if args.before:
        with checkout(args.before) as old:
            results["before"] = measure(old, 8601) | {"rev": args.before}
    results["after"] = measure(REPO, 8602)
    print(f"Machine: {results['machine']}\nData: {results['data']}\n")
    print("| measure | " + " | ".join(k for k in ("before", "after") if k in results) + " |")
    print("|---|" + "---|" * sum(k in results for k in ("before", "after")))
    for key in results["after"]:
        print(f"| {key} | " + " | ".join(str(results[k].get(key)) for k in ("before", "after") if k in results) + " |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
