"""Placement on v2: the sandbox's pid 1 is born in its leaf (``clone3`` with ``CLONE_INTO_CGROUP``), not forked
and then moved — a move is a ``cgroup.procs`` write, and the first after a quiet spell waits out an RCU grace
period (measured in this VM: fork + write 38 ms, clone3 14 ms).

The spawner is driven directly, as the executor drives it, with a plan whose ``cgroup.procs`` path names a file
that does not exist: the waiter opens that file only to move a process, so the sandbox can stand only if its
first process was born in the leaf."""

from __future__ import annotations

import asyncio
import os
import struct
from pathlib import Path

from sandboxd.engine.cgroups import fsutil
from sandboxd.engine.cgroups.v2 import V2ExecCgroup
from sandboxd.engine.child.plan import JailPlan, RootPlan
from sandboxd.engine.config import DEFAULT_SYSTEM_BINDS
from sandboxd.engine.reports import ExitReport, SetupFailure
from sandboxd.engine.spawnclient import SpawnerClient

from .conftest import V2_MARKS, RunCgroup, procs

pytestmark = V2_MARKS

ALLOW_ALL = struct.pack("=HBBI", 0x06, 0, 0, 0x7FFF0000)  # BPF_RET|BPF_K, SECCOMP_RET_ALLOW
NOBODY = 65534


def read_all(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    os.close(fd)
    return data


async def _spawn(plan: JailPlan, stdio: tuple[int, int, int]) -> tuple[int | SetupFailure, ExitReport]:
    spawner = await SpawnerClient.start()
    try:
        handle = spawner.spawn(plan, stdio)
        started, exited = await handle.started, await handle.exited
        await handle.removed  # the waiter's last word
        return started, exited
    finally:
        await spawner.close()


def test_pid_1_is_born_in_its_leaf_and_never_moved(run_cgroup: RunCgroup, tmp_path: Path) -> None:
    leaf = run_cgroup.make_child("placed")
    (tmp_path / "root").mkdir()
    root = RootPlan(mountpoint=str(tmp_path / "root"), system_binds=DEFAULT_SYSTEM_BINDS, etc_binds=(),
                    etc_files={}, binds=(), workdir="/work", workdir_source=None, tmpfs_size_bytes=1 << 20,
                    uid=NOBODY, gid=NOBODY)
    plan = JailPlan(execution_id="placed", argv=("/bin/cat", "/proc/self/cgroup"), env={},
                    cgroup_procs=(str(leaf / "no-such-cgroup.procs"),), hostname="placed", root=root, rlimits={},
                    seccomp_bpf=ALLOW_ALL)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    try:
        started, exited = asyncio.run(_spawn(plan, (null, out_w, null)))
        os.close(out_w)
        output = read_all(out_r)
        assert procs(leaf) == []
    finally:
        os.close(null)
        run_cgroup.remove_child(leaf, expected=set())
    # a move would have failed: "join cgroup: No such file or directory"
    assert not isinstance(started, SetupFailure), started
    assert exited.wait_status == 0
    assert output == b"0::/\n"  # the leaf is the root of its cgroup namespace


def test_its_waiter_reads_the_leaf_then_removes_it(run_cgroup: RunCgroup, tmp_path: Path) -> None:
    """Once everything in the leaf has ended, the waiter reads its accounting files (in its exit report), then
    removes it (what lets the executor's Result come without an rmdir of its own)."""
    leaf = V2ExecCgroup(run_cgroup.make_child("ended"), fsutil.DirOps())
    (tmp_path / "root").mkdir()
    root = RootPlan(mountpoint=str(tmp_path / "root"), system_binds=DEFAULT_SYSTEM_BINDS, etc_binds=(),
                    etc_files={}, binds=(), workdir="/work", workdir_source=None, tmpfs_size_bytes=1 << 20,
                    uid=NOBODY, gid=NOBODY)
    plan = JailPlan(execution_id="ended", argv=("/bin/true",), env={}, cgroup_procs=leaf.procs_files,
                    hostname="ended", root=root, rlimits={}, seccomp_bpf=ALLOW_ALL,
                    cgroup_final_reads=leaf.final_reads, cgroup_removal=leaf.removal_dirs)
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    try:
        started, exited = asyncio.run(_spawn(plan, (null, null, null)))
    finally:
        os.close(null)
        if leaf.exists():
            run_cgroup.remove_child(leaf.path, expected=set())
    assert not isinstance(started, SetupFailure), started
    assert exited.wait_status == 0
    assert not leaf.exists()
    cpu_stat = exited.cgroup_reads[leaf.final_reads.index(str(leaf.path / "cpu.stat"))]
    assert cpu_stat is not None and cpu_stat.startswith(b"usage_usec ")
