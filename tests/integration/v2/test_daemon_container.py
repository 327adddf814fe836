"""The daemon in a container: started inside a new cgroup namespace whose root is a delegated subtree, with
cgroup2 mounted afresh — as a container runtime starts a privileged container with a private cgroup namespace
and a writable /sys/fs/cgroup. Its /proc/self/cgroup says ``0::/``, like the host's root cgroup; it must take
that root as delegated to it (it is the container's own cgroup), not refuse it as the host's. It moves itself
into <root>/supervisor and runs executions in leaves beside it, which the host sees below the subtree."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import daemon_harness
import pytest

from sandboxd.cli.client import pb

from .conftest import (
    DAEMON_START_TIMEOUT_S,
    REQUIRED_CONTROLLERS,
    V2_MARKS,
    CgroupDaemon,
    RunCgroup,
    cgroup_daemon,
    children,
    procs,
    read,
    wait_gone,
)

pytestmark = V2_MARKS

# $1: the delegated cgroup; then sandboxd's command line. Joins the cgroup, then enters new cgroup and mount
# namespaces (the cgroup namespace's root is the cgroup joined), replaces the host's cgroup2 mount there by
# one of its own (which shows the namespace's root) and becomes sandboxd — one process throughout, alone in
# the cgroup, as a container's init is.
CONTAINER_START = """\
set -e
echo $$ > "$1/cgroup.procs"
shift
exec unshare --cgroup --mount --propagation private /bin/sh -c \
    'umount /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec "$@"' container-start "$@"
"""


@dataclass
class ContainerDaemon(CgroupDaemon):
    def command(self) -> list[str]:
        return ["/bin/sh", "-c", CONTAINER_START, "container-start", str(self.cgroup),
                *daemon_harness.Daemon.command(self)]


@pytest.fixture
def contained(run_cgroup: RunCgroup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ContainerDaemon]:
    monkeypatch.setattr(daemon_harness, "START_TIMEOUT_S", DAEMON_START_TIMEOUT_S)
    container = run_cgroup.make_child("container")
    made = cgroup_daemon(tmp_path, container)
    daemon = ContainerDaemon(made.root, made.instance, made.config_path, made.env, made.ids, cgroup=container)
    status = None
    try:
        daemon.start()
        yield daemon
    finally:
        if daemon.process is not None:
            status = daemon.stop()
        left = run_cgroup.remove_child(container, expected={"supervisor"})
    assert status == 0, f"sandboxd exited {status}:\n{daemon.logs()}"
    assert not left, f"cgroups left behind in {container}: {left}"
    assert not wait_gone(set(daemon_harness.sandbox_processes(daemon.ids)), daemon.ids)


def test_the_root_of_its_cgroup_namespace_is_delegated_to_it(contained: ContainerDaemon,
                                                             run_cgroup: RunCgroup) -> None:
    assert contained.process is not None
    pid = contained.process.pid
    container = contained.cgroup
    # Seen from inside: the root of its namespace. Seen from the host: the subtree, with it in supervisor.
    supervisor = (container / "supervisor").relative_to(run_cgroup.mount)
    assert Path(f"/proc/{pid}/cgroup").read_text() == f"0::/{supervisor}\n"
    assert os.readlink(f"/proc/{pid}/ns/cgroup") != os.readlink("/proc/self/ns/cgroup")
    assert pid in procs(container / "supervisor") and procs(container) == []  # (with its spawner)
    assert set(read(container / "cgroup.subtree_control").split()) >= set(REQUIRED_CONTROLLERS)
    with contained.client() as client:
        info = client.info()
        assert (info.cgroup_backend, info.cgroup_base) == ("v2", "/sys/fs/cgroup")  # its own view
        events = client.execute(command=["/bin/sh", "-c", "echo ready; sleep 300"],
                                limits={"memory_max_bytes": 64 << 20, "pids_max": 8, "wall_time_ms": 300_000})
        started = next(e.started for e in events if e.WhichOneof("event") == "started")
        leaf = container / started.cgroup  # the execution's leaf, below the container's cgroup on the host
        try:
            assert next(e for e in events if e.WhichOneof("event") == "output").output.data == b"ready\n"
            assert children(container) == sorted(["supervisor", started.cgroup])
            assert started.pid in procs(leaf)
            assert (read(leaf / "memory.max"), read(leaf / "pids.max")) == (str(64 << 20), "9")
        finally:
            client.cancel(started.execution_id)
        result = next(e.result for e in events if e.WhichOneof("event") == "result")
    assert pb.Status.Name(result.status) == "CANCELLED", result
    assert children(container) == ["supervisor"]
    assert "root cgroup" not in contained.logs()
