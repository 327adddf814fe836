"""The daemon on v2, as under systemd with Delegate=yes: started in a cgroup of its own, it moves itself into
<own>/supervisor, enables memory, cpu and pids for its subtree and makes one leaf per execution, which goes
away with the execution. Limits and kills work end to end through its API."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from sandboxd.cli.client import pb

from .conftest import REQUIRED_CONTROLLERS, V2_MARKS, CgroupDaemon, children, procs, read, wait_gone

pytestmark = V2_MARKS

TREE = ["/bin/sh", "-c", "sleep 300 & sleep 300 & echo ready; wait"]


def next_of(events: Iterator[pb.ExecuteEvent], kind: str) -> pb.ExecuteEvent:
    for event in events:
        if event.WhichOneof("event") == kind:
            return event
        assert event.WhichOneof("event") != "result", event
    raise AssertionError(f"no {kind} event")


def test_supervisor_and_one_leaf_per_execution(daemon: CgroupDaemon) -> None:
    base = daemon.cgroup
    assert daemon.process is not None
    with daemon.client() as client:
        events = client.execute(command=TREE, limits={"wall_time_ms": 300_000, "memory_max_bytes": 96 << 20,
                                                      "pids_max": 16, "cpu_share_percent": 50})
        started = next_of(events, "started").started
        assert next_of(events, "output").output.data == b"ready\n"
        leaf = base / started.cgroup
        try:
            # While it runs: no process in the base itself, the daemon in supervisor, the handler in its leaf.
            assert procs(base) == []
            assert children(base) == sorted(["supervisor", started.cgroup])
            assert started.cgroup == f"exec-{started.execution_id}"
            assert daemon.process.pid in procs(base / "supervisor")
            relative = (base / "supervisor").relative_to("/sys/fs/cgroup")
            assert Path(f"/proc/{daemon.process.pid}/cgroup").read_text() == f"0::/{relative}\n"
            assert set(read(base / "cgroup.subtree_control").split()) >= set(REQUIRED_CONTROLLERS)
            in_leaf = procs(leaf)
            assert started.pid in in_leaf and len(in_leaf) >= 3, in_leaf  # sh and its two sleeps
            assert (read(leaf / "memory.max"), read(leaf / "pids.max"), read(leaf / "cpu.max")) == (
                str(96 << 20), "17", "50000 100000")  # pids: the 16 asked for, and the sandbox's init
            assert read(leaf / "memory.oom.group") == "1"
            # What the API reports about it comes from the same leaf.
            info = client.info()
            assert (info.cgroup_backend, info.cgroup_mode, info.cgroup_base) == ("v2", "unified", str(base))
            [running] = client.list_executions()
            assert (running.execution_id, running.pid) == (started.execution_id, started.pid)
            assert running.memory_peak_bytes > 0
        finally:
            client.cancel(started.execution_id)
        result = next_of(events, "result").result
    assert pb.Status.Name(result.status) == "CANCELLED", result
    # The Result is sent after the execution was released: its leaf and its whole tree are gone.
    assert children(base) == ["supervisor"]
    assert wait_gone(set(in_leaf), daemon.ids) == []


def test_memory_limit_through_the_daemon(daemon: CgroupDaemon) -> None:
    limit = 48 << 20
    hog = "x = []\nwhile True:\n    x.append(bytearray(4 << 20))\n"
    with daemon.client() as client:
        outcome = client.run_command(["/usr/bin/python3", "-c", hog],
                                     limits={"memory_max_bytes": limit, "wall_time_ms": 120_000})
    assert outcome.status_name == "MEMORY_LIMIT", outcome.result
    assert 0.8 * limit <= outcome.result.usage.memory_peak_bytes <= 1.05 * limit, outcome.result.usage
    assert children(daemon.cgroup) == ["supervisor"]


def test_wall_timeout_through_the_daemon(daemon: CgroupDaemon) -> None:
    with daemon.client() as client:
        events = client.execute(command=TREE, limits={"wall_time_ms": 6000})
        leaf = daemon.cgroup / next_of(events, "started").started.cgroup
        next_of(events, "output")
        in_leaf = procs(leaf)
        result = next_of(events, "result").result
    assert pb.Status.Name(result.status) == "TIMEOUT", result
    assert len(in_leaf) >= 3, in_leaf
    assert not leaf.exists()
    assert wait_gone(set(in_leaf), daemon.ids) == []
    assert os.path.isdir(daemon.cgroup / "supervisor")
