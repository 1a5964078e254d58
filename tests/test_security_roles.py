"""Security: one role policy, and every public write of the library refuses a reader and a disabled account.

The walk is built by introspection: any public function under mdsdys/ (outside the store, the
Streamlit adapter, the CLI and the demo) that takes a user is called with a reader and with a
disabled account. A new write function without a policy check fails here until it has one.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re

import numpy as np
import pytest
from conftest import REPO_ROOT

from mdsdys.accounts import policy
from mdsdys.classify.train import ClsTrainConfig
from mdsdys.config import load_settings
from mdsdys.demo.study import build_demo
from mdsdys.errors import PermissionDeniedError
from mdsdys.ingest.importer import SourceFile, run_import
from mdsdys.jobs import queue
from mdsdys.schemes import default_scheme
from mdsdys.segment.train import SegTrainConfig
from mdsdys.store.audit import list_audit
from mdsdys.store.cells import list_cells
from mdsdys.store.jobs import get_job, insert_job
from mdsdys.store.patches import list_patches
from mdsdys.store.slides import find_scheme_id, list_slides
from mdsdys.store.users import User, find_user

OUTSIDE_THE_WALK = ("mdsdys/store/", "mdsdys/app/", "mdsdys/demo/", "mdsdys/cli.py", "mdsdys/__main__.py")
# Functions that take a user but are not writes: the policy itself and pure checks. Views are not
# listed here: each is either refused too, or shown below (test_views_that_take_a_user_write_nothing)
# to write nothing.
NOT_ACTIONS = {
    "mdsdys.accounts.policy.can", "mdsdys.accounts.policy.require", "mdsdys.accounts.policy.allowed_actions",
    "mdsdys.accounts.sessions.start_session",  # called only after authenticate() has let the user in
    "mdsdys.review.reads.require_blind", "mdsdys.report.numbers.blind_viewer",
    "mdsdys.report.numbers.allowed_sources", "mdsdys.review.consensus.may_settle",
}
VIEWS = {  # read-only for whoever asks; a reader sees only what is theirs or the model's
    "mdsdys.annotate.masks.current_mask", "mdsdys.report.numbers.dashboard", "mdsdys.report.numbers.cell_labels",
    "mdsdys.review.explain.cell_grad_cam",
}
# What a reader may do (policy "review", "annotate", "report_view", "export_note"): refused only when disabled.
READER_MAY = {
    "mdsdys.review.reads.record_read", "mdsdys.review.reads.accept_proposal", "mdsdys.review.reads.undo_read",
    "mdsdys.review.reads.load_cell_view", "mdsdys.review.reads.load_crops", "mdsdys.review.reads.next_cell",
    "mdsdys.annotate.masks.save_annotation", "mdsdys.annotate.scale.set_slide_diameter",
    "mdsdys.report.export.slide_report_html", "mdsdys.accounts.admin.record_export",
    # issues 17 and 18: a reader's own count, progress, cell names, place on the scan, can't-assess and
    # calibration answers, and a slide's µm per pixel (annotating)
    "mdsdys.review.reads.record_unassessable", "mdsdys.review.reads.review_progress", "mdsdys.review.reads.cell_labels",
    "mdsdys.review.counting.reader_states", "mdsdys.review.counting.slide_states", "mdsdys.review.location.cell_place",
    "mdsdys.review.gold.answer", "mdsdys.review.gold.take_back", "mdsdys.annotate.scale.set_slide_um_per_px",
}
USER_PARAMS = ("user", "viewer", "by", "admin")


def _modules() -> list[str]:
    names = []
    for path in sorted((REPO_ROOT / "mdsdys").rglob("*.py")):
        relative = path.relative_to(REPO_ROOT).as_posix()
        if not relative.startswith(OUTSIDE_THE_WALK) and path.name != "__init__.py":
            names.append(relative[:-3].replace("/", "."))
    return names


def user_taking_functions() -> dict[str, object]:
    """Every public function of the library (outside the walk's exclusions) with a user parameter."""
    found = {}
    for name in _modules():
        module = importlib.import_module(name)
        for fname, function in inspect.getmembers(module, inspect.isfunction):
            if fname.startswith("_") or function.__module__ != name:
                continue
            if any(p in inspect.signature(function).parameters for p in USER_PARAMS):
                found[f"{name}.{fname}"] = function
    return found


@pytest.fixture
def world(db, home, tmp_path):
    """The demo study, a queued job, a disabled reader, and arguments by parameter name."""
    build_demo(db, seed=0, patches_per_slide=1)
    users = {n: find_user(db, n)[0] for n in ("admin", "reader1", "reader2", "adjudicator")}
    slide = list_slides(db)[0]
    cells = list_cells(db, slide.id)
    job_id = insert_job(db, "train_segmenter", {}, users["adjudicator"].id)
    disabled = dataclasses.replace(users["reader2"], active=False)
    args = {
        "db": db, "settings": load_settings(), "user_id": users["reader2"].id, "cell_id": cells[0].id,
        "cell_ids": [cells[0].id], "slide_id": slide.id, "patch_id": list_patches(db, slide.id)[0]["id"],
        "job_id": job_id, "model_id": 1, "mask": np.zeros((8, 8), np.uint8), "role": "admin",
        "password": "a-fine-long-passphrase", "active": False, "scheme": default_scheme(), "params": {},
        "overrides": {}, "code": "EN", "tags": [], "reason_code": "other", "allowed": True, "diameter_px": 20.0,
        "slide_name": "NEW-SLIDE", "files": [], "what": "cells_csv", "scheme_name": default_scheme().name,
        "models_dir": tmp_path, "checkpoint": {"kind": "segmenter"}, "username": "newbie",
        "reader_id": users["reader1"].id, "reader_a": users["reader1"].id, "reader_b": users["reader2"].id,
        "action": "review", "config": None,
        # issues 17 and 18: the role check comes before any of these is used
        "name": "erythroid", "cells": 200, "reads": 2, "rate": 0.1, "reason": "debris", "um_per_px": 0.2,
        "reader_ids": [users["reader1"].id, users["reader2"].id], "report": None, "plan": None,
        "calibration": None, "seconds": 1.0, "path": tmp_path / "scan.svs",
    }
    kinds = {"mdsdys.jobs.queue.enqueue": "train_segmenter", "mdsdys.ingest.importer.run_import": "patches",
             "mdsdys.registry.retrain.queue_training": "segmenter"}
    configs = {"mdsdys.registry.retrain.train_classifier_from_store": ClsTrainConfig(),
               "mdsdys.registry.retrain.train_segmenter_from_store": SegTrainConfig()}
    return users, disabled, args, kinds, configs


def _call(name: str, function, who: User, args: dict, kinds: dict, configs: dict):
    """Call a library function with `who` as its user and every other required argument filled by name."""
    values = {}
    for param in inspect.signature(function).parameters.values():
        if param.name in USER_PARAMS:
            values[param.name] = who
        elif param.name == "kind":
            values["kind"] = kinds[name]
        elif param.name == "config" and name in configs:
            values["config"] = configs[name]
        elif param.default is inspect.Parameter.empty:
            assert param.name in args, f"{name}: add an argument for {param.name!r} to the walk's fixture"
            values[param.name] = args[param.name]
    return function(**values)


def test_the_walk_finds_the_library_s_writes():
    found = user_taking_functions()
    for expected in ("mdsdys.ingest.importer.run_import", "mdsdys.jobs.queue.cancel",
                     "mdsdys.review.reads.record_read", "mdsdys.registry.promotion.promote",
                     "mdsdys.accounts.auth.set_active", "mdsdys.report.export.cells_csv"):
        assert expected in found
    assert len(found) >= 40


def _not_refused(who: User, skip: set[str], world) -> list[str]:
    """The functions that did not raise PermissionDeniedError for `who` (and what they did instead)."""
    _, _, args, kinds, configs = world
    let_through = []
    for name, function in user_taking_functions().items():
        if name in skip:
            continue
        try:
            _call(name, function, who, args, kinds, configs)
            let_through.append(f"{name}: ran")
        except PermissionDeniedError:
            pass
        except Exception as exc:  # noqa: BLE001 - any other error means the check came too late or not at all
            let_through.append(f"{name}: {type(exc).__name__}: {exc}")
    return let_through


def test_every_public_write_refuses_a_disabled_account(world):
    _, disabled, _, _, _ = world
    assert _not_refused(disabled, NOT_ACTIONS | VIEWS, world) == []


def test_every_public_write_beyond_review_refuses_a_reader(world):
    users = world[0]
    assert _not_refused(users["reader1"], NOT_ACTIONS | VIEWS | READER_MAY, world) == []


def test_views_that_take_a_user_write_nothing(world):
    users, _, args, kinds, configs = world
    db = args["db"]
    for name in VIEWS:
        function = user_taking_functions()[name]
        before = db.conn.total_changes
        try:
            _call(name, function, users["reader1"], args, kinds, configs)
        except Exception:  # noqa: BLE001 - a refusal or "no model yet" is fine; a write is not
            pass
        assert db.conn.total_changes == before, f"{name} wrote to the store"


def test_a_reader_cannot_import_or_create_a_scheme(world):
    users, _, args, _, _ = world
    db = args["db"]
    files = [SourceFile("EN/a.png", lambda: b"")]
    with pytest.raises(PermissionDeniedError):
        run_import(db, "cells", "EVIL", files, scheme_name="evil-scheme", user=users["reader1"])
    assert find_scheme_id(db, "evil-scheme") is None
    assert not [s for s in list_slides(db) if s.case_id == "EVIL"]


def test_an_adjudicator_cannot_create_a_scheme_through_an_import(world):
    users, _, args, _, _ = world
    db = args["db"]
    with pytest.raises(PermissionDeniedError, match="scheme load"):
        run_import(db, "cells", "S", [SourceFile("EN/a.png", lambda: b"")], scheme_name="new-scheme",
                   user=users["adjudicator"])
    assert find_scheme_id(db, "new-scheme") is None


def test_cancel_is_role_checked_and_audited(world):
    users, disabled, args, _, _ = world
    db, job_id = args["db"], args["job_id"]
    for who in (users["reader1"], dataclasses.replace(users["adjudicator"], active=False)):
        with pytest.raises(PermissionDeniedError):
            queue.cancel(db, who, job_id)
    assert get_job(db, job_id).state == "queued"
    assert queue.cancel(db, users["adjudicator"], job_id) == "cancelled"
    row = list_audit(db, action="job_cancel")[0]
    assert row["username"] == "adjudicator" and '"cancelled"' in row["after"]


def test_pages_never_call_the_store_s_request_cancel():
    for path in [REPO_ROOT / "app.py", *sorted((REPO_ROOT / "pages").glob("*.py"))]:
        assert "request_cancel" not in path.read_text(), path.name


@pytest.mark.parametrize("page", sorted(p.name for p in (REPO_ROOT / "pages").glob("*.py")
                                         if "st.fragment" in p.read_text()))
def test_every_fragment_rechecks_the_login_on_every_rerun(page):
    """A fragment reruns alone, skipping the page's require_login: it must ask the store again first."""
    tree = ast.parse((REPO_ROOT / "pages" / page).read_text())
    fragments = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
                 and any("fragment" in ast.unparse(d) for d in f.decorator_list)]
    assert fragments
    for fragment in fragments:
        body = [s for s in fragment.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
        assert "ui.recheck_login(" in ast.unparse(body[0]), f"{fragment.name} must re-check the login first"


def test_roles_are_named_only_in_the_policy():
    """No role string is compared outside mdsdys/accounts/policy.py (and the store's schema of roles)."""
    pattern = re.compile(r"""(\.role\s*(==|!=|in|not in)|require_role|_ROLES\s*=)""")
    allowed = {"mdsdys/accounts/policy.py", "mdsdys/store/users.py"}
    for path in [*sorted((REPO_ROOT / "mdsdys").rglob("*.py")), *sorted((REPO_ROOT / "pages").glob("*.py")),
                 REPO_ROOT / "app.py"]:
        relative = path.relative_to(REPO_ROOT).as_posix()
        if relative not in allowed:
            assert not pattern.search(path.read_text()), f"{relative} decides on a role itself; use policy.can"


def test_policy_refuses_unknown_actions_and_anonymous_users():
    with pytest.raises(ValueError, match="Unknown action"):
        policy.can(User(1, "a", "admin"), "launch_missiles")
    assert not policy.can(None, "review")
    assert policy.can(User(1, "a", "admin"), "user_manage")
    assert not policy.can(User(1, "a", "admin", active=False), "user_manage")
    assert policy.allowed_actions(User(2, "r", "reader")) == [a for a, roles in policy.ACTIONS.items()
                                                              if "reader" in roles]
