"""Fixtures for the engine's root integration tests: a real executor on this host's cgroups, and a check
after every test that nothing of ours is left (cgroup leaf, mount, process of the sandbox uid)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
from daemon_harness import cgroup_dirs, fresh_ids, sandbox_processes  # tests/integration is on sys.path

from sandboxd.base.limits import Limits
from sandboxd.engine.config import EngineConfig
from sandboxd.engine.executor import Executor
from sandboxd.engine.pool import pool_key
from sandboxd.engine.result import Output, Result, Started, Status, Stream
from sandboxd.engine.seccomp.profile import ProfileCache
from sandboxd.engine.spec import ExecutionSpec

REPO = Path(__file__).resolve().parents[3]
PROFILES = REPO / "seccomp-profiles"
SHARED_SECCOMP = Path(os.environ.get("SANDBOXD_SHARED_DATA", REPO.parent / "shared" / "data")) / "seccomp"

pytestmark = pytest.mark.root
POOL_READY_TIMEOUT_S = 30.0
T = TypeVar("T")


@dataclass
class Run:
    started: Started | None
    result: Result
    stdout: bytes = b""
    stderr: bytes = b""
    events: list[object] = field(default_factory=list)


class Engine:
    """Runs specs on a fresh executor per call (each test gets its own event loop). ``pooled``: each spec of
    :meth:`run` runs in a sandbox the warm pool built ahead (a poolable spec must hit the pool)."""

    def __init__(self, config: EngineConfig, *, pooled: bool = False) -> None:
        self.config = config
        self.profiles = ProfileCache()
        self.pooled = pooled

    def bpf(self, profile: str | Path = "default") -> bytes:
        path = profile if isinstance(profile, Path) else PROFILES / f"{profile}.json"
        return self.profiles.get(path).bpf

    def spec(self, *argv: str, profile: str | Path = "default", **kwargs: object) -> ExecutionSpec:
        limits = kwargs.pop("limits", Limits(wall_time_ms=20_000))
        return ExecutionSpec(argv=argv, seccomp_bpf=self.bpf(profile), limits=limits, **kwargs)  # type: ignore[arg-type]

    def run(self, spec: ExecutionSpec, *, cancel_after_s: float | None = None,
            on_started: Callable[[Started], None] | None = None) -> Run:
        """Run ``spec`` to its Result; ``on_started`` is called (in a thread) once it has started."""
        return asyncio.run(self._with_executor(lambda executor: self._one(executor, spec, cancel_after_s, on_started)))

    def run_concurrently(self, specs: list[ExecutionSpec]) -> list[Run]:
        """Run ``specs`` at the same time on one executor; their Runs in the same order."""

        async def all_of(executor: Executor) -> list[Run]:
            return list(await asyncio.gather(*(self._fresh_or_pooled(executor, spec, None, None) for spec in specs)))

        return asyncio.run(self._with_executor(all_of))

    async def _with_executor(self, body: Callable[[Executor], Awaitable[T]]) -> T:
        executor = await Executor.create(self.config)
        try:
            return await body(executor)
        finally:
            await executor.close()

    async def _one(self, executor: Executor, spec: ExecutionSpec, cancel_after_s: float | None,
                   on_started: Callable[[Started], None] | None) -> Run:
        if not self.pooled or pool_key(spec) is None:
            return await self._fresh_or_pooled(executor, spec, cancel_after_s, on_started)
        executor.configure_pool([spec], per_spec=1, total=1)
        deadline = time.monotonic() + POOL_READY_TIMEOUT_S
        while executor.pool_stats().ready < 1 and executor.pool_stats().failed == 0:
            assert time.monotonic() < deadline, "the pool built no sandbox in time"
            await asyncio.sleep(0.01)
        run = await self._fresh_or_pooled(executor, spec, cancel_after_s, on_started)
        if executor.pool_stats().failed:  # a sandbox that cannot be built ahead cannot be built fresh either
            assert run.result.status is Status.SETUP_FAILED, (run.result, "the pool failed where a fresh one ran")
        else:
            assert executor.pool_stats().hits == 1, "the execution did not run in the pooled sandbox"
        return run

    @staticmethod
    async def _fresh_or_pooled(executor: Executor, spec: ExecutionSpec, cancel_after_s: float | None,
                               on_started: Callable[[Started], None] | None) -> Run:
        started = None
        out, err, events = bytearray(), bytearray(), []
        async for event in executor.execute(spec):
            events.append(event)
            if isinstance(event, Started):
                started = event
                if cancel_after_s is not None:
                    asyncio.get_running_loop().call_later(cancel_after_s, executor.cancel, event.execution_id)
                if on_started is not None:
                    asyncio.get_running_loop().run_in_executor(None, on_started, event)
            elif isinstance(event, Output):
                (out if event.stream is Stream.STDOUT else err).extend(event.data)
            elif isinstance(event, Result):
                assert event is events[-1]
                return Run(started, event, bytes(out), bytes(err), events)
        raise AssertionError("no Result event")


def status_fields(text: str) -> dict[str, str]:
    """The fields of a /proc/PID/status text."""
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


# Modules whose executions never take a pooled sandbox (concurrent runs, sessions): run once, fresh.
FRESH_ONLY = frozenset({"test_concurrency", "test_session", "test_pool"})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every engine test runs twice — in a sandbox built for it, and in one the warm pool built ahead — but
    those of :data:`FRESH_ONLY`."""
    if "engine" in metafunc.fixturenames:
        module = metafunc.module.__name__.rsplit(".", 1)[-1]
        metafunc.parametrize("engine", ["fresh"] if module in FRESH_ONLY else ["fresh", "pooled"], indirect=True)


@pytest.fixture
def engine(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A real executor on this host; ``request.param`` "pooled": each run takes a sandbox of the warm pool."""
    if os.geteuid() != 0:
        pytest.skip("the engine's integration tests need root")
    instance = f"test-{uuid.uuid4().hex[:8]}"
    config = EngineConfig(state_dir=tmp_path / "state", instance=instance, sandbox_ids=fresh_ids())
    mounts_before = Path("/proc/self/mountinfo").read_text()
    yield Engine(config, pooled=request.param == "pooled")
    leftovers = [d for d in cgroup_dirs(instance) if d.exists()]
    assert not leftovers, f"cgroups left behind: {leftovers} holding {[list(d.iterdir()) for d in leftovers]}"
    assert Path("/proc/self/mountinfo").read_text() == mounts_before, "a mount leaked into the host"
    assert not sandbox_processes(config.sandbox_ids), "a sandboxed process survived its execution"
    root = config.root_mountpoint
    assert not root.exists() or not any(root.iterdir()), "the sandbox root mount point is not empty"
