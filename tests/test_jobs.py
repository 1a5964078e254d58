"""The background worker: jobs run in-process and in a real subprocess, survive kills, and cancel."""

import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from mdsdys.config import load_settings
from mdsdys.demo.study import build_demo
from mdsdys.demo.synth import generate_cell
from mdsdys.errors import MdsdysError
from mdsdys.ingest.importer import SourceFile, import_cells
from mdsdys.jobs import queue, worker
from mdsdys.store import connect
from mdsdys.store.audit import list_audit
from mdsdys.store.jobs import get_job, has_active_job, request_cancel
from mdsdys.store.models import active_model, list_models

TINY = {"epochs": 2, "steps_per_epoch": 2, "batch_size": 2, "crop": 64, "max_seconds": None,
        "unet": {"depth": 2, "width": 4}}
LONG = TINY | {"epochs": 500, "steps_per_epoch": 20}


@pytest.fixture
def settings(home):
    with connect(home / "labels.db") as db:
        build_demo(db, seed=0, patches_per_slide=4)  # 3 slides x 2 masked fields = 6 masks
    return load_settings()


def _wait(predicate, timeout=60.0, step=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def _job(settings, job_id):
    with connect(settings.db_path) as db:
        return get_job(db, job_id)


def _any_job_active(settings) -> bool:
    with connect(settings.db_path) as db:
        return has_active_job(db)


def _png(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _start_worker(settings) -> subprocess.Popen:
    env = os.environ | {"MDSDYS_HOME": str(settings.home)}
    return subprocess.Popen([sys.executable, "-m", "mdsdys.cli", "worker", "--idle-exit", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_a_training_job_runs_in_process_and_reports_epochs(settings):
    job_id = queue.enqueue(settings, "train_segmenter", {"settings": TINY}, None, start_worker=False)
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert worker.run_worker(settings, idle_exit_s=0, max_jobs=1) == 1
    assert os.getpriority(os.PRIO_PROCESS, 0) == own  # only the `mdsdys worker` process lowers its own
    job = _job(settings, job_id)
    assert job.state == "done", job.error
    assert [h["epoch"] for h in job.progress["history"]] == [1, 2]
    with connect(settings.db_path) as db:
        assert active_model(db, "segmenter").version == job.progress["result"]["version"]
        assert list_audit(db, action="job_queue")
        queued = db.execute("SELECT kind, params FROM jobs WHERE id > ?", [job_id]).fetchall()
    # The first segmenter is active at once, so detection on every slide follows it.
    assert [kind for kind, _ in queued] == ["segment_slides"]
    assert worker.run_worker(settings, idle_exit_s=0, max_jobs=1) == 1
    with connect(settings.db_path) as db:
        fields = db.execute("SELECT COUNT(*) FROM patches WHERE kind = 'field'").fetchone()[0]
        scored = db.execute("SELECT COUNT(*) FROM field_uncertainty").fetchone()[0]
    assert scored == fields > 0


def _wait_exit(process: subprocess.Popen, timeout: float) -> int:
    """The worker's exit code; on a timeout it is killed and its output shown."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output = process.communicate()[0].decode(errors="replace")
        raise AssertionError(f"the worker did not exit within {timeout:.0f} s:\n{output[-3000:]}") from None


def test_a_job_runs_in_a_real_worker_subprocess_at_a_lower_priority_and_exits_when_idle(settings):
    job_id = queue.enqueue(settings, "train_segmenter", {"settings": TINY}, None, start_worker=False)
    own = os.getpriority(os.PRIO_PROCESS, 0)
    process = _start_worker(settings)
    lowered = min(own + worker.WORKER_NICENESS, 19)
    assert _wait(lambda: os.getpriority(os.PRIO_PROCESS, process.pid) == lowered, timeout=60)
    assert _wait(lambda: _job(settings, job_id).state == "done", timeout=120), _job(settings, job_id)
    # The first segmenter queues detection on every slide; the worker takes that too, then idles out.
    assert _wait(lambda: not _any_job_active(settings), timeout=180)
    assert _wait_exit(process, timeout=60) == 0
    assert os.getpriority(os.PRIO_PROCESS, 0) == own  # the test's own process kept its priority


def test_kill_9_mid_training_marks_the_job_failed_and_keeps_the_active_model(settings):
    job_id = queue.enqueue(settings, "train_segmenter", {"settings": LONG}, None, start_worker=False)
    process = _start_worker(settings)
    assert _wait(lambda: _job(settings, job_id).progress.get("epoch", 0) >= 1, timeout=120)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    assert _job(settings, job_id).state == "running"  # nobody knows yet
    worker.run_worker(settings, idle_exit_s=0, max_jobs=0)  # the next worker cleans up at start
    job = _job(settings, job_id)
    assert job.state == "failed" and "worker running this job stopped" in job.error
    with connect(settings.db_path) as db:
        assert active_model(db, "segmenter") is None and list_models(db) == []
    leftovers = list(settings.models_dir.glob("*")) if settings.models_dir.exists() else []
    assert leftovers == []


def test_cancel_stops_a_running_job_within_seconds(settings):
    job_id = queue.enqueue(settings, "train_segmenter", {"settings": LONG}, None, start_worker=False)
    process = _start_worker(settings)
    assert _wait(lambda: _job(settings, job_id).state == "running", timeout=60)
    with connect(settings.db_path) as db:
        request_cancel(db, job_id)
    asked = time.monotonic()
    assert _wait(lambda: _job(settings, job_id).state == "cancelled", timeout=30)
    assert time.monotonic() - asked < 10
    _wait_exit(process, timeout=60)
    with connect(settings.db_path) as db:
        assert list_models(db) == []


def test_a_queued_job_is_cancelled_at_once(settings):
    job_id = queue.enqueue(settings, "train_segmenter", {"settings": TINY}, None, start_worker=False)
    with connect(settings.db_path) as db:
        assert request_cancel(db, job_id) == "cancelled"
    assert worker.run_worker(settings, idle_exit_s=0, max_jobs=1) == 0


def test_only_one_worker_runs_at_a_time(settings):
    job_id = queue.enqueue(settings, "train_segmenter", {"settings": LONG}, None, start_worker=False)
    process = _start_worker(settings)
    assert _wait(lambda: _job(settings, job_id).state == "running", timeout=60)
    assert queue.worker_alive(settings)
    assert worker.run_worker(settings, idle_exit_s=0) == 0  # refused: the lock is held
    with connect(settings.db_path) as db:
        request_cancel(db, job_id)
    _wait_exit(process, timeout=60)
    assert not queue.worker_alive(settings)


def test_bad_settings_and_unknown_jobs_are_refused(settings):
    with pytest.raises(MdsdysError, match="Unknown job kind"):
        queue.enqueue(settings, "mine_bitcoin", {}, None, start_worker=False)
    job_id = queue.enqueue(settings, "train_segmenter", {"settings": {"epochz": 3}}, None, start_worker=False)
    worker.run_worker(settings, idle_exit_s=0, max_jobs=1)
    assert "Unknown setting 'epochz'" in _job(settings, job_id).error


@pytest.mark.slow
def test_demo_bootstrap_trains_both_models_detects_and_proposes(home):
    with connect(home / "labels.db") as db:
        # 14 a class: the 10 training labels a candidate needs (registry.retrain.MIN_TRAIN_PER_CLASS).
        build_demo(db, seed=0, patches_per_slide=4, with_cells=False, training_cells_per_class=14)
    settings = load_settings()
    params = {"segmenter": TINY, "classifier": {"epochs": 4, "batch_size": 8, "input_size": 32}}
    job_id = queue.enqueue(settings, "demo_bootstrap", params, None, start_worker=False)
    worker.run_worker(settings, idle_exit_s=0, max_jobs=1)
    job = _job(settings, job_id)
    assert job.state == "done", job.error
    with connect(settings.db_path) as db:
        assert active_model(db, "segmenter") and active_model(db, "classifier", "mds8")
        # The bootstrap detects and proposes itself: it queues no follow-up queue.
        assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1
        detected = db.execute("SELECT COUNT(*) FROM cells WHERE source = 'detected'").fetchone()[0]
        proposed = db.execute("SELECT COUNT(*) FROM proposals").fetchone()[0]
    assert job.progress["result"]["detection"]["added"] == detected
    assert proposed >= detected + 8 * 14


def test_a_classifier_retrain_fine_tunes_the_active_model_unless_told_not_to(home):
    """Issue 13: the worker's retrain starts from the active classifier's weights; the page can turn it off."""
    from mdsdys.registry.retrain import classifier_preview
    with connect(home / "labels.db") as db:
        build_demo(db, seed=0, patches_per_slide=1, with_cells=False, training_cells_per_class=14)
    settings = load_settings()
    run = {"epochs": 3, "batch_size": 8, "input_size": 32, "scheme": "mds8"}
    results = []
    for n, overrides in enumerate((run, run, run | {"fine_tune": {"enabled": False}})):
        with connect(settings.db_path) as db:
            db.execute("DELETE FROM jobs WHERE kind = 'propose_slides'")  # the first model's follow-up: not needed here
            if n:  # a lab's next labels: a few cells new to the active model
                rng = np.random.default_rng(n)
                files = [SourceFile(f"{code}/new{i}.png", lambda c=code: _png(generate_cell(rng, c, 40)[0]))
                         for code in ("EN", "GN") for i in range(3)]
                assert import_cells(db, f"NEW-{n}", files, scheme_name="mds8").ok
        job_id = queue.enqueue(settings, "train_classifier", {"settings": overrides}, None, start_worker=False)
        worker.run_worker(settings, idle_exit_s=0, max_jobs=1)
        job = _job(settings, job_id)
        assert job.state == "done", job.error
        results.append(job.progress["result"])
    first = results[0]["version"]
    assert results[0]["start"] == "from scratch (no active classifier)"
    assert results[1]["start"] == f"fine-tuned from the active {first}"  # the second stays a candidate
    assert results[2]["start"] == "from scratch (fine-tuning turned off)"
    with connect(settings.db_path) as db:
        assert f"from the active {first}'s weights" in classifier_preview(db, "mds8")["start"]
        started = {m.version: m.metrics["start"] for m in list_models(db, "classifier")}
    assert started[results[1]["version"]] == results[1]["start"]


@pytest.mark.slow
def test_cancelling_a_classifier_run_ends_cancelled_not_failed(settings):
    long_run = {"epochs": 500, "batch_size": 8, "input_size": 32}
    job_id = queue.enqueue(settings, "train_classifier", {"settings": long_run}, None, start_worker=False)
    process = _start_worker(settings)
    assert _wait(lambda: _job(settings, job_id).progress.get("epoch", 0) >= 1, timeout=180)
    with connect(settings.db_path) as db:
        request_cancel(db, job_id)
    assert _wait(lambda: _job(settings, job_id).state == "cancelled", timeout=60), _job(settings, job_id)
    _wait_exit(process, timeout=60)
    with connect(settings.db_path) as db:
        assert active_model(db, "classifier", "mds8") is None


def test_every_kind_of_job_the_queue_takes_has_a_handler_and_no_handler_is_unknown():
    from mdsdys.jobs.handlers import HANDLERS, job_handler

    assert set(HANDLERS) == set(queue.JOB_KINDS)
    with pytest.raises(ValueError, match="JOB_KINDS"):
        job_handler("not_a_kind")(lambda ctx: {})
