"""sandboxctl against a real daemon: run (params, stdin, exit codes, live output, --json), tools, ps, info,
health, and the socket from $SANDBOXD_SOCKET."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from daemon_harness import Daemon, daemon_fixture

pytestmark = pytest.mark.root

daemon = daemon_fixture()


def test_run_streams_output_and_exits_with_the_tools_code(daemon: Daemon) -> None:
    done = daemon.ctl("run", "python", "--param", "code=import sys; print('out'); sys.exit(7)")
    assert (done.returncode, done.stdout) == (7, b"out\n")
    assert b"sandboxctl: NONZERO_EXIT" in done.stderr


def test_run_params_follow_the_schema(daemon: Daemon, tmp_path: Path) -> None:
    # "code" is a string in the schema: "1" stays text; "lines" is an integer: 1 is parsed as JSON.
    assert daemon.ctl("run", "python", "--param", "code=1").returncode == 0
    (daemon.state_dir / "files" / "three.txt").write_text("a\nb\nc\n")
    done = daemon.ctl("run", "file_processor", "--param", "operation=head", "--param", "path=three.txt",
                      "--param", "lines=2")
    assert (done.returncode, done.stdout) == (0, b"a\nb\n"), done.stderr
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"code": "import sys; print(sys.stdin.read().upper())"}))
    data = tmp_path / "data.txt"
    data.write_text("shout")
    done = daemon.ctl("run", "python", "--params-json", f"@{params}", "--stdin", str(data))
    assert (done.returncode, done.stdout) == (0, b"SHOUT\n")
    done = daemon.ctl("run", "python", "--params-json", '{"code": "import sys; print(sys.stdin.read())"}',
                      "--stdin", "-", stdin=b"piped")
    assert done.stdout == b"piped\n"


def test_run_schema_rejection_is_125(daemon: Daemon) -> None:
    done = daemon.ctl("run", "file_processor", "--param", "operation=shred")
    assert done.returncode == 125
    assert b"INVALID_ARGUMENT (INVALID_PARAMS)" in done.stderr and b"$.operation" in done.stderr


def test_run_limits_and_killed_exit_code(daemon: Daemon) -> None:
    done = daemon.ctl("run", "python", "--param", "code=import time; time.sleep(30)", "--timeout", "300ms")
    assert done.returncode == 137
    assert b"sandboxctl: TIMEOUT" in done.stderr
    done = daemon.ctl("run", "python", "--param", "code=1", "--memory", "64G")
    assert done.returncode == 125 and b"LIMIT_ABOVE_CEILING" in done.stderr


def test_run_json(daemon: Daemon) -> None:
    done = daemon.ctl("run", "--json", "python", "--param", "code=print(42)", "--request-id", "req-9",
                      "--label", "team=blue")
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [next(iter(line)) for line in lines] == ["audit", "started", "audit", "output", "audit", "result"]
    assert [line["audit"]["event"] for line in lines if "audit" in line] == [
        "decision", "execution.started", "execution.finished"]
    assert lines[1]["started"]["requestId"] == "req-9" and lines[1]["started"]["tool"] == "python"
    assert lines[3]["output"]["data"] == "NDIK"  # b"42\n"
    assert lines[-1]["result"]["status"] == "OK"
    assert done.returncode == 0 and done.stderr == b""


def test_output_is_live(daemon: Daemon) -> None:
    code = "import time\nprint('first', flush=True)\ntime.sleep(3)\nprint('second')"
    process = daemon.ctl_popen("run", "python", "--param", f"code={code}")
    assert process.stdout is not None
    started = time.monotonic()
    assert process.stdout.readline() == b"first\n"
    assert time.monotonic() - started < 2.5  # before the handler finished
    out, _ = process.communicate(timeout=30)
    assert out == b"second\n" and process.returncode == 0


def test_tools(daemon: Daemon) -> None:
    done = daemon.ctl("tools")
    assert done.returncode == 0
    lines = done.stdout.decode().splitlines()
    names = [line.split()[0] for line in lines[1:] if not line.startswith(" ")]  # continuation lines are indented
    assert names == ["file_processor", "http_fetch", "python", "sqlite_query"]
    column = lines[0].index("DESCRIPTION")
    assert max(len(line) for line in lines) <= column + 60  # descriptions wrapped at words, not cut
    wide = daemon.ctl("tools", "--wide").stdout.decode().splitlines()
    assert len(wide) == 5
    for tool in (json.loads(line) for line in daemon.ctl("tools", "--json").stdout.splitlines()):
        described = " ".join(tool["description"].split())
        assert described in " ".join(" ".join(lines).split())  # every word, in order
        assert any(line.endswith(described) for line in wide)
    tools = [json.loads(line) for line in daemon.ctl("tools", "--json").stdout.splitlines()]
    python = next(tool for tool in tools if tool["name"] == "python")
    assert json.loads(python["paramsSchemaJson"])["required"] == ["code"]
    assert python["limits"]["memoryMaxBytes"] == str(256 * 1024 * 1024)


def test_ps_and_cancel(daemon: Daemon) -> None:
    process = daemon.ctl_popen("run", "--json", "python", "--param", "code=import time; time.sleep(30)",
                               "--request-id", "sleepy")
    assert process.stdout is not None
    while "started" not in json.loads(process.stdout.readline()):
        pass
    listed = daemon.ctl("ps")
    assert listed.returncode == 0
    header, row = listed.stdout.decode().splitlines()
    assert header.split()[:3] == ["ID", "TOOL", "PID"]
    execution_id = row.split()[0]
    assert row.split()[1] == "python" and "sleepy" in row
    [item] = [json.loads(line) for line in daemon.ctl("ps", "--json").stdout.splitlines()]
    assert item["executionId"] == execution_id and item["requestId"] == "sleepy"
    assert daemon.ctl("cancel", execution_id).returncode == 0
    out, _ = process.communicate(timeout=30)
    assert json.loads(out.splitlines()[-1])["result"]["status"] == "CANCELLED"
    assert process.returncode == 137
    missing = daemon.ctl("cancel", execution_id)
    assert missing.returncode == 125 and b"EXECUTION_NOT_FOUND" in missing.stderr


def test_info_and_health(daemon: Daemon) -> None:
    assert daemon.ctl("exec", "--", "/bin/true").returncode == 0
    assert daemon.ctl("run", "nope").returncode == 125
    info = daemon.ctl("info")
    assert info.returncode == 0
    text = info.stdout.decode()
    assert f"instance:       {daemon.instance}" in text
    assert "cgroup:         v" in text and "features:" in text
    assert "you are:        local-admin (admin)" in text
    assert f"config:         {daemon.config_path}, loaded " in text
    assert re.search(r"uptime:         \d+(m\d\ds|s) \(since ", text), text
    assert re.search(r"executions:     0 running, at most \d+; [1-9]\d* finished, [1-9]\d* refused", text), text
    assert f"audit log:      {daemon.audit_log} (last seq " in text
    data = json.loads(daemon.ctl("info", "--json").stdout)
    assert data["instance"] == daemon.instance and data["cgroupBackend"] in ("v1", "v2")
    assert int(data["uptimeMs"]) > 0 and int(data["executionsTotal"]) >= 1
    assert data["kernelFeatures"]["seccomp_filter"] is True
    health = daemon.ctl("health", "--json")
    assert (health.returncode, json.loads(health.stdout)) == (0, {"status": "SERVING"})


def test_socket_from_the_environment(daemon: Daemon) -> None:
    import subprocess

    from daemon_harness import SANDBOXCTL

    env = {**os.environ, "SANDBOXD_SOCKET": str(daemon.socket)}
    done = subprocess.run([str(SANDBOXCTL), "health"], capture_output=True, env=env, timeout=30)
    assert (done.returncode, done.stdout) == (0, b"SERVING\n")
    env["SANDBOXD_SOCKET"] = str(daemon.root / "nothing-here.sock")
    done = subprocess.run([str(SANDBOXCTL), "health"], capture_output=True, env=env, timeout=30)
    assert done.returncode == 125 and b"no socket at" in done.stderr and b"sandboxd is not running" in done.stderr


@pytest.mark.parametrize("launched_with_sigint", ["default", "ignored"])
def test_interrupt_cancels_the_execution(daemon: Daemon, launched_with_sigint: str) -> None:
    # nohup, CI runners and service managers start children with SIGINT ignored; sandboxd's ^C must work anyway
    import signal

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN if launched_with_sigint == "ignored" else signal.SIG_DFL)
    try:
        process = daemon.ctl_popen("exec", "--json", "--", "/bin/sleep", "30")  # inherits the disposition
    finally:
        signal.signal(signal.SIGINT, previous)
    assert process.stdout is not None
    while "started" not in json.loads(process.stdout.readline()):
        pass
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=30)
    assert process.returncode == 130
    deadline = time.monotonic() + 10
    while daemon.ctl("ps", "--json").stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    assert daemon.ctl("ps", "--json").stdout == b""  # the daemon killed what the caller abandoned
