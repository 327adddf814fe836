"""Inside the sandbox: an unprivileged uid, no capabilities at all, no_new_privs, a seccomp filter, pid 1."""

from __future__ import annotations

from sandboxd.engine.result import Status

from .conftest import Engine


def _status_fields(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def test_identity_capabilities_and_filter(engine: Engine) -> None:
    run = engine.run(engine.spec("/bin/cat", "/proc/self/status"))
    assert run.result.status is Status.OK, run.result
    fields = _status_fields(run.stdout.decode())
    uid = engine.config.sandbox_uid
    assert fields["Uid"].split() == [str(uid)] * 4
    assert fields["Gid"].split() == [str(engine.config.sandbox_gid)] * 4
    assert fields["Groups"].strip() == ""
    for capset in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[capset], 16) == 0, f"{capset} is {fields[capset]}"
    assert fields["NoNewPrivs"] == "1"
    assert fields["Seccomp"] == "2"


def test_handler_is_pid_one_of_its_own_namespaces(engine: Engine) -> None:
    script = "import os, socket; print(os.getpid(), socket.gethostname(), sorted(os.listdir('/proc'))[:0])"
    run = engine.run(engine.spec("/usr/bin/python3", "-c", script, hostname="toolbox"))
    assert run.result.status is Status.OK, run.result
    assert run.stdout.decode().split()[:2] == ["1", "toolbox"]


def test_no_other_process_is_visible(engine: Engine) -> None:
    run = engine.run(engine.spec("/bin/sh", "-c", "ls /proc | grep -E '^[0-9]+$'"))
    assert run.result.status is Status.OK, run.result
    pids = sorted(int(p) for p in run.stdout.split())
    assert pids[0] == 1
    assert max(pids) <= 3, pids  # sh (pid 1), ls and grep: nothing of the host
