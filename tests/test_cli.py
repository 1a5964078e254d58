"""The `mdsdys` command line, run as a user would run it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import image_bytes

from mdsdys.cli import build_parser

REPO = Path(__file__).resolve().parent.parent


def _mdsdys(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = os.environ | {"MDSDYS_HOME": str(home)}
    env.pop("MDSDYS_DB", None)
    return subprocess.run([sys.executable, "-m", "mdsdys.cli", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_status_json_prints_every_count(home):
    result = _mdsdys(home, "status", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout) == dict.fromkeys(
        ["slides", "patches", "masks", "cells", "reads", "consensus", "models", "jobs"], 0)


def test_import_with_a_bad_file_names_it_and_exits_non_zero(home, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.png").write_bytes(image_bytes(1))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    result = _mdsdys(home, "import-patches", str(folder), "--slide", "S1")
    assert result.returncode == 1
    assert "broken.jpg" in result.stderr and "1 added" in result.stdout
    assert json.loads(_mdsdys(home, "status", "--json").stdout)["patches"] == 1


def test_import_of_a_missing_folder_is_a_clear_error(home):
    result = _mdsdys(home, "import-cells", "/no/such/folder", "--slide", "S1")
    assert result.returncode == 2 and "is not a folder" in result.stderr


def test_create_user_reads_the_password_from_stdin(home):
    result = _mdsdys(home, "create-user", "boss", "--role", "admin", "--password-stdin", stdin="long-enough-pw\n")
    assert result.returncode == 0 and "Created admin boss" in result.stdout


def test_load_scheme_refuses_duplicate_hotkeys(home, tmp_path):
    path = tmp_path / "dup.json"
    path.write_text(json.dumps({"name": "dup", "classes": [
        {"code": "A", "lineage": "x", "hotkey": "1"}, {"code": "B", "lineage": "x", "hotkey": "1"}]}))
    result = _mdsdys(home, "load-scheme", str(path))
    assert result.returncode == 2 and "hotkey '1' twice" in result.stderr


def test_demo_no_serve_builds_the_synthetic_study(home):
    result = _mdsdys(home, "demo", "--no-serve", "--home", str(home / "demo"))
    assert result.returncode == 0, result.stderr
    env_home = home / "demo"
    counts = json.loads(subprocess.run(
        [sys.executable, "-m", "mdsdys.cli", "status", "--json"], env=os.environ | {"MDSDYS_HOME": str(env_home)},
        capture_output=True, text=True, timeout=60).stdout)
    # 3 field slides waiting for the segmenter + the labelled training slide; the first models are queued.
    assert counts["slides"] == 4 and counts["masks"] > 0 and counts["cells"] == 8 * 24
    assert counts["jobs"] == 1 and "in the background" in result.stdout
    again = _mdsdys(home, "demo", "--no-serve", "--home", str(home / "demo"))
    assert "already present" in again.stdout and "in the background" not in again.stdout


@pytest.mark.parametrize("command", sorted(build_parser()._subparsers._group_actions[0].choices))
def test_every_cli_command_is_documented_in_the_readme(command):
    assert f"mdsdys {command}" in (REPO / "README.md").read_text()
