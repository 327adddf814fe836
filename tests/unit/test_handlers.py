"""The shipped handlers' logic, run directly under the system python3 (the sandbox is tested end to end in
tests/integration/test_daemon_tools.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sandboxd.server.config import SHIPPED_HANDLERS_DIR
from sandboxd.server.registry import encode_params_line
from sandboxd.server.state_dir import prepare_state_dir

PYTHON = shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3"


def run(handler: str, params: dict[str, Any], *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-I", "-S", "-B", str(SHIPPED_HANDLERS_DIR / f"{handler}.py"), *args],
        input=(encode_params_line(params) + stdin).decode(), capture_output=True, text=True, timeout=30,
    )


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("state")
    prepare_state_dir(path).release()
    return path


def test_python_runs_the_snippet_with_args_and_stdin() -> None:
    done = run("python_runner", {"code": "import sys; print(sys.argv[1:], sys.stdin.read())", "args": ["a"]},
               stdin=b"rest of stdin")
    assert (done.returncode, done.stdout) == (0, "['a'] rest of stdin\n")


def test_python_exit_status_and_traceback() -> None:
    assert run("python_runner", {"code": "raise SystemExit(4)"}).returncode == 4
    done = run("python_runner", {"code": "def f():\n    1/0\nf()"})
    assert done.returncode == 1
    assert "ZeroDivisionError" in done.stderr and '"<snippet>", line 3' in done.stderr
    assert "python_runner" not in done.stderr  # the runner's own frames are not shown
    syntax = run("python_runner", {"code": "print("})
    assert syntax.returncode == 1 and "SyntaxError" in syntax.stderr


def test_file_processor_operations(state: Path) -> None:
    files = str(state / "files")
    count = run("file_processor", {"operation": "count", "path": "hello.txt"}, files)
    assert json.loads(count.stdout) == {"lines": 3, "words": 13, "bytes": 81}
    grep = run("file_processor", {"operation": "grep", "path": "hello.txt", "pattern": "HELLO", "ignore_case": True},
               files)
    assert grep.stdout == "1:hello from sandboxd\n3:hello again\n"
    head = run("file_processor", {"operation": "head", "path": "hello.txt", "lines": 1}, files)
    assert head.stdout == "hello from sandboxd\n"
    query = run("file_processor", {"operation": "json_query", "path": "inventory.json",
                                   "query": "warehouse.items.*.sku"}, files)
    assert query.stdout.splitlines() == ['"A-1"', '"B-2"']
    assert run("file_processor", {"operation": "json_query", "path": "inventory.json",
                                  "query": "warehouse.items[1].count"}, files).stdout == "0\n"
    listing = run("file_processor", {"operation": "list"}, files)
    assert [json.loads(line)["name"] for line in listing.stdout.splitlines()] == ["hello.txt", "inventory.json"]


@pytest.mark.parametrize(
    ("params", "code", "words"),
    [({"operation": "head", "path": "absent.txt"}, 2, "no such file"),
     ({"operation": "head", "path": "../x"}, 2, "without '..'"),
     ({"operation": "grep", "path": "hello.txt", "pattern": "("}, 2, "invalid pattern"),
     ({"operation": "json_query", "path": "hello.txt", "query": "a"}, 2, "not JSON"),
     ({"operation": "json_query", "path": "inventory.json", "query": "nothing.here"}, 1, "nothing at")],
)
def test_file_processor_errors(state: Path, params: dict[str, Any], code: int, words: str) -> None:
    done = run("file_processor", params, str(state / "files"))
    assert done.returncode == code and words in done.stderr, done.stderr


def test_file_processor_refuses_symlinks_out(state: Path, tmp_path: Path) -> None:
    root = tmp_path / "allowed"
    root.mkdir()
    (root / "escape").symlink_to(state / "sqlite")
    done = run("file_processor", {"operation": "list", "path": "escape"}, str(root))
    assert done.returncode == 2 and "outside the allowed directory" in done.stderr


def test_sqlite_query_reads(state: Path) -> None:
    db = str(state / "sqlite" / "sample.db")
    done = run("sqlite_query", {"sql": "select city, celsius from measurements where city = ? order by id",
                                "params": ["Oslo"]}, db)
    assert json.loads(done.stdout) == {"columns": ["city", "celsius"], "rows": [["Oslo", -3.5], ["Oslo", 1.0]],
                                       "row_count": 2, "truncated": False}
    limited = json.loads(run("sqlite_query", {"sql": "select * from measurements", "max_rows": 2}, db).stdout)
    assert limited["row_count"] == 2 and limited["truncated"] is True
    blob = json.loads(run("sqlite_query", {"sql": "select x'00ff'"}, db).stdout)
    assert blob["rows"] == [[{"base64": "AP8="}]]


@pytest.mark.parametrize(
    ("sql", "words"),
    [("insert into tools values ('x', 'y')", "readonly"),
     ("delete from measurements", "readonly"),
     ("attach database '/tmp/x.db' as other", "not authorized"),
     ("pragma query_only = off", "not authorized"),
     ("select 1; select 2", "one statement"),
     ("select * from nowhere", "no such table")],
)
def test_sqlite_query_is_read_only(state: Path, sql: str, words: str) -> None:
    done = run("sqlite_query", {"sql": sql}, str(state / "sqlite" / "sample.db"))
    assert done.returncode == 2 and words in done.stderr, done.stderr
