"""Seccomp: a denied syscall yields EPERM or SECCOMP_VIOLATION (with the syscall named) as the profile says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandboxd.engine.result import Status

from .conftest import SHARED_SECCOMP, Engine

MOUNT = ("import ctypes; libc = ctypes.CDLL(None, use_errno=True)\n"
         "print(libc.syscall(165, 0, 0, 0, 0, 0), ctypes.get_errno())")


def test_default_profile_kills_mount_and_names_it(engine: Engine) -> None:
    run = engine.run(engine.spec("/usr/bin/python3", "-c", MOUNT))
    assert run.result.status is Status.SECCOMP_VIOLATION, run.result
    assert run.result.seccomp_syscall_nr == 165
    assert run.result.seccomp_syscall_name == "mount"
    assert "mount" in run.result.message
    assert run.result.signal == 31


def test_errno_rule_yields_eperm(engine: Engine, tmp_path: Path) -> None:
    profile = tmp_path / "errno.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }))
    run = engine.run(engine.spec("/usr/bin/python3", "-c", MOUNT, profile=profile))
    assert run.result.status is Status.OK, (run.result, run.stderr)
    assert run.stdout.split() == [b"-1", b"1"]


def test_default_profile_runs_real_programs(engine: Engine) -> None:
    script = (
        "import json, sqlite3, subprocess, threading\n"
        "t = threading.Thread(target=print, args=('thread',)); t.start(); t.join()\n"
        "db = sqlite3.connect(':memory:'); print(db.execute('select 40 + 2').fetchone()[0])\n"
        "print(subprocess.run(['sh', '-c', 'echo hi | wc -c'], capture_output=True, text=True).stdout.strip())\n"
        "print(json.dumps({'ok': True}))\n"
    )
    run = engine.run(engine.spec("/usr/bin/python3", "-c", script))
    assert run.result.status is Status.OK, (run.result, run.stderr)
    assert run.stdout.decode().split("\n")[:4] == ["thread", "42", "3", '{"ok": true}']


def test_docker_default_profile_runs_python(engine: Engine) -> None:
    moby = SHARED_SECCOMP / "moby-default.json"
    if not moby.exists():
        pytest.skip(f"Docker's profile is not present at {moby}")
    run = engine.run(engine.spec("/usr/bin/python3", "-c", "print(sum(range(10)))", profile=moby))
    assert run.result.status is Status.OK, (run.result, run.stderr)
    assert run.stdout == b"45\n"
    denied = engine.run(engine.spec("/usr/bin/python3", "-c", MOUNT, profile=moby))
    assert denied.result.status is Status.OK
    assert denied.stdout.split() == [b"-1", b"1"]  # Docker's profile answers EPERM
