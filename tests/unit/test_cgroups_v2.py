"""cgroup v2 backend against a temp dir laid out like a delegated cgroup2 subtree (no root needed)."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from sandboxd.base.errors import CgroupError
from sandboxd.engine.cgroups import CgroupLimits, fsutil
from sandboxd.engine.cgroups.v2 import V2Backend

OWN = "system.slice/sandboxd.service"
SELF_PID = 4242
LEAF_TEMPLATE = {
    "cgroup.procs": "",
    "cgroup.kill": "",
    "cgroup.freeze": "0",
    "cgroup.events": "populated 0\nfrozen 0\n",
    "memory.max": "max",
    "memory.swap.max": "max",
    "memory.oom.group": "0",
    "memory.peak": "0",
    "memory.current": "0",
    "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
    "cpu.max": "max 100000",
    "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
    "pids.max": "max",
}
LIMITS = CgroupLimits(memory_max_bytes=64 << 20, cpu_share_percent=25, pids_max=16)


def set_fixture(directory: Path, name: str, value: str) -> Path:
    path = directory / name
    path.write_text(value)
    return path


class FakeKernel:
    def __init__(self, proc: Path) -> None:
        self.template = dict(LEAF_TEMPLATE)
        self.proc = proc  # a fake /proc: which cgroup each process is in

    def place(self, pid: int, path: str) -> None:
        (self.proc / str(pid)).mkdir(parents=True, exist_ok=True)
        (self.proc / str(pid) / "cgroup").write_text(f"0::{path}\n")

    def mkdir(self, path: str) -> None:
        os.mkdir(path)
        for name, value in self.template.items():
            set_fixture(Path(path), name, value)

    def rmdir(self, path: str) -> None:
        if not os.path.isdir(path):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        if any(e.is_dir() for e in os.scandir(path)):
            raise OSError(errno.EBUSY, "Device or resource busy", path)
        shutil.rmtree(path)

    def ops(self) -> fsutil.DirOps:
        return fsutil.DirOps(mkdir=self.mkdir, rmdir=self.rmdir, sleep=lambda _s: None, proc=str(self.proc))


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    return FakeKernel(tmp_path / "proc")


@pytest.fixture
def own(tmp_path: Path) -> Path:
    own = tmp_path / OWN
    own.mkdir(parents=True)
    set_fixture(own, "cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n")
    set_fixture(own, "cgroup.subtree_control", "")
    set_fixture(own, "cgroup.procs", f"{SELF_PID}\n")
    return own


def make_backend(own: Path, kernel: FakeKernel, *, prepare: bool = True) -> V2Backend:
    backend = V2Backend(own, self_pid=SELF_PID, dir_ops=kernel.ops())
    if prepare:
        backend.prepare()
    return backend


def test_prepare_moves_self_to_supervisor_and_enables_controllers(own: Path, kernel: FakeKernel) -> None:
    make_backend(own, kernel)
    assert (own / "supervisor/cgroup.procs").read_text() == str(SELF_PID)
    assert (own / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"


def test_prepare_refuses_the_root_cgroup(tmp_path: Path, own: Path, kernel: FakeKernel) -> None:
    backend = V2Backend(own, is_root_cgroup=True, self_pid=SELF_PID, dir_ops=kernel.ops())
    with pytest.raises(CgroupError, match=r"runs in the root cgroup .*Delegate=yes") as info:
        backend.prepare()
    assert "memory, cpu and pids" in str(info.value)
    assert not (own / "supervisor").exists()


def test_prepare_refuses_missing_controllers(own: Path, kernel: FakeKernel) -> None:
    set_fixture(own, "cgroup.controllers", "cpu memory\n")
    with pytest.raises(CgroupError) as info:
        make_backend(own, kernel)
    message = str(info.value)
    assert f"cgroup {own} does not offer the pids controller(s)" in message
    assert "Delegate=yes" in message
    assert not (own / "supervisor").exists()


def test_prepare_refuses_foreign_processes(own: Path, kernel: FakeKernel) -> None:
    set_fixture(own, "cgroup.procs", f"{SELF_PID}\n77\n99\n")
    with pytest.raises(CgroupError, match=r"holds processes that are not sandboxd \(77, 99\).*must not move"):
        make_backend(own, kernel)
    assert not (own / "supervisor").exists()
    assert (own / "cgroup.subtree_control").read_text() == ""


def test_create_writes_limits(own: Path, kernel: FakeKernel) -> None:
    cg = make_backend(own, kernel).create("a1", LIMITS)
    leaf = own / "exec-a1"
    assert (leaf / "memory.max").read_text() == str(64 << 20)
    assert (leaf / "memory.swap.max").read_text() == "0"
    assert (leaf / "memory.oom.group").read_text() == "1"
    assert (leaf / "cpu.max").read_text() == "25000 100000"
    assert (leaf / "pids.max").read_text() == "16"
    assert cg.procs_files == (str(leaf / "cgroup.procs"),)
    assert cg.name == "exec-a1"
    assert cg.oom_group_emulated is False


def test_create_without_swap_accounting_or_limits(own: Path, kernel: FakeKernel) -> None:
    del kernel.template["memory.swap.max"]
    make_backend(own, kernel).create("a1", CgroupLimits(None, None, None))
    leaf = own / "exec-a1"
    assert not (leaf / "memory.swap.max").exists()  # never created by us
    assert (leaf / "memory.max").read_text() == "max"
    assert (leaf / "cpu.max").read_text() == "max 100000"
    assert (leaf / "pids.max").read_text() == "max"


def test_failed_write_names_file_and_value_and_removes_the_leaf(own: Path, kernel: FakeKernel) -> None:
    del kernel.template["cpu.max"]
    with pytest.raises(CgroupError) as info:
        make_backend(own, kernel).create("a1", LIMITS)
    assert str(info.value) == (
        f"cannot write '25000 100000' to {own / 'exec-a1/cpu.max'}: [Errno 2] No such file or directory"
    )
    assert not (own / "exec-a1").exists()


def test_bad_limits_are_refused_and_leaf_removed(own: Path, kernel: FakeKernel) -> None:
    with pytest.raises(CgroupError, match="pids limit must be > 0"):
        make_backend(own, kernel).create("a1", CgroupLimits(None, None, 0))
    assert not (own / "exec-a1").exists()


def test_stats_are_parsed(own: Path, kernel: FakeKernel) -> None:
    cg = make_backend(own, kernel).create("a1", LIMITS)
    leaf = own / "exec-a1"
    set_fixture(leaf, "memory.peak", "67100000\n")
    set_fixture(leaf, "memory.events", "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 1\n")
    set_fixture(leaf, "cpu.stat", "usage_usec 3000\nuser_usec 2000\nsystem_usec 1000\nnr_periods 4\n")
    stats = cg.stats()
    assert (stats.memory_peak_bytes, stats.oom_kill_count) == (67100000, 1)
    assert (stats.cpu_user_usec, stats.cpu_system_usec, stats.cpu_usec) == (2000, 1000, 3000)


def test_usage_reads_cpu_time_and_oom_kills_alone(own: Path, kernel: FakeKernel) -> None:
    cg = make_backend(own, kernel).create("a1", LIMITS)
    leaf = own / "exec-a1"
    set_fixture(leaf, "memory.events", "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 1\n")
    set_fixture(leaf, "cpu.stat", "usage_usec 3000\nuser_usec 2000\nsystem_usec 1000\nnr_periods 4\n")
    usage = cg.usage()
    assert (usage.cpu_usec, usage.oom_kill_count) == (3000, 1)


def test_stats_fall_back_to_memory_current(own: Path, kernel: FakeKernel) -> None:
    del kernel.template["memory.peak"]
    kernel.template["memory.current"] = "123456\n"
    assert make_backend(own, kernel).create("a1", LIMITS).stats().memory_peak_bytes == 123456


def test_kill_writes_cgroup_kill(own: Path, kernel: FakeKernel) -> None:
    cg = make_backend(own, kernel).create("a1", LIMITS)
    cg.kill()
    assert (own / "exec-a1/cgroup.kill").read_text() == "1"


def test_kill_without_cgroup_kill_freezes_kills_and_thaws(own: Path, kernel: FakeKernel) -> None:
    del kernel.template["cgroup.kill"]
    kernel.template["cgroup.events"] = "populated 1\nfrozen 1\n"  # the fake's freeze completes at once
    cg = make_backend(own, kernel).create("a1", LIMITS)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        set_fixture(own / "exec-a1", "cgroup.procs", f"{sleeper.pid}\n")
        kernel.place(sleeper.pid, "/system.slice/sandboxd.service/exec-a1")
        assert cg.pids() == [sleeper.pid]
        cg.kill()
        assert sleeper.wait(timeout=5) == -signal.SIGKILL
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
    assert (own / "exec-a1/cgroup.freeze").read_text() == "0"


def test_stale_leaves_remove_leaf_and_idempotent_remove(own: Path, kernel: FakeKernel) -> None:
    backend = make_backend(own, kernel)
    cg = backend.create("b", LIMITS)
    backend.create("a", LIMITS)
    assert backend.stale_leaves() == ["exec-a", "exec-b"]  # not "supervisor"
    assert backend.remove_base() is False
    backend.remove_leaf("exec-a")
    cg.remove()
    cg.remove()
    assert cg.pids() == []
    assert backend.stale_leaves() == []
    assert backend.remove_base() is True
    assert (own / "supervisor").is_dir()
    with pytest.raises(CgroupError, match="invalid cgroup leaf name"):
        backend.remove_leaf("supervisor")


def test_memory_limit_refused_when_swap_is_on_and_unaccounted(own: Path, kernel: FakeKernel, tmp_path: Path) -> None:
    # Without memory.swap.max (no swap accounting) memory.max does not cover swap: with swap on, a memory
    # limit could be escaped, so the leaf is refused, as v1 refuses without memsw.
    del kernel.template["memory.swap.max"]
    swaps = tmp_path / "swaps"
    swaps.write_text("Filename\tType\tSize\tUsed\tPriority\n/swapfile\tfile\t1048572\t0\t-2\n")
    backend = V2Backend(own, self_pid=SELF_PID, dir_ops=kernel.ops(), swaps_path=swaps)
    backend.prepare()
    with pytest.raises(CgroupError, match=r"swap is on but .*exec-a1/memory.swap.max is missing.*swapaccount=1"):
        backend.create("a1", LIMITS)
    assert not (own / "exec-a1").exists()  # nothing is left of a refused leaf
    backend.create("a2", CgroupLimits(None, 25, 16))  # no memory limit: nothing to escape
    swaps.write_text("Filename\tType\tSize\tUsed\tPriority\n")
    backend.create("a3", LIMITS)  # swap off: memory.max is the whole story


def test_remove_if_empty_leaves_a_leaf_with_a_cgroup_below_to_remove(own: Path, kernel: FakeKernel) -> None:
    backend = make_backend(own, kernel)
    empty, holder = backend.create("a", LIMITS), backend.create("b", LIMITS)
    kernel.mkdir(str(own / "exec-b/exec-c"))  # a session's call
    assert empty.remove_if_empty() is True and not (own / "exec-a").exists()
    assert holder.remove_if_empty() is False and (own / "exec-b/exec-c").is_dir()
    holder.remove()
    assert backend.stale_leaves() == []


def test_final_accounting_from_the_waiters_reads(own: Path, kernel: FakeKernel) -> None:
    cg = make_backend(own, kernel).create("a1", CgroupLimits(memory_max_bytes=None, cpu_share_percent=None,
                                                              pids_max=None))
    leaf = own / "exec-a1"
    assert cg.final_reads == tuple(str(leaf / name) for name in ("memory.peak", "memory.current", "memory.events",
                                                                  "cpu.stat", "pids.events"))
    assert cg.removal_dirs == (str(leaf),)
    events, cpu = b"low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n", b"usage_usec 90\nuser_usec 40\nsystem_usec 50\n"
    stats = cg.stats_from([b"8192\n", b"100\n", events, cpu, b"max 0\n"])
    assert (stats.memory_peak_bytes, stats.oom_kill_count, stats.cpu_user_usec, stats.cpu_system_usec) == (
        8192, 1, 40, 50)
    assert cg.stats_from([None, b"100\n", events, cpu, None]).memory_peak_bytes == 100  # before 5.19: no memory.peak
    with pytest.raises(CgroupError, match=r"cannot read .*cpu\.stat"):
        cg.stats_from([b"8192\n", b"100\n", events, None, None])



@pytest.mark.parametrize("swap_accounting", [True, False])
def test_plan_leaf_plans_what_create_writes_and_makes_nothing(
    own: Path, kernel: FakeKernel, cgroup_writes: list[tuple[str, str]], swap_accounting: bool
) -> None:
    if not swap_accounting:
        del kernel.template["memory.swap.max"]
    backend = make_backend(own, kernel)
    writes = cgroup_writes
    writes.clear()  # what making the backend wrote
    planned, creation = backend.plan_leaf("a1", LIMITS)
    assert writes == [] and not (own / "exec-a1").exists()  # for the sandbox's waiter to make
    made = backend.create("a1", LIMITS)
    assert creation.dirs == (str(own / "exec-a1"),)
    assert list(creation.writes) == writes  # the same files, values and order
    assert ("memory.swap.max" in {Path(path).name for path, _ in writes}) is swap_accounting
    assert planned.path == made.path and planned.final_reads == made.final_reads


def test_plan_leaf_checks_the_limits_as_create_does(own: Path, kernel: FakeKernel, tmp_path: Path) -> None:
    with pytest.raises(CgroupError, match="pids limit must be > 0, not 0"):
        make_backend(own, kernel).plan_leaf("a1", CgroupLimits(None, None, 0))
    del kernel.template["memory.swap.max"]
    swaps = tmp_path / "swaps"
    swaps.write_text("Filename\tType\tSize\tUsed\tPriority\n/swapfile\tfile\t1048572\t0\t-2\n")
    backend = V2Backend(own / "other", self_pid=SELF_PID, dir_ops=kernel.ops(), swaps_path=swaps)
    (own / "other").mkdir()
    for name in ("cgroup.controllers", "cgroup.subtree_control", "cgroup.procs"):
        set_fixture(own / "other", name, (own / name).read_text())
    backend.prepare()
    with pytest.raises(CgroupError, match=r"swap is on but .*exec-a2/memory.swap.max is missing"):
        backend.plan_leaf("a2", LIMITS)
