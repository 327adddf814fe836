"""Placement on v2: the sandbox's pid 1 is forked straight into its leaf (``clone3`` with
``CLONE_INTO_CGROUP``), not forked and then moved — a move is a ``cgroup.procs`` write, and the first after a
quiet spell waits out an RCU grace period (measured in this VM: fork + write 38 ms, clone3 14 ms)."""

from __future__ import annotations

import os
from pathlib import Path

from sandboxd.engine.child.waiter import _fork_into, open_v2_leaf

from .conftest import V2_MARKS, RunCgroup, procs

pytestmark = V2_MARKS


def test_pid_1_is_born_in_its_leaf(run_cgroup: RunCgroup) -> None:
    leaf = run_cgroup.make_child("placed")
    try:
        read_end, write_end = os.pipe()
        leaf_fd = open_v2_leaf((str(leaf / "cgroup.procs"),))
        assert leaf_fd >= 0
        pid, to_write = _fork_into(leaf_fd, [])
        if pid == 0:  # the child: say where it was born, then go
            os.write(write_end, Path("/proc/self/cgroup").read_bytes())
            os._exit(0)
        os.close(write_end)
        born_in = os.read(read_end, 4096).decode().strip()
        os.close(read_end)
        assert pid > 0 and to_write == []
        assert os.waitpid(pid, 0)[1] == 0
        assert born_in == f"0::/{leaf.relative_to(run_cgroup.mount)}"
        assert procs(leaf) == []
    finally:
        run_cgroup.remove_child(leaf, expected=set())


def test_a_v1_plan_is_forked_and_moved() -> None:
    assert open_v2_leaf(("/sys/fs/cgroup/memory/x/cgroup.procs", "/sys/fs/cgroup/pids/x/cgroup.procs")) == -1
