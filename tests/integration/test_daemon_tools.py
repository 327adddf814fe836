"""End to end through a real daemon: each shipped tool in its sandbox, schema rejection, unknown tools,
ceilings, request size, and the environment a tool's handler gets."""

from __future__ import annotations

import json
import os

import grpc
import pytest
from daemon_harness import Daemon, daemon_fixture

from sandboxd.cli.client import SandboxdError

pytestmark = pytest.mark.root

ENV_PROBE = """
description = "print the handler's environment"
argv = ["/usr/bin/env"]
[env]
allow = ["TZ"]
set = { GREETING = "hello" }
secrets = ["DEMO_API_KEY"]
"""

daemon = daemon_fixture(
    tools={"env_probe": ENV_PROBE},
    env={"TZ": "Europe/Oslo", "DEMO_API_KEY": "granted", "SANDBOXD_TEST_TOKEN": "leak",
         "DATABASE_URL": "postgres://leak", "AWS_SECRET_ACCESS_KEY": "leak"},
)


def refusal(daemon: Daemon, tool: str, params: object, **kwargs: object) -> SandboxdError:
    with daemon.client() as client, pytest.raises(SandboxdError) as caught:
        client.run_tool(tool, params, **kwargs)  # type: ignore[arg-type]
    return caught.value


def test_python_tool(daemon: Daemon) -> None:
    with daemon.client() as client:
        outcome = client.run_tool("python", {"code": "import os, sys\nprint(6 * 7, os.getuid(), sys.stdin.read())"},
                                  stdin=b"from stdin")
        assert outcome.status_name == "OK", outcome.result
        assert outcome.started is not None and outcome.started.seccomp_profile == "python"
        # a uid of its own, from the daemon's [sandbox] ids, and the Started event says which
        assert outcome.started.uid in daemon.ids and outcome.started.uid != daemon.ids.shared_gid
        assert outcome.stdout == f"42 {outcome.started.uid} from stdin\n".encode()

        failed = client.run_tool("python", {"code": "raise ValueError('bad input')"})
        assert (failed.status_name, failed.result.exit_code) == ("NONZERO_EXIT", 1)
        assert b"ValueError: bad input" in failed.stderr

        # The python profile refuses other socket families (EPERM) and kills on ptrace.
        refused = client.run_tool("python", {"code": "import socket\ntry:\n    socket.socket()\nexcept OSError as e:"
                                             "\n    print(e.errno)"})
        assert refused.stdout == b"1\n", refused.stderr
        killed = client.run_tool("python", {"code": "import ctypes; ctypes.CDLL(None).syscall(101, 0, 0, 0, 0)"})
        assert killed.status_name == "SECCOMP_VIOLATION"
        assert killed.result.seccomp_syscall_name == "ptrace"


def test_python_tool_per_call_limit(daemon: Daemon) -> None:
    with daemon.client() as client:
        outcome = client.run_tool("python", {"code": "import time; time.sleep(20)"}, limits={"wall_time_ms": 500})
    assert outcome.status_name == "TIMEOUT"
    assert outcome.started is not None and outcome.started.limits.wall_time_ms == 500


def test_file_processor_tool(daemon: Daemon) -> None:
    files = daemon.state_dir / "files"
    (files / "notes.md").write_text("alpha beta\ngamma\nbeta again\n")
    (files / "escape").symlink_to("/etc")
    with daemon.client() as client:
        count = client.run_tool("file_processor", {"operation": "count", "path": "notes.md"})
        assert json.loads(count.stdout) == {"lines": 3, "words": 5, "bytes": 28}, count.stderr
        grep = client.run_tool("file_processor", {"operation": "grep", "path": "notes.md", "pattern": "beta"})
        assert grep.stdout == b"1:alpha beta\n3:beta again\n"
        head = client.run_tool("file_processor", {"operation": "head", "path": "notes.md", "lines": 1})
        assert head.stdout == b"alpha beta\n"
        query = client.run_tool("file_processor", {"operation": "json_query", "path": "inventory.json",
                                                   "query": "warehouse.items[0]"})
        assert json.loads(query.stdout) == {"sku": "A-1", "count": 3}
        listing = client.run_tool("file_processor", {"operation": "list"})
        assert b'"name": "notes.md"' in listing.stdout
        escaped = client.run_tool("file_processor", {"operation": "list", "path": "escape"})
        assert escaped.status_name == "NONZERO_EXIT" and b"outside the allowed directory" in escaped.stderr
    error = refusal(daemon, "file_processor", {"operation": "head", "path": "../../etc/shadow"})
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PARAMS")
    assert "$.path" in error.message


def test_sqlite_query_tool(daemon: Daemon) -> None:
    with daemon.client() as client:
        rows = client.run_tool("sqlite_query", {"sql": "select name from tools order by name"})
        assert rows.status_name == "OK", rows.stderr
        assert json.loads(rows.stdout)["rows"] == [["file_processor"], ["python"], ["sqlite_query"]]
        written = client.run_tool("sqlite_query", {"sql": "delete from measurements"})
        assert written.status_name == "NONZERO_EXIT" and b"readonly" in written.stderr
        attached = client.run_tool("sqlite_query", {"sql": "attach database '/tmp/x.db' as x"})
        assert attached.status_name == "NONZERO_EXIT" and b"not authorized" in attached.stderr
        again = client.run_tool("sqlite_query", {"sql": "select count(*) from measurements"})
        assert json.loads(again.stdout)["rows"] == [[5]]


def test_schema_rejection_names_the_json_path(daemon: Daemon) -> None:
    error = refusal(daemon, "python", {"code": 42})
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PARAMS")
    assert "$.code: 42 is not of type 'string'" in error.message
    error = refusal(daemon, "sqlite_query", {"sql": "select 1", "unexpected": True})
    assert "Additional properties are not allowed ('unexpected' was unexpected)" in error.message


def test_unknown_tool(daemon: Daemon) -> None:
    error = refusal(daemon, "no_such_tool", {})
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_TOOL")
    done = daemon.ctl("run", "no_such_tool")
    assert done.returncode == 125
    assert b"NOT_FOUND (UNKNOWN_TOOL)" in done.stderr


def test_limits_above_the_ceiling(daemon: Daemon) -> None:
    error = refusal(daemon, "file_processor", {"operation": "list"}, limits={"memory_max_bytes": 1 << 30})
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "LIMIT_ABOVE_CEILING")
    assert "memory_max_bytes" in error.message


def test_request_too_large(daemon: Daemon) -> None:
    error = refusal(daemon, "python", {"code": "print(1)"}, stdin=b"x" * (1024 * 1024 + 1))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PAYLOAD_TOO_LARGE")


def test_handler_environment_is_clean(daemon: Daemon) -> None:
    with daemon.client() as client:
        outcome = client.run_tool("env_probe", {})
    env = dict(line.split("=", 1) for line in outcome.stdout.decode().splitlines())
    assert env == {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/work", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
                   "TZ": "Europe/Oslo", "GREETING": "hello", "DEMO_API_KEY": "granted"}
    assert "leak" not in outcome.stdout.decode()
    assert os.environ.get("SANDBOXD_TEST_TOKEN") is None  # the secret lived only in the daemon's env
