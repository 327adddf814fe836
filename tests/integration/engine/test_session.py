"""Sessions in the engine: one sandbox kept by one execution, calls that join it — same root, /work, pid
namespace and uid — each in its own cgroup below the session's, whose limits cover them all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import pytest

from sandboxd.base.limits import Limits
from sandboxd.engine.executor import Executor
from sandboxd.engine.result import Output, Result, Started, Status
from sandboxd.engine.run import SessionSandbox
from sandboxd.engine.spec import ExecutionSpec

from .conftest import Engine, Run

pytestmark = pytest.mark.root
T = TypeVar("T")

KEEPER = ("/bin/sleep", "infinity")
SESSION_LIMITS = Limits(memory_max_bytes=160 << 20, wall_time_ms=None, cpu_time_ms=None, pids_max=64)


async def _collect(events: AsyncIterator[object]) -> Run:
    out, err, started = bytearray(), bytearray(), None
    async for event in events:
        if isinstance(event, Started):
            started = event
        elif isinstance(event, Output):
            (out if event.stream.name == "STDOUT" else err).extend(event.data)
        elif isinstance(event, Result):
            return Run(started, event, bytes(out), bytes(err))
    raise AssertionError("no Result")


def in_session(engine: Engine, body: Callable[[Executor, SessionSandbox], Awaitable[T]],
               limits: Limits = SESSION_LIMITS) -> tuple[T, Result]:
    """Open a session, run ``body`` with it, end the session; ``body``'s value and the keeper's Result."""

    async def run(executor: Executor) -> tuple[T, Result]:
        end = asyncio.Event()
        keeper = _collect(executor.execute(engine.spec(*KEEPER, limits=limits), execution_id="sess1",
                                           cancel=end, opens_session=True))
        kept = asyncio.ensure_future(keeper)
        while executor.session("sess1") is None:
            assert not kept.done(), kept.result()
            await asyncio.sleep(0.01)
        sandbox = executor.session("sess1")
        assert sandbox is not None
        try:
            value = await body(executor, sandbox)
        finally:
            end.set()
            ended = await kept
        assert executor.session("sess1") is None
        return value, ended.result

    return asyncio.run(engine._with_executor(run))


def call(executor: Executor, sandbox: SessionSandbox, spec: ExecutionSpec) -> Awaitable[Run]:
    return _collect(executor.execute(spec, session=sandbox))


def test_calls_share_the_sessions_work_dir_pids_and_uid(engine: Engine) -> None:
    async def body(executor: Executor, sandbox: SessionSandbox) -> list[Run]:
        first = await call(executor, sandbox, engine.spec(
            "/bin/sh", "-c", "echo 41 > /work/state && echo tmp > /tmp/t && id -u && hostname"))
        second = await call(executor, sandbox, engine.spec(
            "/usr/bin/python3", "-c",
            "import os; n = int(open('/work/state').read()) + 1; open('/work/state', 'w').write(str(n));"
            "print(n, open('/tmp/t').read().strip(), os.getuid(), os.getpid() > 2,"
            " sorted(os.listdir('/proc'))[:0], open('/proc/1/comm').read().strip())"))
        return [first, second]

    (first, second), ended = in_session(engine, body)
    assert first.result.status is Status.OK, (first.result, first.stderr)
    uid, _hostname = first.stdout.decode().split()
    assert second.result.status is Status.OK, (second.result, second.stderr)
    assert second.stdout.decode().split() == ["42", "tmp", uid, "True", "[]", "sandbox-init"]
    assert first.started is not None and first.started.uid == int(uid)
    assert first.started.cgroup != second.started.cgroup if second.started else True
    assert ended.status is Status.CANCELLED  # the session ended because it was closed


def test_a_call_has_its_own_limits_and_verdict(engine: Engine) -> None:
    async def body(executor: Executor, sandbox: SessionSandbox) -> list[Run]:
        slow = await call(executor, sandbox, engine.spec("/bin/sleep", "30", limits=Limits(wall_time_ms=300)))
        after = await call(executor, sandbox, engine.spec("/bin/echo", "still here"))
        return [slow, after]

    (slow, after), _ = in_session(engine, body)
    assert slow.result.status is Status.TIMEOUT
    assert (after.result.status, after.stdout) == (Status.OK, b"still here\n")  # the session outlived it


def test_the_session_memory_limit_covers_its_calls_together(engine: Engine) -> None:
    hold = ("import time; b = bytearray(100 << 20); b[::4096] = b'x' * len(b[::4096]); print('holding', flush=True);"
            " time.sleep(30)")

    async def body(executor: Executor, sandbox: SessionSandbox) -> list[Run]:
        per_call = Limits(memory_max_bytes=150 << 20, wall_time_ms=20_000)
        first = asyncio.ensure_future(call(executor, sandbox, engine.spec("/usr/bin/python3", "-c", hold,
                                                                          limits=per_call)))
        while not sandbox.cgroup.stats().memory_peak_bytes > 100 << 20:
            await asyncio.sleep(0.05)
        second = await call(executor, sandbox, engine.spec("/usr/bin/python3", "-c", hold, limits=per_call))
        first.cancel()
        try:
            return [await first, second]
        except asyncio.CancelledError:
            return [second]

    runs, _ = in_session(engine, body)
    # each call alone fits its own 150 MiB; together they pass the session's 160 MiB: one is OOM-killed
    assert any(run.result.status is Status.MEMORY_LIMIT for run in runs), [run.result for run in runs]


def test_nothing_of_a_session_is_left_when_it_ends(engine: Engine) -> None:
    async def body(executor: Executor, sandbox: SessionSandbox) -> Run:
        # a call that leaves a process behind: the call's cgroup goes with the call, the session's with it
        return await call(executor, sandbox, engine.spec("/bin/sh", "-c", "sleep 60 & echo started"))

    run, _ = in_session(engine, body)
    assert run.stdout == b"started\n"
    # the engine fixture checks no cgroup, mount or process of the sandbox uids is left
