"""Placement on v2: the sandbox's pid 1 is born in its leaf (``clone3`` with ``CLONE_INTO_CGROUP``), not forked
and then moved — a move is a ``cgroup.procs`` write, and the first after a quiet spell waits out an RCU grace
period (measured in this VM: fork + write 38 ms, clone3 14 ms).

The waiter is driven directly, as the spawner starts it, with a plan whose ``cgroup.procs`` path names a file
that does not exist: the waiter opens that file only to move a process, so the sandbox can stand only if its
first process was born in the leaf."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from sandboxd.engine.child.plan import JailPlan, RootPlan
from sandboxd.engine.child.waiter import open_waiter
from sandboxd.engine.config import DEFAULT_SYSTEM_BINDS
from sandboxd.engine.spawnclient import plan_memfd
from sandboxd.engine.spawner import start_waiter

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


def test_pid_1_is_born_in_its_leaf_and_never_moved(run_cgroup: RunCgroup, tmp_path: Path) -> None:
    leaf = run_cgroup.make_child("placed")
    (tmp_path / "root").mkdir()
    root = RootPlan(mountpoint=str(tmp_path / "root"), system_binds=DEFAULT_SYSTEM_BINDS, etc_binds=(),
                    etc_files={}, binds=(), workdir="/work", workdir_source=None, tmpfs_size_bytes=1 << 20,
                    uid=NOBODY, gid=NOBODY)
    plan = JailPlan(execution_id="placed", argv=("/bin/cat", "/proc/self/cgroup"), env={},
                    cgroup_procs=(str(leaf / "no-such-cgroup.procs"),), hostname="placed", root=root, rlimits={},
                    seccomp_bpf=ALLOW_ALL)
    waiter_fd = open_waiter()
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    theirs = [null, out_w, null, plan_memfd(plan.encode()), err_w, status_w]
    try:
        pid = start_waiter(waiter_fd, theirs)
    finally:
        for fd in {*theirs, waiter_fd}:
            os.close(fd)
    try:
        setup_failure, output, status = read_all(err_r), read_all(out_r), read_all(status_r)
        assert os.waitpid(pid, 0)[1] == 0
        assert procs(leaf) == []
    finally:
        run_cgroup.remove_child(leaf, expected=set())
    assert setup_failure == b""  # a move would have failed: "join cgroup: No such file or directory"
    assert output == b"0::/\n"  # the leaf is the root of its cgroup namespace
    assert status.splitlines()[-1].startswith(b"exit 0 ")
