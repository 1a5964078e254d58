"""Dashboard speed at the paper's scale (issue 7): 555,052 cells on 58 slides.

Goal: the dashboard renders in <= 1 s of server time. Measures the library call for each label
source and a full render of the Dashboard page through Streamlit's AppTest, on a seeded store.

    python bench/dashboard.py [--json FILE] [--cells N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from seed import PAPER_CELLS, seed_paper_scale, user_id  # noqa: E402

from mdsdys.report import numbers as dashboard  # noqa: E402
from mdsdys.store import connect  # noqa: E402
from mdsdys.store.users import get_user  # noqa: E402


def machine() -> str:
    """One line describing this machine."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def time_library(db_path: Path, judge_id: int, repeats: int = 5) -> dict[str, float]:
    """Median seconds of dashboard() per label source."""
    result = {}
    with connect(db_path) as db:
        judge = get_user(db, judge_id)
        for source in ("final", "human", "model"):
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                dashboard.dashboard(db, judge, source)
                times.append(time.perf_counter() - start)
            result[source] = statistics.median(times)
    return result


def time_page(db_path: Path, judge_id: int, repeats: int = 3) -> float:
    """Median seconds for a full server-side render of the Dashboard page (AppTest)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from conftest import open_page
    os.environ["MDSDYS_DB"] = str(db_path)
    times = []
    at = open_page("pages/6_Dashboard.py", judge_id, timeout=120)
    assert not at.exception, at.exception
    for _ in range(repeats):
        start = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--cells", type=int, default=PAPER_CELLS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        db_path = Path(folder) / "labels.db"
        seeded = seed_paper_scale(db_path, cells=args.cells)
        judge = user_id(db_path, "judge")
        library = time_library(db_path, judge)
        page = time_page(db_path, judge)
    figures = {"machine": machine(), "data": f"{args.cells:,} seeded cells on 58 slides, 8,065 read twice",
               "seed_seconds": seeded["seconds"], "library_seconds": library, "page_render_seconds": page,
               "goal_seconds": 1.0, "meets_goal": page <= 1.0}
    print(f"Machine: {figures['machine']}\nData: {figures['data']} (seeded in {seeded['seconds']} s)\n")
    print("| measure | seconds | goal |\n|---|---|---|")
    for source, seconds in library.items():
        print(f"| dashboard() '{source}' labels | {seconds:.3f} | |")
    print(f"| Dashboard page render (AppTest, server) | {page:.3f} | <= 1.0 |")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
