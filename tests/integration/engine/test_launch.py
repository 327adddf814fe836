"""The handler gets exactly the argv and environment of its request — byte for byte, nothing added, empty and
non-ASCII strings, values holding ``=`` and newlines — found on its PATH as a shell would find it; a program
that cannot be found or run is a setup failure naming why. Fresh and pooled (the launch reads the gate of a
pooled sandbox, the launch file of one built on the request)."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from sandboxd.engine.result import Status
from sandboxd.engine.spec import BindMount

from .conftest import Engine

SHOW = "import json, os, sys; print(json.dumps([sys.argv[1:], dict(os.environ)]))"


def test_argv_and_environment_arrive_exactly(engine: Engine) -> None:
    argv = ["", "two words", "ünïcode ✓", "a=b", "-", "line\nbreak"]
    env = {"EMPTY": "", "MANY_EQUALS": "x=y=z", "NEWLINE": "a\nb", "PATH": "/usr/bin:/bin", "UNICODE": "é",
           "PYTHONCOERCECLOCALE": "0"}  # the last: python3 adds no LC_CTYPE of its own
    run = engine.run(engine.spec("/usr/bin/python3", "-c", SHOW, *argv, env=env))
    assert run.result.status is Status.OK, run.result
    got_argv, got_env = json.loads(run.stdout)
    assert got_argv == argv
    assert got_env == env  # nothing of the daemon's, the spawner's or the helpers' own


def test_the_handler_is_found_on_its_path(engine: Engine, tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "hello").write_text("#!/bin/sh\necho found \"$0\"\n")
    (tools / "hello").chmod(0o755)
    (tools / "data").mkdir()  # a directory of the name is skipped, as a shell skips it
    bind = BindMount(tools, PurePosixPath("/opt/tools"))
    # empty entries and a trailing slash, before the directory that has it
    env = {"PATH": "::/nonexistent:/opt/tools/:/usr/bin"}
    run = engine.run(engine.spec("hello", binds=(bind,), env=env))
    assert run.result.status is Status.OK, run.result
    assert run.stdout == b"found /opt/tools/hello\n"


def test_a_program_not_on_the_path_names_the_path_searched(engine: Engine) -> None:
    run = engine.run(engine.spec("no-such-tool", env={"PATH": "/nowhere:/usr/bin"}))
    assert run.result.status is Status.SETUP_FAILED, run.result
    assert run.result.setup_stage == "find handler"
    assert run.result.message == ("handler not found or not executable: no-such-tool (searched "
                                  "PATH=/nowhere:/usr/bin)")
    assert run.result.setup_errno == 2


def test_a_binary_that_execve_refuses_is_named_with_the_kernels_reason(engine: Engine, tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "garbage").write_bytes(b"\x7fELF not really")
    (tools / "garbage").chmod(0o755)
    bind = BindMount(tools, PurePosixPath("/opt/bad"))
    run = engine.run(engine.spec("/opt/bad/garbage", binds=(bind,)))
    assert run.result.status is Status.SETUP_FAILED, run.result
    assert run.result.setup_stage == "execve"
    assert run.result.message == "execve: Exec format error"
