"""The library's map (issue 16): layers as import-linter contracts, no cycles, SQL only in the store,
pages that reach neither the store nor torch, and pages that render without loading torch."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import grimp
import pytest
from importlinter import cli as importlinter_cli

REPO = Path(__file__).resolve().parent.parent
LIBRARY = REPO / "mdsdys"
PAGES = [REPO / "app.py", *sorted((REPO / "pages").glob("*.py"))]
# Pages that run a model to render: Consensus shows each disputed cell's Grad-CAM, Train runs the
# promotion gate. Every other page loads torch only when a user asks for a model (Grad-CAM on
# Review, "Score the active classifier" on the Dashboard, "Start from the model's mask" on Annotate).
MODEL_PAGES = {"4_Consensus.py", "5_Train.py"}
SQL = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|PRAGMA\s|BEGIN\s)",
                 re.IGNORECASE | re.DOTALL)


def test_the_layer_contracts_in_pyproject_hold():
    assert importlinter_cli.lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True) == 0


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), i.e. import cycles."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_the_import_graph_has_no_cycles():
    graph = grimp.build_graph("mdsdys")
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
    package = tmp_path / "cyclepkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from cyclepkg import b\n")
    (package / "b.py").write_text("from cyclepkg import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _cycles(grimp.build_graph("cyclepkg", cache_dir=None)) == [["cyclepkg.a", "cyclepkg.b"]]


def _imports_inside_functions(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("mdsdys"):
                    found.append(f"{path.relative_to(REPO)}:{inner.lineno} {inner.module}")
                elif isinstance(inner, ast.Import):
                    found += [f"{path.relative_to(REPO)}:{inner.lineno} {a.name}" for a in inner.names
                              if a.name.startswith("mdsdys")]
    return found


def test_no_library_module_imports_inside_a_function():
    """Such imports hide cycles. The CLI alone defers its model commands' imports, so `mdsdys status` starts fast."""
    offenders = [hit for path in sorted(LIBRARY.rglob("*.py")) if path.name != "cli.py"
                 for hit in _imports_inside_functions(path)]
    assert offenders == []


def _string_constants(path: Path) -> list[str]:
    return [n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_sql_lives_only_in_the_store():
    offenders = [str(path.relative_to(REPO)) for path in [*sorted(LIBRARY.rglob("*.py")), *PAGES]
                 if "store" not in path.relative_to(REPO).parts and any(SQL.search(s) for s in _string_constants(path))]
    assert offenders == []


def test_the_sql_check_would_see_a_query():
    assert SQL.search("SELECT id FROM cells WHERE slide_id = ?") and SQL.search("insert or replace into audit (id)")
    assert not SQL.search("Select the slide to review")


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_pages_call_the_app_adapter_and_domain_packages_never_the_store_or_torch(page):
    imported = _imported_modules(page)
    assert not {m for m in imported if m.startswith(("mdsdys.store", "torch", "sqlite"))}


RENDER_SCRIPT = """
import json, os, sys
from pathlib import Path
from streamlit.testing.v1 import AppTest
from mdsdys.accounts.sessions import start_session
from mdsdys.demo.study import build_demo
from mdsdys.store import connect
from mdsdys.store.users import find_user

home = Path(sys.argv[1])
with connect(home / "labels.db") as db:
    build_demo(db, seed=0, patches_per_slide=2)
    admin, _ = find_user(db, "admin")
    token = start_session(db, admin)
result = {}
for page in json.loads(sys.argv[2]):
    at = AppTest.from_file(str(Path(sys.argv[3]) / "app.py"), default_timeout=60)
    at.session_state["mdsdys_session"] = token  # logged in, as the login form leaves it (ui._SESSION_KEY)
    at.run()
    if page != "app.py":
        at.switch_page(page).run()
    logged_in = any("Logged in as" in m.value for m in at.sidebar.markdown)
    result[page] = {"torch": "torch" in sys.modules, "exception": bool(at.exception), "logged_in": logged_in}
print(json.dumps(result))
"""


@pytest.mark.slow
def test_pages_that_run_no_model_render_without_loading_torch(tmp_path):
    pages = [str(p.relative_to(REPO)) for p in PAGES if p.name not in MODEL_PAGES]
    env = {"MDSDYS_HOME": str(tmp_path), "MDSDYS_DEMO": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", RENDER_SCRIPT, str(tmp_path), json.dumps(pages), str(REPO)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result) == set(pages)
    assert {page: r for page, r in result.items() if r["torch"] or r["exception"] or not r["logged_in"]} == {}


def test_the_status_command_runs_without_loading_torch(home):
    script = "import sys\nfrom mdsdys.cli import main\nmain(['status'])\nprint('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={"MDSDYS_HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"
