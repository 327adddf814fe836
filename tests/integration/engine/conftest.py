"""Fixtures for the engine's root integration tests: a real executor on this host's cgroups, and a check
after every test that nothing of ours is left (cgroup leaf, mount, process of the sandbox uid)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from daemon_harness import cgroup_dirs, sandbox_processes  # tests/integration is on sys.path (no __init__)

from sandboxd.base.limits import Limits
from sandboxd.engine.config import EngineConfig
from sandboxd.engine.executor import Executor
from sandboxd.engine.result import Output, Result, Started, Stream
from sandboxd.engine.seccomp.profile import ProfileCache
from sandboxd.engine.spec import ExecutionSpec

REPO = Path(__file__).resolve().parents[3]
PROFILES = REPO / "seccomp-profiles"
SHARED_SECCOMP = Path(os.environ.get("SANDBOXD_SHARED_DATA", REPO.parent / "shared" / "data")) / "seccomp"

pytestmark = pytest.mark.root


@dataclass
class Run:
    started: Started | None
    result: Result
    stdout: bytes = b""
    stderr: bytes = b""
    events: list[object] = field(default_factory=list)


class Engine:
    """Runs specs on a fresh executor per call (each test gets its own event loop)."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.profiles = ProfileCache()

    def bpf(self, profile: str | Path = "default") -> bytes:
        path = profile if isinstance(profile, Path) else PROFILES / f"{profile}.json"
        return self.profiles.get(path).bpf

    def spec(self, *argv: str, profile: str | Path = "default", **kwargs: object) -> ExecutionSpec:
        limits = kwargs.pop("limits", Limits(wall_time_ms=20_000))
        return ExecutionSpec(argv=argv, seccomp_bpf=self.bpf(profile), limits=limits, **kwargs)  # type: ignore[arg-type]

    def run(self, spec: ExecutionSpec, *, cancel_after_s: float | None = None) -> Run:
        return asyncio.run(self._run(spec, cancel_after_s))

    async def _run(self, spec: ExecutionSpec, cancel_after_s: float | None) -> Run:
        executor = await Executor.create(self.config)
        try:
            started = None
            out, err, events = bytearray(), bytearray(), []
            async for event in executor.execute(spec):
                events.append(event)
                if isinstance(event, Started):
                    started = event
                    if cancel_after_s is not None:
                        asyncio.get_running_loop().call_later(
                            cancel_after_s, executor.cancel, event.execution_id)
                elif isinstance(event, Output):
                    (out if event.stream is Stream.STDOUT else err).extend(event.data)
                elif isinstance(event, Result):
                    assert event is events[-1]
                    return Run(started, event, bytes(out), bytes(err), events)
            raise AssertionError("no Result event")
        finally:
            await executor.close()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    if os.geteuid() != 0:
        pytest.skip("the engine's integration tests need root")
    instance = f"test-{uuid.uuid4().hex[:8]}"
    config = EngineConfig(state_dir=tmp_path / "state", instance=instance)
    mounts_before = Path("/proc/self/mountinfo").read_text()
    yield Engine(config)
    leftovers = [d for d in cgroup_dirs(instance) if d.exists()]
    assert not leftovers, f"cgroups left behind: {leftovers} holding {[list(d.iterdir()) for d in leftovers]}"
    assert Path("/proc/self/mountinfo").read_text() == mounts_before, "a mount leaked into the host"
    assert not sandbox_processes(config.sandbox_uid), "a sandboxed process survived its execution"
    root = config.root_mountpoint
    assert not root.exists() or not any(root.iterdir()), "the sandbox root mount point is not empty"
