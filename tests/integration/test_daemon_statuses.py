"""Every status an execution can end with, reached through ``sandboxctl exec`` against a real daemon, with
sandboxctl's exit code, its verdict on stderr, and ``--json`` (one event per line, the result last)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import Daemon, daemon_fixture

pytestmark = pytest.mark.root

daemon = daemon_fixture()

PY = "/usr/bin/python3"


def exec_json(daemon: Daemon, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    done = daemon.ctl("exec", "--json", *args)
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events and "result" in events[-1], (done.stdout, done.stderr)
    assert sum(1 for event in events if "result" in event) == 1
    return done.returncode, events, done.stderr.decode()


def result_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = events[-1]["result"]
    return result


def test_ok(daemon: Daemon) -> None:
    done = daemon.ctl("exec", "--", "/bin/sh", "-c", "echo out; echo err >&2")
    assert (done.returncode, done.stdout, done.stderr) == (0, b"out\n", b"err\n")  # no verdict when OK


def test_ok_json(daemon: Daemon) -> None:
    code, events, _ = exec_json(daemon, "--", "/bin/echo", "hi")
    assert code == 0
    kinds = [next(iter(event)) for event in events]
    assert kinds == ["audit", "started", "audit", "output", "audit", "result"]
    assert events[3]["output"] == {"stream": "STDOUT", "data": "aGkK"}  # bytes: base64, per the JSON mapping
    assert result_of(events)["status"] == "OK" and result_of(events)["exitCode"] == 0
    assert events[1]["started"]["limits"]["wallTimeMs"] == "30000"  # uint64: a string, per the JSON mapping


def test_nonzero_exit(daemon: Daemon) -> None:
    done = daemon.ctl("exec", "--", "/bin/sh", "-c", "exit 3")
    assert done.returncode == 3
    assert b"sandboxctl: NONZERO_EXIT" in done.stderr


def test_signaled(daemon: Daemon) -> None:
    code, events, stderr = exec_json(daemon, "--", PY, "-c", "import ctypes; ctypes.string_at(0)")
    assert result_of(events)["status"] == "SIGNALED" and result_of(events)["signal"] == 11
    assert code == 128 + 11
    assert "SIGNALED" in stderr


def test_timeout(daemon: Daemon) -> None:
    started = time.monotonic()
    code, events, stderr = exec_json(daemon, "--timeout", "500ms", "--", "/bin/sleep", "30")
    assert result_of(events)["status"] == "TIMEOUT"
    assert code == 137 and "TIMEOUT" in stderr
    assert time.monotonic() - started < 10


def test_cpu_limit(daemon: Daemon) -> None:
    code, events, _ = exec_json(daemon, "--cpu-time", "500ms", "--", PY, "-c", "while True: pass")
    assert result_of(events)["status"] == "CPU_LIMIT"
    assert code >= 128


def _memory_limit_file(daemon: Daemon, cgroup: str) -> Path:
    from daemon_harness import cgroup_dirs

    for base in cgroup_dirs(daemon.instance):
        if "memory" in base.parts and (base / cgroup).is_dir():
            return base / cgroup / "memory.limit_in_bytes"
        if (base / cgroup / "memory.max").exists():
            return base / cgroup / "memory.max"
    raise AssertionError(f"no memory cgroup {cgroup} of instance {daemon.instance}")


def test_memory_limit(daemon: Daemon) -> None:
    limit = 32 * 1024 * 1024
    # The hog waits a moment, then allocates at most 512M in 4M steps: the test checks the limit is really
    # in place (Started's limits and the cgroup's own file) before the allocation starts, else cancels it.
    hog = "import time; time.sleep(1); x = [bytearray(4 << 20) for _ in range(128)]; print('not limited')"
    process = daemon.ctl_popen("exec", "--json", "--memory", "32M", "--", PY, "-c", hog)
    assert process.stdout is not None
    events = [json.loads(process.stdout.readline())]
    while "started" not in events[-1] and "result" not in events[-1]:
        events.append(json.loads(process.stdout.readline()))
    started = events[-1].get("started")
    assert started is not None, events
    try:
        assert int(started["limits"]["memoryMaxBytes"]) == limit
        assert int(_memory_limit_file(daemon, started["cgroup"]).read_text()) == limit
    except BaseException:
        daemon.ctl("cancel", started["executionId"])
        raise
    out, err = process.communicate(timeout=60)
    events += [json.loads(line) for line in out.splitlines()]
    result = result_of(events)
    assert result["status"] == "MEMORY_LIMIT", result
    assert int(result["usage"]["memoryPeakBytes"]) <= limit * 1.05
    assert process.returncode == 137 and b"MEMORY_LIMIT" in err


def test_output_limit(daemon: Daemon) -> None:
    done = daemon.ctl("exec", "--output-limit", "1K", "--timeout", "20s", "--", "/usr/bin/yes")
    assert done.stdout == b"y\n" * 512  # exactly the allowed bytes
    assert done.returncode == 137
    assert b"OUTPUT_LIMIT" in done.stderr


def test_seccomp_violation(daemon: Daemon) -> None:
    ptrace = "import ctypes; ctypes.CDLL(None).syscall(101, 0, 0, 0, 0); print('survived')"
    code, events, stderr = exec_json(daemon, "--profile", "kill-ptrace", "--", PY, "-c", ptrace)
    result = result_of(events)
    assert result["status"] == "SECCOMP_VIOLATION"
    assert result["seccompSyscallName"] == "ptrace" and result["seccompSyscallNr"] == 101
    assert code == 128 + 31  # SIGSYS
    assert "syscall ptrace" in stderr
    assert events[1]["started"]["seccompProfile"] == "kill-ptrace"


def test_a_descendants_seccomp_kill_is_in_the_result_and_the_audit(daemon: Daemon) -> None:
    # The handler (a shell) goes on; the child it ran was killed by the filter: the verdict is the shell's,
    # and the kill is listed and audited with its process, ABI and syscall.
    ptrace = "import ctypes; ctypes.CDLL(None).syscall(101, 0, 0, 0, 0)"
    code, events, _ = exec_json(daemon, "--profile", "kill-ptrace", "--", "/bin/sh", "-c",
                                f"{PY} -c '{ptrace}'; echo after $?")
    result = result_of(events)
    started = events[1]["started"]
    assert (result["status"], code) == ("OK", 0), result
    [violation] = result["seccompViolations"]
    assert (violation["abi"], violation["syscallName"], violation["syscallNr"]) == ("x86_64", "ptrace", 101)
    assert int(violation["pid"]) != int(started["pid"])
    execution = [r for r in daemon.audit_records() if r["execution_id"] == started["executionId"]]
    [recorded] = [r for r in execution if r["event"] == "execution.seccomp_violation"]
    assert recorded["details"] == {"pid": int(violation["pid"]), "abi": "x86_64", "syscall": "ptrace",
                                   "syscall_nr": 101}
    [started_record] = [r for r in execution if r["event"] == "execution.started"]
    assert started_record["details"]["uid"] == started["uid"] and started["uid"] in daemon.ids


def test_cancelled(daemon: Daemon) -> None:
    process = daemon.ctl_popen("exec", "--json", "--", "/bin/sleep", "30")
    assert process.stdout is not None
    line = json.loads(process.stdout.readline())
    while "started" not in line:
        line = json.loads(process.stdout.readline())
    execution_id = line["started"]["executionId"]
    listed = daemon.ctl("ps", "--json")
    assert execution_id in listed.stdout.decode()
    cancel = daemon.ctl("cancel", execution_id)
    assert cancel.returncode == 0, cancel.stderr
    out, err = process.communicate(timeout=30)
    result = json.loads(out.splitlines()[-1])["result"]
    assert result["status"] == "CANCELLED"
    assert process.returncode == 137 and b"CANCELLED" in err


def test_setup_failed(daemon: Daemon) -> None:
    code, events, stderr = exec_json(daemon, "--", "/no/such/program")
    result = result_of(events)
    assert result["status"] == "SETUP_FAILED"
    assert "/no/such/program" in result["message"]
    assert not any("started" in event for event in events)
    assert code == 125 and "SETUP_FAILED" in stderr


def test_unknown_profile(daemon: Daemon) -> None:
    done = daemon.ctl("exec", "--profile", "absent", "--", "/bin/true")
    assert done.returncode == 125
    assert b"NOT_FOUND (UNKNOWN_PROFILE)" in done.stderr
