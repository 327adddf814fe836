"""Killing on v2: a wall timeout and a cancel end the whole tree of the execution with one write to the leaf's
cgroup.kill: background children and a double-forked orphan included; no process of the sandbox uid is left."""

from __future__ import annotations

import os

import pytest

from sandboxd.base.limits import Limits
from sandboxd.engine.cgroups.v2 import V2ExecCgroup
from sandboxd.engine.result import Status

from .conftest import V2_MARKS, Engine, Run, wait_gone

pytestmark = V2_MARKS

# pid 1 (sh), two background sleeps, and an orphan re-parented to pid 1: at least four processes in the leaf.
TREE = ("/bin/sh", "-c", "sleep 300 & sleep 300 & (sleep 300 &) ; echo ready; wait")
WALL_MS = 8000


def assert_tree_killed(engine: Engine, run: Run, *, by_cgroup_kill: bool = True) -> None:
    assert run.started is not None and run.started.pid in run.leaf_pids_seen
    assert len(run.leaf_pids_seen) >= 4, run.leaf_pids_seen
    assert run.leaf is not None
    assert ("1" in engine.recorder.kill_writes(run.leaf)) is by_cgroup_kill
    assert wait_gone(run.leaf_pids_seen, engine.config.sandbox_ids) == []


def test_wall_timeout_kills_the_tree(engine: Engine) -> None:
    run = engine.run(engine.spec(*TREE, limits=Limits(wall_time_ms=WALL_MS, cpu_time_ms=None)))
    assert run.result.status is Status.TIMEOUT, run.result
    assert run.stdout == b"ready\n"
    assert WALL_MS <= run.result.wall_time_ms < WALL_MS + 15_000, run.result.wall_time_ms
    assert_tree_killed(engine, run)


def test_cancel_kills_the_tree(engine: Engine) -> None:
    run = engine.run(engine.spec(*TREE, limits=Limits(wall_time_ms=300_000, cpu_time_ms=None)),
                     cancel_when=lambda seen: len(seen) >= 4)
    assert run.result.status is Status.CANCELLED, run.result
    assert run.result.wall_time_ms < 60_000
    assert_tree_killed(engine, run)


def test_without_cgroup_kill_the_freezer_kills_the_tree(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels before 5.14 (Debian 11's 5.10) have no cgroup.kill: freeze the leaf, SIGKILL each task, thaw."""
    has = V2ExecCgroup._has
    monkeypatch.setattr(V2ExecCgroup, "_has", lambda cg, name: name != "cgroup.kill" and has(cg, name))
    run = engine.run(engine.spec(*TREE, limits=Limits(wall_time_ms=WALL_MS, cpu_time_ms=None)))
    assert run.result.status is Status.TIMEOUT, run.result
    assert_tree_killed(engine, run, by_cgroup_kill=False)
    assert run.leaf is not None
    freezes = [value for path, value in engine.recorder.writes if path == str(run.leaf / "cgroup.freeze")]
    assert freezes[:2] == ["1", "0"], freezes


def test_executor_layout_while_running(engine: Engine) -> None:
    """The engine's process sits in <base>/supervisor (with its spawner), the handler in <base>/exec-<id>."""
    run = engine.run(engine.spec("/bin/sh", "-c", "echo hi", limits=Limits(wall_time_ms=60_000)))
    assert run.result.status is Status.OK, run.result
    assert run.started is not None
    leaf = run.started.cgroup
    assert leaf == f"exec-{run.started.execution_id}"
    assert sorted(run.layout) == [".", leaf, "supervisor"], run.layout
    assert run.layout["."] == []  # no internal processes: the base only hands controllers down
    assert os.getpid() in run.layout["supervisor"] and len(run.layout["supervisor"]) >= 2  # and its spawner
