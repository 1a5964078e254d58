"""Security: roles are checked in the library, identity lives only server-side, secrets stay out."""

import ast
import logging
import subprocess

import pytest
from conftest import REPO_ROOT, open_page

from mdsdys.accounts import admin, auth
from mdsdys.config import load_settings
from mdsdys.demo.study import build_demo
from mdsdys.errors import PermissionDeniedError
from mdsdys.registry import retrain
from mdsdys.report import export
from mdsdys.review import consensus, reads
from mdsdys.store.audit import list_audit
from mdsdys.store.cells import list_cells
from mdsdys.store.slides import list_slides
from mdsdys.store.users import find_user
from mdsdys.review.gold import cell_label

SESSION_KEY = "mdsdys_session"


@pytest.fixture
def demo(db):
    build_demo(db, seed=0, patches_per_slide=1)
    users = {name: find_user(db, name)[0] for name in ("admin", "reader1", "reader2", "adjudicator")}
    slide = list_slides(db)[0]
    return users, slide, list_cells(db, slide.id)


def test_every_privileged_action_refuses_a_reader(db, demo):
    users, slide, cells = demo
    reader = users["reader1"]
    attempts = [
        lambda: auth.create_user(db, "eve", "password-e", "admin", by=reader),
        lambda: auth.change_role(db, reader, reader.id, "admin"),
        lambda: auth.reset_password(db, reader, users["reader2"].id, "new-password"),
        lambda: admin.audit_rows(db, reader),
        lambda: consensus.consensus_queue(db, reader),
        lambda: consensus.set_readers_may_settle(db, reader, True),
        lambda: export.cells_csv(db, reader, slide.id),
        lambda: export.crops_zip(db, reader, slide.id),
        lambda: retrain.queue_training(load_settings(), reader, "segmenter", {}),
    ]
    for attempt in attempts:
        with pytest.raises(PermissionDeniedError):
            attempt()


def test_query_parameters_cannot_log_anyone_in(db, demo, home, monkeypatch):
    monkeypatch.setenv("MDSDYS_DEMO", "1")
    users, _, _ = demo
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=60)
    for key, value in {"user": "admin", SESSION_KEY: str(users["admin"].id), "mdsdys_user_id": str(users["admin"].id),
                       "s": "x" * 43, "role": "admin"}.items():
        at.query_params[key] = value
    at.run()
    assert any(b.label == "Log in" for b in at.button) and not at.metric


def test_no_widget_can_write_the_session_user(db):
    """Only server code sets the logged-in user; no widget key (which a browser could drive) is that key."""
    for path in [REPO_ROOT / "app.py", *sorted((REPO_ROOT / "pages").glob("*.py")), REPO_ROOT / "mdsdys" / "app" / "ui.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "key" and isinstance(node.value, ast.Constant):
                assert node.value.value != SESSION_KEY, f"{path.name} has a widget keyed {SESSION_KEY}"


def test_a_cell_link_never_shows_another_readers_read(db, demo, home):
    users, slide, cells = demo
    reads.record_read(db, users["reader1"], cells[0].id, "ED", ["nuclear budding"])
    at = open_page("pages/3_Review.py", users["reader2"].id, query={"cell": str(cells[0].id)})
    shown = " ".join(str(e.value) for e in [*at.markdown, *at.info, *at.caption])
    assert f"Cell {cell_label(db, cells[0].id)}" in shown and "ED" not in shown and "nuclear budding" not in shown


def test_passwords_are_never_logged_or_audited(db, caplog):
    caplog.set_level(logging.DEBUG)
    auth.create_user(db, "ann", "sekrit-password-1", "reader")
    auth.authenticate(db, "ann", "sekrit-password-1")
    with pytest.raises(Exception):
        auth.authenticate(db, "ann", "sekrit-password-2")
    assert "sekrit" not in caplog.text
    assert all("sekrit" not in str(row) for row in list_audit(db))


def test_no_secret_is_committed():
    files = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    markers = ("BEGIN RSA PRIVATE KEY", "BEGIN OPENSSH PRIVATE KEY", "BEGIN PRIVATE KEY", "AKIA", "ghp_", "xoxb-")
    for name in files.split():
        path = REPO_ROOT / name
        if path.suffix in {".png", ".jpg", ".pt"} or not path.is_file() or path.name == "test_security.py":
            continue
        text = path.read_text(errors="ignore")
        assert not any(marker in text for marker in markers), f"{name} looks like it holds a secret"
    assert "labels.db" not in files.split()
