"""Seccomp: a denied syscall yields EPERM or SECCOMP_VIOLATION (with the syscall named) as the profile says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandboxd.engine.child.program import KILLS_REPORTED
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


# -- every kill is named, whoever was killed, through whichever ABI ------------------------------------------

KILL_UNAME_UNSHARE = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "syscalls": [{"names": ["uname", "unshare"], "action": "SCMP_ACT_KILL_PROCESS"}],
}
THREAD_CALLS_UNAME = ("import os, threading, time\n"
                      "t = threading.Thread(target=lambda: (time.sleep(0.2), os.uname())); t.start(); t.join()\n"
                      "print('survived')")
# Machine code run from an executable page: "mov eax, NR; int 0x80 | syscall; ret".
RAW_SYSCALL = """
import ctypes, mmap, sys
code = bytes.fromhex(sys.argv[1])
page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(code)
address = ctypes.addressof(ctypes.c_char.from_buffer(page))
ctypes.CFUNCTYPE(ctypes.c_long)(address)()
print('survived')
"""
I386_UNSHARE = "b836010000" + "cd80" + "c3"  # eax = 310: unshare in the i386 table, process_vm_readv in x86_64's
X32_UNAME = "b83f000040" + "0f05" + "c3"  # eax = 0x40000000 | 63: uname through the x32 ABI


@pytest.fixture
def kill_uname(tmp_path: Path) -> Path:
    profile = tmp_path / "kill-uname.json"
    profile.write_text(json.dumps(KILL_UNAME_UNSHARE))
    return profile


def test_a_second_thread_is_named_not_the_main_threads_syscall(engine: Engine, kill_uname: Path) -> None:
    run = engine.run(engine.spec("/usr/bin/python3", "-c", THREAD_CALLS_UNAME, profile=kill_uname))
    assert run.result.status is Status.SECCOMP_VIOLATION, run.result
    assert (run.result.seccomp_syscall_name, run.result.seccomp_syscall_nr) == ("uname", 63), run.result
    assert [(v.abi, v.syscall_name) for v in run.result.seccomp_violations] == [("x86_64", "uname")]
    assert run.started is not None and run.result.seccomp_violations[0].pid == run.started.pid


def test_a_grandchilds_kill_is_recorded_while_the_handler_goes_on(engine: Engine, kill_uname: Path) -> None:
    run = engine.run(engine.spec("/bin/sh", "-c", "uname; echo after $?", profile=kill_uname))
    assert run.result.status is Status.OK, run.result  # the shell itself was not killed
    assert run.stdout == b"after 159\n"  # 128 + SIGSYS
    assert [(v.abi, v.syscall_name, v.syscall_nr) for v in run.result.seccomp_violations] == [("x86_64", "uname", 63)]
    assert run.started is not None and run.result.seccomp_violations[0].pid != run.started.pid
    assert "also killed" in run.result.message and "uname" in run.result.message


@pytest.mark.parametrize(("code", "abi", "name", "nr"), [
    (I386_UNSHARE, "x86", "unshare", 310),
    (X32_UNAME, "x32", "uname", 0x40000000 | 63),
])
def test_a_syscall_through_another_abi_is_named_from_that_abis_table(
        engine: Engine, kill_uname: Path, code: str, abi: str, name: str, nr: int) -> None:
    run = engine.run(engine.spec("/usr/bin/python3", "-c", RAW_SYSCALL, code, profile=kill_uname))
    assert run.result.status is Status.SECCOMP_VIOLATION, (run.result, run.stderr)
    assert [(v.abi, v.syscall_name, v.syscall_nr) for v in run.result.seccomp_violations] == [(abi, name, nr)]
    assert run.result.seccomp_syscall_name == name


def test_sigsys_sent_by_a_process_is_a_signal_not_a_seccomp_verdict(engine: Engine) -> None:
    run = engine.run(engine.spec("/bin/sh", "-c", "kill -SYS $$"))
    assert (run.result.status, run.result.signal) == (Status.SIGNALED, 31), run.result
    assert run.result.seccomp_violations == ()


def test_many_killed_processes_are_counted_beyond_those_named(engine: Engine, kill_uname: Path) -> None:
    # A tool that runs doomed processes in a loop must not grow the report without bound: a bounded number
    # are named, the handler's own kill among them whatever its turn, and the rest counted.
    script = "for i in $(seq 60); do uname; done; exec uname"
    run = engine.run(engine.spec("/bin/sh", "-c", script, profile=kill_uname))
    assert run.result.status is Status.SECCOMP_VIOLATION, run.result  # the handler's own kill, the 61st
    assert run.started is not None and run.result.seccomp_violations[0].pid == run.started.pid
    assert len(run.result.seccomp_violations) == KILLS_REPORTED
    assert f"and {61 - KILLS_REPORTED} more processes" in run.result.message
