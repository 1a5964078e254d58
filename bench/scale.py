"""Speed at the paper's scale (issue 8): 555,052 cells on 58 slides, measured in one run.

Measures, on a freshly seeded store:
- the next-cell query and record-a-read in the library, p50/p95 (goal p95 <= 50 ms);
- a whole review action (click a class, page reruns) through AppTest, p95 (goal <= 150 ms);
- a key press to the next cell shown in real Chromium against `streamlit run`, p50 / p95 (issue 16 goal:
  <= 150 / <= 300 ms; the Review page's cell panel is an st.fragment), with the server's CPU seconds per
  review action and the readers per core that implies (one action every READER_PACE_S seconds each);
- the Dashboard page render through AppTest (goal <= 1 s);
- the Streamlit server process's resident memory after the browser session (goal <= 1 GiB).

    python bench/scale.py [--json FILE] [--cells N] [--no-browser]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench"), str(ROOT), str(ROOT / "tests")]

from dashboard import machine, time_page  # noqa: E402
from seed import PAPER_CELLS, seed_paper_scale, user_id  # noqa: E402

from mdsdys.review import reads as review  # noqa: E402
from mdsdys.store import connect  # noqa: E402
from mdsdys.store.slides import find_slide  # noqa: E402
from mdsdys.store.users import get_user  # noqa: E402

BROWSER_KEYS = 30
READER_PACE_S = 3.0  # a reader who labels a cell every 3 s (a fast one; most take longer)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _summary(values: list[float]) -> dict[str, float]:
    return {"p50_ms": 1000 * percentile(values, 50), "p95_ms": 1000 * percentile(values, 95), "n": len(values)}


def time_store(db_path: Path, reader_id: int, slide_case: str, n: int = 200) -> dict[str, dict[str, float]]:
    """Next-cell query and record-a-read, each timed n times, alternating as a reader works."""
    next_times, read_times = [], []
    with connect(db_path) as db:
        reader = get_user(db, reader_id)
        slide_id = find_slide(db, slide_case).id
        for _ in range(n):
            start = time.perf_counter()
            cell_id = review.next_cell(db, reader, slide_id, "uncertain")
            next_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            review.record_read(db, reader, cell_id, "GN", seconds=1.0)
            read_times.append(time.perf_counter() - start)
    return {"next_cell": _summary(next_times), "record_read": _summary(read_times)}


def time_apptest_review(db_path: Path, reader_id: int, n: int = 40) -> list[float]:
    """A whole review action through AppTest (press a class button, the page reruns with the next cell); seconds each."""
    from conftest import open_page
    os.environ["MDSDYS_DB"] = str(db_path)
    at = open_page("pages/3_Review.py", reader_id, timeout=120)
    assert not at.exception, at.exception
    times = []
    for i in range(n):
        start = time.perf_counter()
        at.button(key=f"review_class_{'EN' if i % 2 else 'GN'}").click().run()
        times.append(time.perf_counter() - start)
        assert not at.exception, at.exception
    return times


def time_browser(home: Path, reader: str, password: str) -> dict[str, float]:
    """Key press to the next cell on screen in Chromium against the real server; plus the server's RSS."""
    from browser.actions import login, open_sidebar_page
    from browser.server import running_server
    from playwright.sync_api import sync_playwright
    times = []
    with running_server(home) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        login(page, server.base_url, reader, password)
        open_sidebar_page(page, "Review")
        caption = page.get_by_text(re.compile(r"^Cell \d+ ·")).first
        caption.wait_for()
        cpu_before = _cpu_seconds(server.process.pid)
        for i in range(BROWSER_KEYS):
            before = caption.inner_text()
            page.locator("h1").first.click()  # focus the page, not an input, so shortcuts fire
            start = time.perf_counter()
            page.keyboard.press("1" if i % 2 else "3")
            page.wait_for_function("b => !document.body.innerText.includes(b)", arg=before, timeout=20_000)
            times.append(time.perf_counter() - start)
        cpu_per_action = (_cpu_seconds(server.process.pid) - cpu_before) / BROWSER_KEYS
        open_sidebar_page(page, "Dashboard")
        rss = _rss_mb(server.process.pid)
        browser.close()
    return _summary(times) | {"server_rss_mb": rss, "server_cpu_ms_per_action": 1000 * cpu_per_action,
                              "readers_per_core": READER_PACE_S / cpu_per_action}


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MB."""
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = (proc / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if proc.name == str(pid) or fields.get("PPid", "").strip() == str(pid):
            total += int(fields.get("VmRSS", "0 kB").split()[0])
    return total / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--cells", type=int, default=PAPER_CELLS)
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        db_path = home / "labels.db"
        seeded = seed_paper_scale(db_path, cells=args.cells)
        reader1, reader2 = user_id(db_path, "reader1"), user_id(db_path, "reader2")
        figures = {"machine": machine(), "data": f"{args.cells:,} cells on 58 slides, 8,065 read twice",
                   "seed_seconds": seeded["seconds"]}
        figures |= time_store(db_path, reader1, "BM-001")
        figures["apptest_review_action"] = _summary(time_apptest_review(db_path, reader2))
        figures["dashboard_render_s"] = time_page(db_path, user_id(db_path, "judge"))
        if not args.no_browser:
            figures["browser_key_to_next_cell"] = time_browser(home, "reader2", "bench-password")
    _print(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


def _print(f: dict) -> None:
    print(f"Machine: {f['machine']}\nData: {f['data']} (seeded in {f['seed_seconds']} s)\n")
    print("| measure | p50 | p95 | goal |\n|---|---|---|---|")
    print(f"| next-cell query | {f['next_cell']['p50_ms']:.1f} ms | {f['next_cell']['p95_ms']:.1f} ms | p95 <= 50 ms |")
    print(f"| record a read | {f['record_read']['p50_ms']:.1f} ms | {f['record_read']['p95_ms']:.1f} ms | p95 <= 50 ms |")
    a = f["apptest_review_action"]
    print(f"| review action (AppTest) | {a['p50_ms']:.0f} ms | {a['p95_ms']:.0f} ms | p95 <= 150 ms |")
    if "browser_key_to_next_cell" in f:
        b = f["browser_key_to_next_cell"]
        print(f"| key press to next cell (Chromium) | {b['p50_ms']:.0f} ms | {b['p95_ms']:.0f} ms | p50 <= 150, p95 <= 300 ms |")
        print(f"| server CPU per review action | {b['server_cpu_ms_per_action']:.0f} ms | | |")
        print(f"| readers per core (one action every {READER_PACE_S:g} s each) | {b['readers_per_core']:.0f} | | |")
        print(f"| Streamlit server memory | {b['server_rss_mb']:.0f} MB | | <= 1024 MB |")
    print(f"| Dashboard render (AppTest) | {1000 * f['dashboard_render_s']:.0f} ms | | <= 1000 ms |")


if __name__ == "__main__":
    main()
