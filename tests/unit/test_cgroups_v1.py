"""cgroup v1 backend against a temp dir laid out like a hybrid host's /sys/fs/cgroup (no root needed).

A small fake kernel stands in for cgroupfs: its mkdir makes the control files, its rmdir removes a directory
full of them (EBUSY while it has child cgroups), as the real kernel does.
"""

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
from sandboxd.engine.cgroups.v1 import V1Backend

UNLIMITED = "9223372036854771712"
OWN_MEMORY = "memory/process_api/abc123"
TEMPLATES: dict[str, dict[str, str]] = {
    "memory": {
        "memory.limit_in_bytes": UNLIMITED,
        "memory.memsw.limit_in_bytes": UNLIMITED,
        "memory.max_usage_in_bytes": "0",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
    },
    "cpu": {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "-1"},
    "cpuacct": {"cpuacct.usage": "0", "cpuacct.usage_user": "0", "cpuacct.usage_sys": "0",
                "cpuacct.stat": "user 0\nsystem 0\n"},
    "pids": {"pids.max": "max"},
    "freezer": {"freezer.state": "THAWED"},
}


def set_fixture(directory: Path, name: str, value: str) -> Path:
    path = directory / name
    path.write_text(value)
    return path


class FakeKernel:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.templates = {k: dict(v) for k, v in TEMPLATES.items()}
        self.busy: dict[str, int] = {}  # path -> how many rmdirs answer EBUSY first
        self.sleeps: list[float] = []
        self.proc = root / "proc"  # a fake /proc: which cgroup each process is in

    def place(self, pid: int, path: str) -> None:
        """Say process ``pid`` is in ``path`` (relative to each hierarchy) in the fake /proc."""
        (self.proc / str(pid)).mkdir(parents=True, exist_ok=True)
        (self.proc / str(pid) / "cgroup").write_text(f"4:freezer:{path}\n2:memory:{path}\n")

    def mkdir(self, path: str) -> None:
        os.mkdir(path)
        hierarchy = Path(path).relative_to(self.root).parts[0]
        set_fixture(Path(path), "cgroup.procs", "")
        for controller in hierarchy.split(","):
            for name, value in self.templates[controller].items():
                set_fixture(Path(path), name, value)

    def rmdir(self, path: str) -> None:
        if not os.path.isdir(path):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        if any(e.is_dir() for e in os.scandir(path)) or self.busy.get(path, 0) > 0:
            self.busy[path] = self.busy.get(path, 0) - 1
            raise OSError(errno.EBUSY, "Device or resource busy", path)
        shutil.rmtree(path)

    def ops(self) -> fsutil.DirOps:
        return fsutil.DirOps(mkdir=self.mkdir, rmdir=self.rmdir, sleep=self.sleeps.append, proc=str(self.proc))


def own_dirs(root: Path, cpu_dir: str = "cpu", cpuacct_dir: str = "cpuacct") -> dict[str, Path]:
    dirs = {
        "memory": root / OWN_MEMORY,
        "cpu": root / cpu_dir,
        "cpuacct": root / cpuacct_dir,
        "pids": root / "pids",
        "freezer": root / "freezer",
    }
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
        set_fixture(d, "cgroup.procs", "1\n")
    return dirs


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    return FakeKernel(tmp_path)


@pytest.fixture
def swaps(tmp_path: Path) -> Path:
    return set_fixture(tmp_path, "swaps", "Filename\tType\tSize\tUsed\tPriority\n")


def make_backend(kernel: FakeKernel, swaps: Path, **dirs: str) -> V1Backend:
    backend = V1Backend(own_dirs(kernel.root, **dirs), "test", swaps_path=swaps, dir_ops=kernel.ops())
    backend.prepare()
    return backend


LIMITS = CgroupLimits(memory_max_bytes=64 << 20, cpu_share_percent=25, pids_max=16)


def test_prepare_makes_base_below_own_cgroup_writing_nothing_there(kernel: FakeKernel, swaps: Path) -> None:
    dirs = own_dirs(kernel.root)
    before = {d: sorted(os.listdir(d)) for d in dirs.values()}
    backend = V1Backend(dirs, "test", swaps_path=swaps, dir_ops=kernel.ops())
    backend.prepare()
    backend.prepare()  # idempotent
    for d in dirs.values():
        assert (d / "sandboxd-test").is_dir()
        assert sorted(os.listdir(d)) == [*before[d], "sandboxd-test"]
        assert (d / "cgroup.procs").read_text() == "1\n"
    assert str(kernel.root / OWN_MEMORY / "sandboxd-test") in backend.base


def test_create_writes_limits(kernel: FakeKernel, swaps: Path) -> None:
    cg = make_backend(kernel, swaps).create("a1", LIMITS)
    mem = kernel.root / OWN_MEMORY / "sandboxd-test/exec-a1"
    assert (mem / "memory.limit_in_bytes").read_text() == str(64 << 20)
    assert (mem / "memory.memsw.limit_in_bytes").read_text() == str(64 << 20)
    cpu = kernel.root / "cpu/sandboxd-test/exec-a1"
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "25000"
    assert (kernel.root / "pids/sandboxd-test/exec-a1/pids.max").read_text() == "16"
    assert cg.name == "exec-a1"
    assert cg.oom_group_emulated is True
    assert cg.procs_files == tuple(
        str(kernel.root / h / "exec-a1/cgroup.procs")
        for h in (f"{OWN_MEMORY}/sandboxd-test", "pids/sandboxd-test", "cpu/sandboxd-test",
                  "cpuacct/sandboxd-test", "freezer/sandboxd-test")
    )  # fmt: skip


def test_memory_write_order_keeps_memsw_above_limit(
    kernel: FakeKernel, swaps: Path, cgroup_writes: list[tuple[str, str]]
) -> None:
    writes = cgroup_writes
    backend = make_backend(kernel, swaps)
    backend.create("lower", CgroupLimits(64 << 20, None, None))
    assert [os.path.basename(path) for path, _ in writes] == ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
    writes.clear()
    kernel.templates["memory"]["memory.limit_in_bytes"] = str(16 << 20)
    kernel.templates["memory"]["memory.memsw.limit_in_bytes"] = str(16 << 20)
    backend.create("raise", CgroupLimits(64 << 20, None, None))
    assert [os.path.basename(path) for path, _ in writes] == ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]


def test_no_limits_writes_nothing(kernel: FakeKernel, swaps: Path) -> None:
    make_backend(kernel, swaps).create("a1", CgroupLimits(None, None, None))
    assert (kernel.root / OWN_MEMORY / "sandboxd-test/exec-a1/memory.limit_in_bytes").read_text() == UNLIMITED
    assert (kernel.root / "cpu/sandboxd-test/exec-a1/cpu.cfs_quota_us").read_text() == "-1"
    assert (kernel.root / "pids/sandboxd-test/exec-a1/pids.max").read_text() == "max"


def leaf_dirs(root: Path) -> list[Path]:
    return sorted(root.rglob("exec-*"))


def test_missing_memsw_fails_closed_only_when_swap_is_on(kernel: FakeKernel, swaps: Path) -> None:
    del kernel.templates["memory"]["memory.memsw.limit_in_bytes"]
    backend = make_backend(kernel, swaps)
    backend.create("noswap", LIMITS).remove()
    set_fixture(swaps.parent, "swaps", "Filename\tType\tSize\tUsed\tPriority\n/swapfile file 1024 0 -2\n")
    with pytest.raises(CgroupError, match=r"swap is on but memory\.memsw\.limit_in_bytes is missing"):
        backend.create("swap", LIMITS)
    assert leaf_dirs(kernel.root) == []


def test_failed_write_names_file_and_value_and_removes_the_leaf(kernel: FakeKernel, swaps: Path) -> None:
    del kernel.templates["pids"]["pids.max"]
    backend = make_backend(kernel, swaps)
    with pytest.raises(CgroupError) as info:
        backend.create("a1", LIMITS)
    path = kernel.root / "pids/sandboxd-test/exec-a1/pids.max"
    assert str(info.value) == f"cannot write '16' to {path}: [Errno 2] No such file or directory"
    assert leaf_dirs(kernel.root) == []


def test_symlinked_control_file_is_refused(kernel: FakeKernel, swaps: Path, tmp_path: Path) -> None:
    target = set_fixture(tmp_path, "elsewhere", "untouched")
    real_mkdir = kernel.mkdir

    def mkdir_with_symlink(path: str) -> None:
        real_mkdir(path)
        if "/cpu/" in path and "exec-" in path:
            os.unlink(os.path.join(path, "cpu.cfs_quota_us"))
            os.symlink(target, os.path.join(path, "cpu.cfs_quota_us"))

    kernel.mkdir = mkdir_with_symlink  # type: ignore[method-assign]
    backend = make_backend(kernel, swaps)
    with pytest.raises(CgroupError, match=r"cannot write '25000' to .*cpu\.cfs_quota_us: .*symlink"):
        backend.create("a1", LIMITS)
    assert target.read_text() == "untouched"
    assert leaf_dirs(kernel.root) == []


def test_existing_leaf_is_an_error_and_is_left_alone(kernel: FakeKernel, swaps: Path) -> None:
    backend = make_backend(kernel, swaps)
    backend.create("a1", LIMITS)
    with pytest.raises(CgroupError, match="already exists"):
        backend.create("a1", LIMITS)
    assert len(leaf_dirs(kernel.root)) == 5


@pytest.mark.parametrize("bad", ["", "a/b", "../x", "x" * 200, "a b", "é"])
def test_bad_execution_id_is_refused(kernel: FakeKernel, swaps: Path, bad: str) -> None:
    with pytest.raises(CgroupError, match="invalid cgroup leaf name"):
        make_backend(kernel, swaps).create(bad, LIMITS)


def test_stats_are_parsed(kernel: FakeKernel, swaps: Path) -> None:
    cg = make_backend(kernel, swaps).create("a1", LIMITS)
    mem = kernel.root / OWN_MEMORY / "sandboxd-test/exec-a1"
    acct = kernel.root / "cpuacct/sandboxd-test/exec-a1"
    set_fixture(mem, "memory.max_usage_in_bytes", "33554432\n")
    set_fixture(mem, "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    set_fixture(acct, "cpuacct.usage_user", "1500000\n")
    set_fixture(acct, "cpuacct.usage_sys", "2999\n")
    stats = cg.stats()
    assert (stats.memory_peak_bytes, stats.oom_kill_count) == (33554432, 2)
    assert (stats.cpu_user_usec, stats.cpu_system_usec, stats.cpu_usec) == (1500, 2, 1502)


def test_usage_reads_cpu_time_and_oom_kills_alone(kernel: FakeKernel, swaps: Path) -> None:
    """What the accounting sweep reads of every running execution: two files, not stats' four."""
    cg = make_backend(kernel, swaps).create("a1", LIMITS)
    set_fixture(kernel.root / OWN_MEMORY / "sandboxd-test/exec-a1", "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    set_fixture(kernel.root / "cpuacct/sandboxd-test/exec-a1", "cpuacct.usage", "1502999\n")
    usage = cg.usage()
    assert (usage.cpu_usec, usage.oom_kill_count) == (1502, 3)


def test_stats_fall_back_to_cpuacct_stat_ticks_and_old_oom_control(kernel: FakeKernel, swaps: Path) -> None:
    del kernel.templates["cpuacct"]["cpuacct.usage_user"]
    del kernel.templates["cpuacct"]["cpuacct.usage_sys"]
    kernel.templates["memory"]["memory.oom_control"] = "oom_kill_disable 0\nunder_oom 0\n"  # kernel < 4.13
    kernel.templates["cpuacct"]["cpuacct.stat"] = "user 3\nsystem 1\n"
    stats = make_backend(kernel, swaps).create("a1", LIMITS).stats()
    usec_per_tick = 1_000_000 // os.sysconf("SC_CLK_TCK")
    assert (stats.cpu_user_usec, stats.cpu_system_usec) == (3 * usec_per_tick, usec_per_tick)
    assert stats.oom_kill_count == 0


def test_co_mounted_cpu_cpuacct_share_one_leaf(kernel: FakeKernel, swaps: Path) -> None:
    backend = make_backend(kernel, swaps, cpu_dir="cpu,cpuacct", cpuacct_dir="cpu,cpuacct")
    cg = backend.create("a1", LIMITS)
    leaf = kernel.root / "cpu,cpuacct/sandboxd-test/exec-a1"
    assert (leaf / "cpu.cfs_quota_us").read_text() == "25000"
    assert len(cg.procs_files) == 4
    assert cg.procs_files.count(str(leaf / "cgroup.procs")) == 1
    set_fixture(leaf, "cpuacct.usage_user", "7000")
    assert cg.stats().cpu_user_usec == 7
    cg.remove()
    assert leaf_dirs(kernel.root) == []


def test_stale_leaves_lists_only_exec_dirs(kernel: FakeKernel, swaps: Path) -> None:
    backend = make_backend(kernel, swaps)
    backend.create("b", LIMITS)
    backend.create("a", LIMITS)
    (kernel.root / "pids/sandboxd-test/not-ours").mkdir()
    os.symlink(kernel.root, kernel.root / "freezer/sandboxd-test/exec-link")
    assert backend.stale_leaves() == ["exec-a", "exec-b"]


def test_kill_freezes_kills_each_pid_and_thaws(kernel: FakeKernel, swaps: Path) -> None:
    cg = make_backend(kernel, swaps).create("a1", LIMITS)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        for procs in cg.procs_files:
            Path(procs).write_text(f"{sleeper.pid}\n")
        kernel.place(sleeper.pid, "/sandboxd-test/exec-a1")
        assert cg.pids() == [sleeper.pid]
        cg.kill()
        assert sleeper.wait(timeout=5) == -signal.SIGKILL
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
    assert (kernel.root / "freezer/sandboxd-test/exec-a1/freezer.state").read_text() == "THAWED"
    cg.kill()  # a pid that is gone is fine


def test_kill_spares_a_listed_pid_that_is_no_longer_in_the_leaf(kernel: FakeKernel, swaps: Path) -> None:
    # The leaf's list is read before the freeze completes: a pid may have exited and been reused by a host
    # process by the time it is signalled. The process behind the pidfd is checked to be in the leaf first.
    cg = make_backend(kernel, swaps).create("a1", LIMITS)
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        for procs in cg.procs_files:
            Path(procs).write_text(f"{bystander.pid}\n")
        kernel.place(bystander.pid, "/user.slice/some-host-service")
        cg.kill()
        with pytest.raises(subprocess.TimeoutExpired):
            bystander.wait(timeout=0.3)
    finally:
        bystander.kill()
        bystander.wait()


def test_remove_retries_ebusy_with_backoff_and_is_idempotent(kernel: FakeKernel, swaps: Path) -> None:
    backend = make_backend(kernel, swaps)
    cg = backend.create("a1", LIMITS)
    kernel.busy[str(kernel.root / "pids/sandboxd-test/exec-a1")] = 4  # the one attempt at once, then 3 retries
    cg.remove()
    assert kernel.sleeps == [0.005, 0.01, 0.02]
    assert leaf_dirs(kernel.root) == []
    cg.remove()
    backend.remove_leaf("exec-never-made")
    with pytest.raises(CgroupError, match="invalid cgroup leaf name"):
        backend.remove_leaf("../../etc")


def test_remove_gives_up_on_a_cgroup_that_stays_busy(kernel: FakeKernel, tmp_path: Path) -> None:
    leaf = tmp_path / "exec-busy"
    leaf.mkdir()
    kernel.busy[str(leaf)] = 10**9
    ops = fsutil.DirOps(rmdir=kernel.rmdir, sleep=lambda _s: None)
    with pytest.raises(CgroupError, match=r"cannot remove cgroup .*exec-busy: \[Errno 16\]"):
        fsutil.remove_dir(ops, str(leaf), budget_s=0.05)


def test_remove_leaf_and_remove_base(kernel: FakeKernel, swaps: Path) -> None:
    backend = make_backend(kernel, swaps)
    backend.create("a1", LIMITS)
    assert backend.remove_base() is False  # a leaf is still there
    assert backend.stale_leaves() == ["exec-a1"]
    backend.remove_leaf("exec-a1")
    assert backend.remove_base() is True
    assert backend.remove_base() is True
    assert sorted(kernel.root.rglob("sandboxd-*")) == []
    assert (kernel.root / OWN_MEMORY).is_dir()


def test_remove_if_empty_is_one_rmdir_each_and_leaves_a_busy_leaf_to_remove(kernel: FakeKernel, swaps: Path) -> None:
    backend = make_backend(kernel, swaps)
    empty, busy = backend.create("a1", LIMITS), backend.create("a2", LIMITS)
    assert empty.remove_if_empty() is True
    assert backend.stale_leaves() == ["exec-a2"]
    kernel.busy[str(kernel.root / "pids/sandboxd-test/exec-a2")] = 1
    assert busy.remove_if_empty() is False  # no retry, no sleep: the rest is remove()'s
    assert kernel.sleeps == []
    busy.remove()
    assert leaf_dirs(kernel.root) == []


def test_final_accounting_from_the_waiters_reads(kernel: FakeKernel, swaps: Path) -> None:
    cg = make_backend(kernel, swaps).create("a1", LIMITS)
    memory, acct = kernel.root / OWN_MEMORY / "sandboxd-test/exec-a1", kernel.root / "cpuacct/sandboxd-test/exec-a1"
    assert cg.final_reads == tuple(str(p) for p in (
        memory / "memory.max_usage_in_bytes", memory / "memory.oom_control", acct / "cpuacct.usage_user",
        acct / "cpuacct.usage_sys", acct / "cpuacct.stat"))  # fmt: skip
    assert cg.removal_dirs == tuple(os.path.dirname(procs) for procs in cg.procs_files)
    oom = b"oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"
    stats = cg.stats_from([b"4096\n", oom, b"3000\n", b"5000\n", b"user 9\nsystem 9\n"])
    assert (stats.memory_peak_bytes, stats.oom_kill_count, stats.cpu_user_usec, stats.cpu_system_usec) == (
        4096, 2, 3, 5)
    # a kernel before 4.16: clock ticks
    ticks = cg.stats_from([b"4096\n", oom, None, None, b"user 1\nsystem 2\n"])
    tick_usec = 1_000_000 // os.sysconf("SC_CLK_TCK")
    assert (ticks.cpu_user_usec, ticks.cpu_system_usec) == (tick_usec, 2 * tick_usec)
    with pytest.raises(CgroupError, match=r"cannot read .*memory\.max_usage_in_bytes"):
        cg.stats_from([None, oom, b"1\n", b"1\n", None])
    with pytest.raises(CgroupError, match="2 accounting files read, not the 5 asked for"):
        cg.stats_from([b"1\n", oom])


def test_a_cgroup_with_one_hierarchy_removed_no_longer_exists(kernel: FakeKernel, swaps: Path) -> None:
    # its waiter removes it a hierarchy at a time: the accounting sweep must not take the first rmdir for a
    # cgroup whose accounting can no longer be read while its sandbox runs
    cg = make_backend(kernel, swaps).create("a1", LIMITS)
    assert cg.exists()
    shutil.rmtree(cg.removal_dirs[0])  # (a fake hierarchy: its control files are plain files)
    assert not cg.exists()


def test_plan_leaf_plans_what_create_writes_and_makes_nothing(
    kernel: FakeKernel, swaps: Path, cgroup_writes: list[tuple[str, str]]
) -> None:
    backend = make_backend(kernel, swaps)
    writes = cgroup_writes
    writes.clear()  # what making the backend wrote
    planned, creation = backend.plan_leaf("p1", LIMITS)
    assert writes == [] and leaf_dirs(kernel.root) == []  # for the sandbox's waiter to make
    made = backend.create("p1", LIMITS)
    assert creation.dirs == made.removal_dirs and all(os.path.isdir(d) for d in creation.dirs)
    assert list(creation.writes) == writes  # the same files, values and order: limit before memsw
    assert planned.procs_files == made.procs_files and planned.final_reads == made.final_reads


def test_plan_leaf_checks_the_limits_as_create_does(kernel: FakeKernel, swaps: Path) -> None:
    with pytest.raises(CgroupError, match="memory limit must be > 0 bytes, not 0"):
        make_backend(kernel, swaps).plan_leaf("p1", CgroupLimits(0, None, None))


def test_plan_leaf_without_memsw_fails_closed_only_when_swap_is_on(kernel: FakeKernel, swaps: Path) -> None:
    del kernel.templates["memory"]["memory.memsw.limit_in_bytes"]
    backend = make_backend(kernel, swaps)
    names = [Path(path).name for path, _ in backend.plan_leaf("p2", LIMITS)[1].writes]
    assert "memory.limit_in_bytes" in names and "memory.memsw.limit_in_bytes" not in names  # swap off: enough
    set_fixture(swaps.parent, "swaps", "Filename\tType\tSize\tUsed\tPriority\n/swapfile file 1024 0 -2\n")
    with pytest.raises(CgroupError, match=r"swap is on but memory\.memsw\.limit_in_bytes is missing"):
        backend.plan_leaf("p3", LIMITS)
    assert leaf_dirs(kernel.root) == []
