"""Every page through Streamlit's AppTest: login required, smoke render, thin pages."""

import ast
from pathlib import Path

import pytest
from conftest import open_page
from streamlit.testing.v1 import AppTest

from mdsdys.accounts import auth, setup
from mdsdys.demo.study import build_demo
from mdsdys.store import connect
from mdsdys.store.users import find_user

REPO = Path(__file__).resolve().parent.parent
PAGES = ["app.py", *sorted(str(p.relative_to(REPO)) for p in (REPO / "pages").glob("*.py"))]
TIMEOUT = 30


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    home = tmp_path_factory.mktemp("demo")
    with connect(home / "labels.db") as db:
        build_demo(db, seed=0, patches_per_slide=2)
    return home


@pytest.fixture
def demo_env(demo_store, monkeypatch):
    monkeypatch.setenv("MDSDYS_HOME", str(demo_store))
    monkeypatch.setenv("MDSDYS_DEMO", "1")
    monkeypatch.delenv("MDSDYS_DB", raising=False)
    return demo_store


def _as(home: Path, username: str, page: str) -> AppTest:
    with connect(home / "labels.db") as db:
        user, _ = find_user(db, username)
    return open_page(page, user.id)


def test_there_are_home_and_eight_pages():
    names = [Path(p).stem.split("_", 1)[-1] for p in PAGES[1:]]
    assert names == ["Import", "Annotate", "Review", "Consensus", "Train", "Dashboard", "Admin", "Readers"]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_refuses_a_visitor_who_is_not_logged_in(demo_env, page):
    at = AppTest.from_file(str(REPO / page), default_timeout=TIMEOUT).run()
    assert not at.exception
    assert [b.label for b in at.button] == ["Log in"] or any(b.label == "Log in" for b in at.button)
    assert not at.dataframe and not at.metric
    assert "reader1" in " ".join(i.value for i in at.info)  # demo accounts are shown in demo mode


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_for_an_admin_without_exceptions(demo_env, page):
    at = _as(demo_env, "admin", page)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


@pytest.mark.parametrize("page", ["pages/1_Import.py", "pages/4_Consensus.py", "pages/5_Train.py", "pages/7_Admin.py",
                                  "pages/8_Readers.py"])
def test_a_reader_is_refused_pages_for_other_roles(demo_env, page):
    at = _as(demo_env, "reader1", page)
    assert not at.exception
    assert at.error and "reader" in at.error[0].value
    assert not at.dataframe and not at.metric


def test_home_shows_the_demo_counts(demo_env):
    at = _as(demo_env, "reader1", "app.py")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Slides"] == "4" and int(metrics["Cells"]) > 0


def test_login_form_logs_a_reader_in(demo_env):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    at.text_input(key="login_username").input("reader1")
    at.text_input(key="login_password").input("demo-reader-1")
    at.button[0].click().run()
    assert not at.exception and at.session_state["mdsdys_session"]
    assert {m.label for m in at.metric} >= {"Slides", "Cells"}


def test_a_wrong_password_shows_an_error_and_logs_nobody_in(demo_env):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    at.text_input(key="login_username").input("reader1")
    at.text_input(key="login_password").input("not-the-password")
    at.button[0].click().run()
    assert "Wrong user name or password" in at.error[0].value
    assert "mdsdys_session" not in at.session_state


def test_first_run_creates_the_admin_account(home):
    with connect(home / "labels.db") as db:
        token = setup.issue_setup_token(db)  # what `mdsdys serve` prints on a new store (issue 15, item 22)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    at.text_input(key="first_admin_token").input(token)
    at.text_input(key="first_admin_username").input("boss")
    at.text_input(key="first_admin_password").input("a-long-password")
    at.text_input(key="first_admin_again").input("a-long-password")
    at.button[0].click().run()
    assert not at.exception and not at.error
    with connect(home / "labels.db") as db:
        user, _ = find_user(db, "boss")
    assert user.role == "admin" and at.session_state["mdsdys_session"]


def test_admin_adds_a_reader_through_the_admin_page(demo_env):
    at = _as(demo_env, "admin", "pages/7_Admin.py")
    at.text_input(key="new_username").input("newreader")
    at.text_input(key="new_password").input("ward-robe-42")
    next(b for b in at.button if b.label == "Add account").click().run()
    assert not at.error, [e.value for e in at.error]
    with connect(demo_env / "labels.db") as db:
        assert auth.authenticate(db, "newreader", "ward-robe-42").role == "reader"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("page", PAGES)
def test_pages_hold_no_sql_and_no_model_code(page):
    source = (REPO / page).read_text()
    assert not _imports(REPO / page) & {"sqlite3", "sqlite_utils", "torch", "torchvision"}
    assert "SELECT " not in source and "INSERT " not in source


def test_only_the_ui_adapter_imports_streamlit():
    offenders = [p.name for p in (REPO / "mdsdys").rglob("*.py") if "streamlit" in _imports(p) and p.name != "ui.py"]
    assert offenders == []


def test_a_reader_corrects_the_slide_scale_on_the_annotate_page(home, monkeypatch):
    with connect(home / "labels.db") as db:
        build_demo(db, seed=0, patches_per_slide=2)
    at = _as(home, "reader1", "pages/2_Annotate.py")
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Nucleus diameter on slide" in m.value for m in at.markdown)
    diameter = next(n for n in at.number_input if n.key.startswith("annotate_diameter_"))  # one box per slide
    diameter.set_value(27.5)
    next(b for b in at.button if b.label == "Set the slide's scale").click().run()
    assert not at.error, [e.value for e in at.error]
    assert any("Saved 27.5 px" in s.value for s in at.success)
    assert any("27.5 px (set by a person)" in m.value for m in at.markdown)
