"""A sandbox's life in its cgroup. Its first process joins before anything of the tool runs (on v1 it moves
itself: the one migration the kernel makes without its global lock), or the sandbox does not run. Once
everything in it has ended, the sandbox's waiter reads its accounting (in its exit report) and then removes
it, saying so — while the daemon writes the outcome down, with no rmdir of its own (on v1 one waits for the
kernel's cgroup lock). The spawner is driven directly, as the executor drives it, on a leaf of this host's
own backend."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sandboxd.engine.cgroups import Backend, CgroupCreation, CgroupLimits, ExecCgroup, detect_backend
from sandboxd.engine.child.plan import JailPlan, RootPlan
from sandboxd.engine.child.program import CREATE_CGROUP_STAGE
from sandboxd.engine.config import DEFAULT_SYSTEM_BINDS, EngineConfig
from sandboxd.engine.executor import Executor
from sandboxd.engine.reports import ExitReport, SetupFailure
from sandboxd.engine.result import Event, Result, Started, Status
from sandboxd.engine.seccomp.profile import ProfileCache
from sandboxd.engine.spawnclient import SpawnerClient
from sandboxd.engine.spec import ExecutionSpec

from .conftest import PROFILES, fresh_ids

pytestmark = pytest.mark.root

NOBODY = 65534
HOG_BYTES = 32 << 20
NO_LIMITS = CgroupLimits(memory_max_bytes=None, cpu_share_percent=None, pids_max=None)


@pytest.fixture
def backend() -> Iterator[Backend]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    config = EngineConfig(state_dir=Path("/nonexistent"), instance=f"test-{uuid.uuid4().hex[:8]}")
    found = detect_backend(config.cgroup_root, config.instance)
    found.prepare()
    try:
        yield found
    finally:
        for leaf in found.stale_leaves():
            found.remove_leaf(leaf)
        assert found.remove_base()


def plan_for(cgroup: ExecCgroup, root_dir: Path, *argv: str) -> JailPlan:
    return dataclasses.replace(plan_for_leaf(*cgroup.procs_files, root_dir=root_dir), execution_id=cgroup.name,
                               argv=argv, cgroup_final_reads=cgroup.final_reads, cgroup_removal=cgroup.removal_dirs)


def plan_for_leaf(*procs_files: str, root_dir: Path) -> JailPlan:
    root_dir.mkdir()
    root = RootPlan(mountpoint=str(root_dir), system_binds=DEFAULT_SYSTEM_BINDS, etc_binds=(), etc_files={},
                    binds=(), workdir="/work", workdir_source=None, tmpfs_size_bytes=1 << 20, uid=NOBODY,
                    gid=NOBODY)
    return JailPlan(execution_id="life", argv=("/bin/true",), env={}, cgroup_procs=procs_files,
                    hostname="life", root=root, rlimits={},
                    seccomp_bpf=ProfileCache().get(PROFILES / "default.json").bpf)


def spawn(plan: JailPlan, while_running: Callable[[], None] = lambda: None,
          ) -> tuple[int | SetupFailure, ExitReport, bool]:
    """What started, the exit report, and whether the waiter then removed the cgroup. The handler's stdin is a
    pipe, closed once it has started and ``while_running`` has looked at it."""
    async def run() -> tuple[int | SetupFailure, ExitReport, bool]:
        spawner = await SpawnerClient.start()
        null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        stdin, feed = os.pipe2(os.O_CLOEXEC)
        try:
            handle = spawner.spawn(plan, (stdin, null, null))
            os.close(stdin)
            started = await handle.started
            if not isinstance(started, SetupFailure):
                while_running()
            os.close(feed)
            feed = -1
            return started, await handle.exited, await handle.removed
        finally:
            os.close(null)
            if feed >= 0:
                os.close(feed)
            await spawner.close()

    return asyncio.run(run())


def test_every_process_of_the_sandbox_is_in_its_leaf_in_every_hierarchy(backend: Backend, tmp_path: Path) -> None:
    cgroup = backend.create(f"join-{uuid.uuid4().hex[:8]}", NO_LIMITS)
    members: dict[str, list[int]] = {}

    def look() -> None:  # the init and the handler, cat, reading its stdin
        for procs in cgroup.procs_files:
            members[procs] = sorted(int(pid) for pid in Path(procs).read_text().split())

    started, report, removed = spawn(plan_for(cgroup, tmp_path / "root", "/bin/cat"), look)
    assert not isinstance(started, SetupFailure), started
    assert report.wait_status == 0 and removed
    assert set(members) == set(cgroup.procs_files)  # v1: memory, cpu, pids and freezer; v2: its one leaf
    init_and_handler = members[cgroup.procs_files[0]]
    assert len(init_and_handler) == 2 and started in init_and_handler
    assert all(pids == init_and_handler for pids in members.values())


@pytest.mark.cgroup_v1
def test_a_cgroup_that_refuses_the_sandbox_fails_it_before_anything_runs(tmp_path: Path) -> None:
    # A v1 cpuset with no CPUs refuses every task (ENOSPC): pid 1's own move into it fails, and nothing runs.
    own = Path("/proc/self/cgroup").read_text()
    cpuset = next((line.split(":", 2)[2] for line in own.splitlines() if line.split(":")[1] == "cpuset"), None)
    if cpuset is None or not os.path.isfile("/sys/fs/cgroup/cpuset/tasks"):
        pytest.skip("no v1 cpuset hierarchy")
    leaf = Path("/sys/fs/cgroup/cpuset" + cpuset.rstrip("/"), f"sandboxd-test-{uuid.uuid4().hex[:8]}")
    leaf.mkdir()
    try:
        assert (leaf / "cpuset.cpus").read_text().strip() == ""
        marker = tmp_path / "ran"
        plan = dataclasses.replace(plan_for_leaf(str(leaf / "cgroup.procs"), root_dir=tmp_path / "root"),
                                   argv=("/bin/sh", "-c", f"echo > {marker}"))
        started, report, removed = spawn(plan)
        assert isinstance(started, SetupFailure), started
        assert (started.stage, started.errno) == ("join cgroup", errno.ENOSPC), started
        assert not marker.exists() and not removed
        assert report.wait_status is not None, report
        assert (leaf / "tasks").read_text() == ""
    finally:
        leaf.rmdir()


def test_the_waiter_reads_the_accounting_then_removes_the_cgroup(backend: Backend, tmp_path: Path) -> None:
    cgroup = backend.create(f"end-{uuid.uuid4().hex[:8]}", NO_LIMITS)
    # dd's one block of 32 MiB, filled from /dev/zero: 32 MiB touched in the cgroup
    started, report, removed = spawn(plan_for(cgroup, tmp_path / "root", "/bin/dd", "if=/dev/zero",
                                              "of=/dev/null", f"bs={HOG_BYTES}", "count=1"))
    assert not isinstance(started, SetupFailure), started
    assert report.wait_status == 0
    assert removed
    assert not cgroup.exists() and not any(os.path.isdir(d) for d in cgroup.removal_dirs)
    assert len(report.cgroup_reads) == len(cgroup.final_reads)
    stats = cgroup.stats_from(report.cgroup_reads)  # read by the waiter only: the cgroup is gone now
    assert stats.memory_peak_bytes >= HOG_BYTES
    assert stats.oom_kill_count == 0


def test_a_cgroup_something_else_still_holds_is_left_to_the_daemon(backend: Backend, tmp_path: Path) -> None:
    cgroup = backend.create(f"end-{uuid.uuid4().hex[:8]}", NO_LIMITS)
    below = backend.create(f"below-{uuid.uuid4().hex[:8]}", NO_LIMITS, parent=cgroup)  # as a session's call
    try:
        started, report, removed = spawn(plan_for(cgroup, tmp_path / "root", "/bin/true"))
        assert not isinstance(started, SetupFailure), started
        assert report.wait_status == 0
        assert not removed and cgroup.exists()
        assert cgroup.stats_from(report.cgroup_reads).memory_peak_bytes > 0  # read all the same
    finally:
        below.remove()
        cgroup.remove()


def test_a_read_outside_the_cgroup_is_refused_before_anything_runs(backend: Backend, tmp_path: Path) -> None:
    cgroup = backend.create(f"end-{uuid.uuid4().hex[:8]}", NO_LIMITS)
    plan = dataclasses.replace(plan_for(cgroup, tmp_path / "root", "/bin/true"), cgroup_final_reads=("/etc/shadow",))
    try:
        started, _, removed = spawn(plan)
        assert isinstance(started, SetupFailure), started  # the handler never started
        assert started.stage == "open cgroup"
        assert "not a file of the execution's cgroup: /etc/shadow" in started.message
        assert not removed and cgroup.exists()
    finally:
        cgroup.remove()


# -- the cgroup made by the waiter ---------------------------------------------------------------------------

LIMITS = CgroupLimits(memory_max_bytes=64 << 20, cpu_share_percent=50, pids_max=16)


def made_by_waiter(cgroup: ExecCgroup, creation: CgroupCreation, root_dir: Path, *argv: str) -> JailPlan:
    return dataclasses.replace(plan_for(cgroup, root_dir, *argv), cgroup_create=creation.dirs,
                               cgroup_writes=creation.writes)


def test_the_waiter_makes_the_cgroup_with_its_limits_before_anything_runs(backend: Backend, tmp_path: Path) -> None:
    cgroup, creation = backend.plan_leaf(f"made-{uuid.uuid4().hex[:8]}", LIMITS)
    assert not any(os.path.exists(d) for d in creation.dirs)  # planned only
    assert {Path(path).name for path, _ in creation.writes} >= {"pids.max"}
    seen: dict[str, str] = {}
    members: list[int] = []

    def look() -> None:
        seen.update({path: Path(path).read_text().strip() for path, _ in creation.writes})
        members.extend(int(pid) for pid in Path(cgroup.procs_files[0]).read_text().split())

    started, report, removed = spawn(made_by_waiter(cgroup, creation, tmp_path / "root", "/bin/cat"), look)
    assert not isinstance(started, SetupFailure), started
    assert seen == dict(creation.writes)  # every limit as planned, while the handler ran
    assert started in members
    assert report.wait_status == 0 and removed
    assert not any(os.path.exists(d) for d in creation.dirs)


def test_a_limit_the_kernel_refuses_fails_the_sandbox_before_it_exists(backend: Backend, tmp_path: Path) -> None:
    cgroup, creation = backend.plan_leaf(f"made-{uuid.uuid4().hex[:8]}", LIMITS)
    pids_max = next(path for path, _ in creation.writes if path.endswith("/pids.max"))
    refused = dataclasses.replace(creation, writes=(*creation.writes[:-1], (pids_max, "lots")))
    marker = tmp_path / "ran"
    started, report, removed = spawn(made_by_waiter(cgroup, refused, tmp_path / "root", "/bin/sh", "-c",
                                                    f"echo > {marker}"))
    assert isinstance(started, SetupFailure), started
    assert (started.stage, started.errno) == (CREATE_CGROUP_STAGE, errno.EINVAL), started
    assert f"write lots to {pids_max}" in started.message
    assert not marker.exists() and not removed
    assert report.wait_status is None  # no pid 1 was ever made: no exit of one to report
    assert not any(os.path.exists(d) for d in creation.dirs)  # what it made is gone again


def test_a_cgroup_of_that_name_already_there_is_not_taken_nor_removed(backend: Backend, tmp_path: Path) -> None:
    name = f"made-{uuid.uuid4().hex[:8]}"
    cgroup, creation = backend.plan_leaf(name, LIMITS)
    other = backend.create(name, NO_LIMITS)  # the same directories, made by someone else first
    try:
        started, _, removed = spawn(made_by_waiter(cgroup, creation, tmp_path / "root", "/bin/true"))
        assert isinstance(started, SetupFailure), started
        assert (started.stage, started.errno) == (CREATE_CGROUP_STAGE, errno.EEXIST), started
        assert f"mkdir {creation.dirs[0]}" in started.message
        assert not removed and other.exists()
        assert all(Path(path).read_text().strip() != value for path, value in creation.writes
                   if path.endswith("/pids.max"))  # not written: not the execution's
    finally:
        other.remove()


@pytest.mark.parametrize("reaching", ["a file", "a directory"])
def test_a_plan_reaching_outside_the_cgroup_it_makes_is_refused(backend: Backend, tmp_path: Path,
                                                               reaching: str) -> None:
    cgroup, creation = backend.plan_leaf(f"made-{uuid.uuid4().hex[:8]}", LIMITS)
    outside = tmp_path / "not-a-cgroup"
    if reaching == "a file":  # a write to a file of no directory it makes
        refused, why = dataclasses.replace(creation, writes=((str(outside), "1"),)), "not a file of a cgroup made here"
    else:  # a directory to make outside the cgroup file systems
        refused, why = CgroupCreation((*creation.dirs, str(outside)), ()), "not in a cgroup file system"
    started, _, removed = spawn(made_by_waiter(cgroup, refused, tmp_path / "root", "/bin/true"))
    assert isinstance(started, SetupFailure), started
    assert started.stage == CREATE_CGROUP_STAGE
    assert f"{why}: {outside}" in started.message
    assert not outside.exists() and not removed
    assert not any(os.path.exists(d) for d in creation.dirs)  # refused before anything was made


def test_through_the_executor_a_taken_name_fails_the_execution_and_stays(tmp_path: Path) -> None:
    config = EngineConfig(state_dir=tmp_path / "state", instance=f"test-{uuid.uuid4().hex[:8]}",
                          sandbox_ids=fresh_ids())
    eid = uuid.uuid4().hex[:16]

    async def run() -> list[Event]:
        executor = await Executor.create(config)  # its backend's base: the one made below is in it
        other = detect_backend(config.cgroup_root, config.instance).create(eid, NO_LIMITS)
        try:
            spec = ExecutionSpec(argv=("/bin/true",), seccomp_bpf=ProfileCache().get(PROFILES / "default.json").bpf)
            events = [event async for event in executor.execute(spec, execution_id=eid)]
            assert other.exists()  # the release removed nothing of a name its waiter did not make
            return events
        finally:
            other.remove()
            await executor.close()

    events = asyncio.run(run())
    result = events[-1]
    assert isinstance(result, Result), events
    assert (result.status, result.setup_stage) == (Status.SETUP_FAILED, CREATE_CGROUP_STAGE), result
    assert not any(isinstance(event, Started) for event in events)
