"""``sandbox-watch`` where ptrace is refused (Yama, an LSM): the engine's tests run traced, so the untraced
path is driven here directly — a process forks a stand-in for a sandbox's init (or a call's handler) and
becomes the watch, whose report is its stdout. The handler's pid comes from the init's children once it says
"forked"; the wait status is the one the init reports, else the first process's own."""

from __future__ import annotations

import subprocess
import sys

from sandboxd.engine.child.helpers import NATIVE_DIR, WATCH_NAME

WATCH = str(NATIVE_DIR / WATCH_NAME)

# The handler lives until the watch has named it (a relay of the watch's report lets it go), as a sandbox's
# handler lives at least until its execve.
SANDBOX = f"""
import os
status_r, status_w = os.pipe()
go_r, go_w = os.pipe()
if os.fork() == 0:  # the relay: the watch's report to stdout; lets the handler go once it is named
    os.close(status_w)
    os.close(go_r)
    report = b""
    while chunk := os.read(status_r, 4096):
        report += chunk
        if b"pid " in report and go_w >= 0:
            os.close(go_w)
            go_w = -1
    os.write(1, report)
    os._exit(0)
os.close(status_r)
init_r, init_w = os.pipe()
pid = os.fork()
if pid == 0:  # the init: forks the handler, says so, reports its status
    os.close(init_r)
    handler = os.fork()
    if handler == 0:
        os.close(go_w)
        os.read(go_r, 1)
        os._exit(7)
    os.close(go_w)
    os.write(2, str(handler).encode())
    os.write(init_w, b"forked\\n")
    _, status = os.waitpid(handler, 0)
    os.write(init_w, f"status {{status}}\\n".encode())
    os._exit(0)
os.close(init_w)
os.close(go_w)
proc = os.open("/proc", os.O_PATH | os.O_DIRECTORY)
for fd in (proc, init_r, status_w):
    os.set_inheritable(fd, True)
os.execv({WATCH!r}, [{WATCH_NAME!r}, str(status_w), str(proc), str(pid), "0", str(init_r)])
"""

CALL = f"""
import os, signal
pid = os.fork()
if pid == 0:
    os.kill(os.getpid(), signal.SIGTERM)
os.write(2, str(pid).encode())
proc = os.open("/proc", os.O_PATH | os.O_DIRECTORY)
os.set_inheritable(proc, True)
os.execv({WATCH!r}, [{WATCH_NAME!r}, "1", str(proc), str(pid), "0"])
"""


def _watch(script: str) -> tuple[list[list[str]], int]:
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True)
    return [line.split() for line in done.stdout.splitlines()], int(done.stderr)


def test_an_untraced_sandbox_reports_its_handler_and_the_handlers_status() -> None:
    lines, handler = _watch(SANDBOX)
    assert lines[0] == ["pid", str(handler)]
    assert lines[1][:2] == ["exit", str(7 << 8)]  # the handler's exit 7, not the init's 0
    assert lines[1][5] == "0"  # untraced: no seccomp line is no proof of no seccomp kill
    assert len(lines) == 2


def test_an_untraced_call_reports_itself_as_the_handler_and_its_own_status() -> None:
    lines, handler = _watch(CALL)
    assert lines[0] == ["pid", str(handler)]
    assert lines[1][:2] == ["exit", "15"]  # killed by SIGTERM
    assert len(lines) == 2
