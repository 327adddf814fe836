"""Fixtures of the cgroup v2 tests, which run for real only inside the VM suite (tests/vm/run-v2-suite).

There pytest is started alone in a cgroup of its own, as systemd starts a unit with ``Delegate=yes``
(``/sys/fs/cgroup/sandboxd-test.service``). The session fixture treats that cgroup as delegated to the test
run: it moves pytest into ``<own>/pytest`` and enables memory, cpu and pids for the subtree. Each test then gets
a fresh child cgroup that plays the daemon's own (delegated) cgroup:

    <own>/                       the test run's cgroup (subtree: +memory +cpu +pids)
        pytest/                  pytest between tests
        engine-<id>/             an engine test: pytest is moved here; the Executor moves it on into
            supervisor/          <engine-id>/supervisor and creates exec-<id> leaves beside it
            exec-<id>/
        daemon-<id>/             a daemon test: a real sandboxd process is started in here
            supervisor/
            exec-<id>/

Every test checks afterwards that no leaf, mount or process of the sandbox uid is left. On a host without a
cgroup2 hierarchy offering memory, cpu and pids (this project's hybrid-cgroup hosts), every module skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import daemon_harness  # tests/integration is on sys.path (no __init__ there)
import pytest
from daemon_harness import Daemon, fresh_ids, make_daemon, sandbox_processes

from sandboxd.base.errors import CgroupError
from sandboxd.base.limits import Limits
from sandboxd.engine.cgroups import fsutil
from sandboxd.engine.cgroups.base import CgroupCreation, CgroupLimits, CgroupStats
from sandboxd.engine.cgroups.v2 import REQUIRED_CONTROLLERS, V2Backend, V2ExecCgroup
from sandboxd.engine.config import EngineConfig
from sandboxd.engine.executor import Executor
from sandboxd.engine.ids import IdRange
from sandboxd.engine.result import Output, Result, Started, Stream
from sandboxd.engine.seccomp.profile import ProfileCache
from sandboxd.engine.spec import ExecutionSpec

REPO = Path(__file__).resolve().parents[3]
DEFAULT_PROFILE = REPO / "seccomp-profiles" / "default.json"


def cgroup2_mount() -> Path | None:
    """Where the unified hierarchy is mounted (its root, not a bind of a subtree), if anywhere."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if "-" in fields:
            sep = fields.index("-")
            if fields[sep + 1] == "cgroup2" and fields[3] == "/":
                return Path(fields[4])
    return None


def own_cgroup_path() -> str | None:
    """This process's cgroup in the unified hierarchy (the ``0::`` line of /proc/self/cgroup)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def v2_unavailable_reason() -> str | None:
    """Why the cgroup v2 tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "the cgroup v2 tests need root"
    mount, own = cgroup2_mount(), own_cgroup_path()
    if mount is None or own is None:
        return "no cgroup2 hierarchy is mounted here (run tests/vm/run-v2-suite)"
    try:
        offered = (mount / own.lstrip("/") / "cgroup.controllers").read_text().split()
    except OSError as e:
        return f"cannot read the cgroup.controllers of {own} under {mount}: {e}"
    missing = [c for c in REQUIRED_CONTROLLERS if c not in offered]
    if missing:
        return (f"the cgroup2 hierarchy at {mount} offers {' '.join(offered) or 'no controllers'} to {own}, "
                f"not {' '.join(missing)}: this host's controllers are on cgroup v1 (run tests/vm/run-v2-suite)")
    return None


UNAVAILABLE = v2_unavailable_reason()
# Every v2 test module sets ``pytestmark = V2_MARKS``.
V2_MARKS = [pytest.mark.root, pytest.mark.cgroup_v2,
            pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")]


def read(path: Path) -> str:
    return fsutil.read_text(path).strip()


def procs(cgroup: Path) -> list[int]:
    return fsutil.parse_pids(fsutil.read_text(cgroup / "cgroup.procs"))


def move(pid: int, cgroup: Path) -> None:
    fsutil.write_text(cgroup / "cgroup.procs", str(pid))


def children(cgroup: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(cgroup) if entry.is_dir(follow_symlinks=False))


def kill_and_remove(cgroup: Path) -> None:
    """Tear down a cgroup tree the test left (so later tests start clean); the test fails anyway."""
    for name in children(cgroup):
        kill_and_remove(cgroup / name)
    if (cgroup / "cgroup.kill").exists():
        fsutil.write_text(cgroup / "cgroup.kill", "1")
    fsutil.remove_dir(fsutil.DirOps(), str(cgroup), budget_s=10)


@dataclass
class RunCgroup:
    """The cgroup the test run was started in, delegated to it: children are made below it."""

    mount: Path  # where cgroup2 is mounted
    own: Path
    home: Path  # <own>/pytest

    def make_child(self, prefix: str) -> Path:
        child = self.own / f"{prefix}-{uuid.uuid4().hex[:8]}"
        child.mkdir()
        return child

    def remove_child(self, child: Path, *, expected: set[str]) -> list[str]:
        """Remove ``child`` and what is below it; return the names found below it that were not expected."""
        found = children(child)
        for name in found:
            kill_and_remove(child / name)
        fsutil.remove_dir(fsutil.DirOps(), str(child), budget_s=10)
        return [name for name in found if name not in expected]


@pytest.fixture(scope="session")
def run_cgroup() -> Iterator[RunCgroup]:
    if UNAVAILABLE is not None:
        pytest.skip(UNAVAILABLE)
    mount, path = cgroup2_mount(), own_cgroup_path()
    assert mount is not None and path is not None
    own = mount / path.lstrip("/")
    if path == "/":
        pytest.fail("run the v2 tests in a cgroup of their own (as tests/vm/guest-run does), not the root cgroup")
    others = sorted(set(procs(own)) - {os.getpid()})
    if others:
        pytest.fail(f"pytest must be alone in its cgroup {own} (it also holds {others}): the tests treat it as "
                    "delegated to them, like a systemd unit with Delegate=yes")
    home = own / "pytest"
    home.mkdir()
    move(os.getpid(), home)
    controllers = " ".join(f"+{c}" for c in REQUIRED_CONTROLLERS)
    fsutil.write_text(own / "cgroup.subtree_control", controllers)
    try:
        yield RunCgroup(mount, own, home)
    finally:
        fsutil.write_text(own / "cgroup.subtree_control", controllers.replace("+", "-"))
        move(os.getpid(), own)
        home.rmdir()


# --- the engine, in this process ---------------------------------------------------------------------------

@dataclass
class Run:
    started: Started | None
    result: Result
    leaf: Path | None  # the execution's cgroup, gone by now
    stdout: bytes = b""
    stderr: bytes = b""
    leaf_pids_seen: set[int] = field(default_factory=set)  # every pid seen in the leaf while it ran
    final_files: dict[str, str] = field(default_factory=dict)  # the leaf's files at the last stats() read
    layout: dict[str, list[int]] = field(default_factory=dict)  # pids per child of the base at Started


LIMIT_FILES = ("memory.max", "memory.swap.max", "memory.oom.group", "cpu.max", "pids.max")


def wrong_limits(files: dict[str, str], limits: CgroupLimits) -> dict[str, tuple[str | None, object]]:
    """Which of a leaf's limit files (name → content, read or planned) do not hold what ``limits`` asks: the
    memory and pids limits, and the OOM group that kills the whole leaf."""
    expected = {"memory.max": limits.memory_max_bytes, "pids.max": limits.pids_max, "memory.oom.group": 1}
    return {name: (files.get(name), want) for name, want in expected.items()
            if want is not None and files.get(name) != str(want)}


class Recorder:
    """What the engine did to the kernel, seen from this process: the leaves it planned or created — a leaf of
    its own is made by the sandbox's waiter, which writes the planned limits before the sandbox's first process
    exists or fails it: the plan is checked here before anything is spawned, and the limit files are read back
    while the sandbox runs; a session's cgroups are made here, read back before anything runs in them — its
    writes to cgroup files, its last accounting read."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.writes: list[tuple[str, str]] = []
        self.leaves: list[Path] = []
        self.limit_files: dict[str, str] = {}
        self.final_files: dict[str, str] = {}
        original_write = fsutil.write_text
        original_create = V2Backend.create
        original_plan_leaf = V2Backend.plan_leaf
        original_stats = V2ExecCgroup.stats
        original_stats_from = V2ExecCgroup.stats_from

        def write_text(path: fsutil.StrPath, value: str) -> None:
            self.writes.append((os.fsdecode(os.fspath(path)), value))
            original_write(path, value)

        def create(backend: V2Backend, execution_id: str, limits: CgroupLimits, **placement: Any) -> V2ExecCgroup:
            cg = original_create(backend, execution_id, limits, **placement)
            self.leaves.append(cg.path)
            self.limit_files = {name: read(cg.path / name) for name in LIMIT_FILES}
            wrong = wrong_limits(self.limit_files, limits)
            if wrong:
                cg.remove()  # nothing runs in a leaf whose limits are not what was asked
                raise CgroupError(f"limits not in place in {cg.path}: {wrong or self.limit_files}")
            return cg

        def plan_leaf(backend: V2Backend, execution_id: str, limits: CgroupLimits,
                      ) -> tuple[V2ExecCgroup, CgroupCreation]:
            cg, creation = original_plan_leaf(backend, execution_id, limits)
            self.leaves.append(cg.path)
            planned = {Path(path).name: value for path, value in creation.writes}
            wrong = wrong_limits(planned, limits)
            if wrong or creation.dirs != (str(cg.path),):
                raise CgroupError(f"limits not planned for {cg.path}: {wrong or planned}")  # nothing is spawned
            return cg, creation

        def stats(cg: V2ExecCgroup) -> CgroupStats:
            result = original_stats(cg)
            with contextlib.suppress(CgroupError):
                self.final_files = {name: read(cg.path / name) for name in (
                    "memory.events", "memory.peak", "cpu.stat", "pids.events", "pids.current", "cpu.max")}
            return result

        monkeypatch.setattr(fsutil, "write_text", write_text)
        monkeypatch.setattr(V2Backend, "create", create)
        monkeypatch.setattr(V2Backend, "plan_leaf", plan_leaf)
        def stats_from(cg: V2ExecCgroup, contents: Sequence[bytes | None]) -> CgroupStats:
            # what the sandbox's waiter read of the leaf at the end, before it removed it
            self.final_files = {Path(path).name: content.decode() for path, content in
                                zip(cg.final_reads, contents, strict=False) if content is not None}
            return original_stats_from(cg, contents)

        monkeypatch.setattr(V2ExecCgroup, "stats", stats)
        monkeypatch.setattr(V2ExecCgroup, "stats_from", stats_from)

    def read_limits(self, leaf: Path) -> None:
        """The limit files of a running sandbox's leaf, as its waiter wrote them before its first process."""
        self.limit_files = {name: read(leaf / name) for name in LIMIT_FILES}

    def kill_writes(self, leaf: Path) -> list[str]:
        return [value for path, value in self.writes if path == str(leaf / "cgroup.kill")]


class Engine:
    """Runs specs on a fresh Executor per call (each with its own event loop). Each run gets a fresh child of
    the test run's cgroup that plays the daemon's delegated cgroup, with pytest alone in it; the Executor
    moves pytest into ``<child>/supervisor`` and creates the execution's leaf beside it."""

    def __init__(self, run_cgroup: RunCgroup, config: EngineConfig, recorder: Recorder) -> None:
        self.run_cgroup = run_cgroup
        self.config = config
        self.recorder = recorder
        self.bpf = ProfileCache().get(DEFAULT_PROFILE).bpf
        self.leftovers: list[str] = []

    def spec(self, *argv: str, limits: Limits) -> ExecutionSpec:
        return ExecutionSpec(argv=argv, seccomp_bpf=self.bpf, limits=limits)

    def run(self, spec: ExecutionSpec, *, cancel_when: Callable[[set[int]], bool] | None = None) -> Run:
        """Run ``spec``; while it runs, sample the pids in its leaf; ``cancel_when(pids seen)`` cancels it."""
        base = self.run_cgroup.make_child("engine")
        move(os.getpid(), base)
        try:
            return asyncio.run(self._run(base, spec, cancel_when))
        finally:
            move(os.getpid(), self.run_cgroup.home)
            self.leftovers += [f"{base}/{name}" for name in self.run_cgroup.remove_child(
                base, expected={"supervisor"})]

    async def _run(self, base: Path, spec: ExecutionSpec, cancel_when: Callable[[set[int]], bool] | None) -> Run:
        executor = await Executor.create(self.config)
        assert executor.backend_name == "v2", executor.backend_name
        assert executor.cgroup_base == str(base)
        # The executor moved this process into <base>/supervisor and enabled the controllers below base.
        assert own_cgroup_path() == f"/{(base / 'supervisor').relative_to(self.run_cgroup.mount)}"
        assert set(read(base / "cgroup.subtree_control").split()) >= set(REQUIRED_CONTROLLERS)
        watcher: asyncio.Task[None] | None = None
        seen: set[int] = set()
        layout: dict[str, list[int]] = {}
        try:
            started = None
            out, err = bytearray(), bytearray()
            async for event in executor.execute(spec):
                if isinstance(event, Started):
                    started = event
                    leaf = base / event.cgroup
                    self.recorder.read_limits(leaf)
                    layout = {name: procs(base / name) for name in children(base)}
                    layout["."] = procs(base)
                    watcher = asyncio.create_task(_watch(executor, event.execution_id, leaf, seen, cancel_when))
                elif isinstance(event, Output):
                    (out if event.stream is Stream.STDOUT else err).extend(event.data)
                elif isinstance(event, Result):
                    # Yielded only after the release: the leaf is already gone.
                    assert children(base) == ["supervisor"], children(base)
                    leaf_path = self.recorder.leaves[-1] if self.recorder.leaves else None
                    return Run(started, event, leaf_path, bytes(out), bytes(err), seen,
                               dict(self.recorder.final_files), layout)
            raise AssertionError("no Result event")
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await executor.close()


async def _watch(executor: Executor, execution_id: str, leaf: Path, seen: set[int],
                 cancel_when: Callable[[set[int]], bool] | None) -> None:
    cancelled = False
    while True:
        try:
            seen.update(procs(leaf))
        except CgroupError:  # the leaf is gone: the execution is over
            return
        if cancel_when is not None and not cancelled and cancel_when(seen):
            cancelled = executor.cancel(execution_id)
        await asyncio.sleep(0.05)


def wait_gone(pids: set[int], ids: IdRange, timeout_s: float = 10.0) -> list[int]:
    """The pids of ``pids`` that still run a process of a uid in ``ids`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = []
        for pid in sorted(pids):
            try:
                if os.stat(f"/proc/{pid}").st_uid in ids:
                    alive.append(pid)
            except FileNotFoundError:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


@pytest.fixture
def engine(run_cgroup: RunCgroup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
           caplog: pytest.LogCaptureFixture) -> Iterator[Engine]:
    caplog.set_level(logging.WARNING, logger="sandboxd")
    config = EngineConfig(state_dir=tmp_path / "state", instance=f"test-{uuid.uuid4().hex[:8]}",
                          sandbox_ids=fresh_ids())
    mounts_before = Path("/proc/self/mountinfo").read_text()
    engine = Engine(run_cgroup, config, Recorder(monkeypatch))
    yield engine
    assert not engine.leftovers, f"cgroups left behind: {engine.leftovers}"
    # The executor logs (and does not raise) failed kills, removals and accounting reads.
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("sandboxd")]
    assert Path("/proc/self/mountinfo").read_text() == mounts_before, "a mount leaked into the host"
    assert not sandbox_processes(config.sandbox_ids), "a sandboxed process survived its execution"
    root = config.root_mountpoint
    assert not root.exists() or not any(root.iterdir()), "the sandbox root mount point is not empty"


# --- the daemon, a real process ---------------------------------------------------------------------------

DAEMON_START_TIMEOUT_S = 240.0  # python + grpc imports under TCG


@dataclass
class CgroupDaemon(Daemon):
    """A sandboxd process started already inside ``cgroup``, as systemd starts a unit in its own cgroup."""

    cgroup: Path = Path("/sys/fs/cgroup")

    def command(self) -> list[str]:
        return ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(self.cgroup), *super().command()]


def cgroup_daemon(tmp_path: Path, cgroup: Path) -> CgroupDaemon:
    made = make_daemon(tmp_path, limits={"wall_time": "600s", "cpu_time": "300s"})  # ceilings fit for TCG
    return CgroupDaemon(made.root, made.instance, made.config_path, made.env, made.ids, cgroup=cgroup)


@pytest.fixture
def daemon(run_cgroup: RunCgroup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CgroupDaemon]:
    """A started daemon in a fresh child of the test run's cgroup; stopped and checked at teardown."""
    monkeypatch.setattr(daemon_harness, "START_TIMEOUT_S", DAEMON_START_TIMEOUT_S)
    base = run_cgroup.make_child("daemon")
    started = cgroup_daemon(tmp_path, base)
    status = None
    try:
        started.start()
        yield started
    finally:
        if started.process is not None:
            status = started.stop()
        left = run_cgroup.remove_child(base, expected={"supervisor"})
    assert status == 0, f"sandboxd exited {status}:\n{started.logs()}"
    assert not left, f"cgroups left behind in {base}: {left}"
    assert not wait_gone(set(sandbox_processes(started.ids)), started.ids), "a sandboxed process survived"
    assert not started.socket.exists(), "the socket was not removed"
    errors = [line for line in started.logs().splitlines() if line.startswith("ERROR")]
    assert not errors, started.logs()
