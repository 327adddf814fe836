"""The daemon refuses to start, with a clear error naming the cgroup and the remedy and a non-zero exit, when
its cgroup is not delegated to it: the root cgroup, a cgroup holding other processes, a cgroup without the
memory, cpu and pids controllers. It touches nothing there."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import DAEMON_START_TIMEOUT_S, V2_MARKS, RunCgroup, cgroup_daemon, children, procs

pytestmark = V2_MARKS


def start_refused(tmp_path: Path, cgroup: Path) -> str:
    daemon = cgroup_daemon(tmp_path, cgroup)
    done = subprocess.run(daemon.command(), capture_output=True, text=True, env=daemon.env,
                          timeout=DAEMON_START_TIMEOUT_S)
    output = done.stdout + done.stderr
    assert done.returncode == 69, (done.returncode, output)  # EX_UNAVAILABLE: the unit does not restart it
    assert "cannot start" in output and "Delegate=yes" in output, output
    assert not daemon.socket.exists()
    return output


@pytest.fixture
def child(run_cgroup: RunCgroup) -> Iterator[Path]:
    cgroup = run_cgroup.make_child("refused")
    try:
        yield cgroup
    finally:
        assert run_cgroup.remove_child(cgroup, expected=set()) == []


def test_refuses_the_root_cgroup(tmp_path: Path, run_cgroup: RunCgroup) -> None:
    before = children(run_cgroup.mount)
    output = start_refused(tmp_path, run_cgroup.mount)
    assert f"root cgroup ({run_cgroup.mount})" in output, output
    assert children(run_cgroup.mount) == before  # no supervisor made there


def test_refuses_a_cgroup_with_other_processes(tmp_path: Path, child: Path) -> None:
    other = subprocess.Popen(["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec sleep 300', str(child)])
    try:
        while other.pid not in procs(child):
            assert other.poll() is None
        output = start_refused(tmp_path, child)
        assert f"cgroup {child} also holds processes that are not sandboxd ({other.pid})" in output, output
        assert children(child) == []
        assert procs(child) == [other.pid]  # not moved
    finally:
        other.kill()
        other.wait()


def test_refuses_a_cgroup_without_controllers(tmp_path: Path, child: Path) -> None:
    inner = child / "inner"  # child's subtree_control is empty: nothing is delegated to inner
    inner.mkdir()
    try:
        output = start_refused(tmp_path, inner)
        assert f"{inner} does not offer memory, cpu, pids" in output, output
        assert children(inner) == []
    finally:
        inner.rmdir()
