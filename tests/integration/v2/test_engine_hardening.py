"""The engine's hardening on a real v2 kernel: every seccomp kill named whoever it hit, a uid of its own per
execution, memory limits that refuse to run where swap could escape them, and pid kills that spare a process
that is not (or no longer) in the leaf."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sandboxd.base.errors import CgroupError
from sandboxd.base.limits import Limits
from sandboxd.engine.cgroups import fsutil
from sandboxd.engine.cgroups.base import CgroupLimits
from sandboxd.engine.cgroups.v2 import V2Backend, V2ExecCgroup
from sandboxd.engine.result import Status

from .conftest import V2_MARKS, Engine, RunCgroup, move, read

pytestmark = V2_MARKS

LIMITS = Limits(wall_time_ms=120_000, cpu_time_ms=None)
MOUNT = "import ctypes; ctypes.CDLL(None).syscall(165, 0, 0, 0, 0, 0)"  # killed by the default profile
THREAD_MOUNT = ("import ctypes, threading\n"
                "t = threading.Thread(target=lambda: ctypes.CDLL(None).syscall(165, 0, 0, 0, 0, 0)); t.start(); "
                "t.join()")


def test_a_grandchilds_and_a_threads_seccomp_kills_are_named(engine: Engine) -> None:
    run = engine.run(engine.spec("/bin/sh", "-c", f"/usr/bin/python3 -c '{MOUNT}'; echo after $?", limits=LIMITS))
    assert run.result.status is Status.OK, run.result
    assert run.stdout == b"after 159\n"
    assert [(v.abi, v.syscall_name) for v in run.result.seccomp_violations] == [("x86_64", "mount")]
    threaded = engine.run(engine.spec("/usr/bin/python3", "-c", THREAD_MOUNT, limits=LIMITS))
    assert threaded.result.status is Status.SECCOMP_VIOLATION, threaded.result
    assert threaded.result.seccomp_syscall_name == "mount"  # not the main thread's futex


def test_each_execution_runs_as_a_uid_of_its_own(engine: Engine) -> None:
    # (two at once get two uids: tests/integration/engine/test_ids.py, which needs no v2 kernel)
    run = engine.run(engine.spec("/bin/sh", "-c", "id -u; id -G; cat /proc/self/loginuid", limits=LIMITS))
    ids = engine.config.sandbox_ids
    assert run.result.status is Status.OK, run.result
    assert run.started is not None
    uid, groups, loginuid = run.stdout.decode().splitlines()
    assert uid == loginuid == str(run.started.uid) and run.started.uid in ids and run.started.uid != ids.first
    assert groups.split() == [uid, str(ids.shared_gid)]


def test_a_memory_limit_where_swap_is_on(run_cgroup: RunCgroup, tmp_path: Path) -> None:
    swaps = tmp_path / "swaps"
    swaps.write_text("Filename\tType\tSize\tUsed\tPriority\n/swapfile\tfile\t1048572\t0\t-2\n")
    backend = V2Backend(run_cgroup.own, swaps_path=swaps)
    leaf = run_cgroup.make_child("swap")
    try:
        cg = V2ExecCgroup(leaf, fsutil.DirOps())
        if cg._has("memory.swap.max"):  # swap accounting: the limit covers swap, which is set to none
            for path, value in backend._limit_writes(leaf, CgroupLimits(64 << 20, None, None), swap_max=True):
                fsutil.write_text(path, value)
            assert (read(leaf / "memory.max"), read(leaf / "memory.swap.max")) == (str(64 << 20), "0")
        with pytest.raises(CgroupError, match=r"swap is on but .*memory\.swap\.max is missing"):
            backend._limit_writes(leaf, CgroupLimits(32 << 20, None, None), swap_max=False)
    finally:
        run_cgroup.remove_child(leaf, expected=set())


def test_the_freezer_kill_spares_a_listed_pid_outside_the_leaf(run_cgroup: RunCgroup,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    has = V2ExecCgroup._has
    monkeypatch.setattr(V2ExecCgroup, "_has", lambda c, name: name != "cgroup.kill" and has(c, name))
    leaf = run_cgroup.make_child("exec-pidfd")
    member = subprocess.Popen(["sleep", "300"])
    bystander = subprocess.Popen(["sleep", "300"])  # stands for a host process that reused a listed pid
    try:
        move(member.pid, leaf)
        cg = V2ExecCgroup(leaf, fsutil.DirOps())
        monkeypatch.setattr(cg, "pids", lambda: [member.pid, bystander.pid])
        cg.kill()
        assert member.wait(timeout=10) == -9
        with pytest.raises(subprocess.TimeoutExpired):
            bystander.wait(timeout=0.5)
    finally:
        for process in (member, bystander):
            process.kill()
            process.wait()
        run_cgroup.remove_child(leaf, expected=set())


def test_a_large_plan_reaches_the_spawner_with_the_socket_buffer_at_debians_default(engine: Engine) -> None:
    # This guest's kernel is ours alone: set net.core.wmem_max to Debian's default, which a datagram
    # carrying the plan could not exceed; the plan travels in a memfd instead.
    wmem_max = Path("/proc/sys/net/core/wmem_max")
    saved = wmem_max.read_text()
    wmem_max.write_text("212992")
    try:
        argv = ["/bin/sh", "-c", "echo $#", "sh"] + ["a" * 1000] * 900  # ~900 KB of plan
        run = engine.run(engine.spec(*argv, limits=LIMITS))
    finally:
        wmem_max.write_text(saved)
    assert (run.result.status, run.stdout) == (Status.OK, b"900\n"), run.result
