"""A sandbox's end, in its cgroup: once everything in it has ended, the sandbox's waiter reads its accounting
(in its exit report) and then removes it, saying so — while the daemon writes the outcome down, with no rmdir
of its own (on v1 one waits for the kernel's cgroup lock). The spawner is driven directly, as
the executor drives it, on a leaf of this host's own backend."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxd.engine.cgroups import Backend, CgroupLimits, ExecCgroup, detect_backend
from sandboxd.engine.child.plan import JailPlan, RootPlan
from sandboxd.engine.config import DEFAULT_SYSTEM_BINDS, EngineConfig
from sandboxd.engine.reports import ExitReport, SetupFailure
from sandboxd.engine.seccomp.profile import ProfileCache
from sandboxd.engine.spawnclient import SpawnerClient

from .conftest import PROFILES

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
    root_dir.mkdir()
    root = RootPlan(mountpoint=str(root_dir), system_binds=DEFAULT_SYSTEM_BINDS, etc_binds=(), etc_files={},
                    binds=(), workdir="/work", workdir_source=None, tmpfs_size_bytes=1 << 20, uid=NOBODY,
                    gid=NOBODY)
    return JailPlan(execution_id=cgroup.name, argv=argv, env={}, cgroup_procs=cgroup.procs_files,
                    hostname="end", root=root, rlimits={},
                    seccomp_bpf=ProfileCache().get(PROFILES / "default.json").bpf,
                    cgroup_final_reads=cgroup.final_reads, cgroup_removal=cgroup.removal_dirs)


def spawn(plan: JailPlan) -> tuple[int | SetupFailure, ExitReport, bool]:
    """What started, the exit report, and whether the waiter then removed the cgroup."""
    async def run() -> tuple[int | SetupFailure, ExitReport, bool]:
        spawner = await SpawnerClient.start()
        null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        try:
            handle = spawner.spawn(plan, (null, null, null))
            return await handle.started, await handle.exited, await handle.removed
        finally:
            os.close(null)
            await spawner.close()

    return asyncio.run(run())


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
