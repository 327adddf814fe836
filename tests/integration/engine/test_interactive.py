"""Interactive execution in the engine: stdin fed as it comes (with back-pressure), and signals to the handler
through its pidfd."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

import pytest

from sandboxd.base.limits import Limits
from sandboxd.engine.executor import Executor
from sandboxd.engine.result import Output, Result, Started, Status

from .conftest import Engine


def test_stdin_stream_is_fed_chunk_by_chunk_after_the_specs_stdin(engine: Engine) -> None:
    spec = engine.spec("/bin/cat", stdin=b"first\n")
    chunks: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def stdin() -> AsyncIterator[bytes]:
        while (chunk := await chunks.get()) is not None:
            yield chunk

    async def body(executor: Executor) -> tuple[bytes, Result]:
        out = bytearray()
        sent = 0
        async for event in executor.execute(spec, stdin_stream=stdin()):
            if isinstance(event, Output):
                out.extend(event.data)
            if isinstance(event, Result):
                return bytes(out), event
            # each line goes in only once the previous one came back: the handler sees them as they come
            if out.endswith(b"\n") and out.count(b"\n") == sent + 1:
                sent += 1
                chunks.put_nowait(f"line {sent}\n".encode() if sent <= 5 else None)
        raise AssertionError("no Result")

    out, result = asyncio.run(engine._with_executor(body))
    assert result.status is Status.OK, result
    assert out == b"first\n" + b"".join(f"line {n}\n".encode() for n in range(1, 6))


def test_a_handler_that_does_not_read_stalls_only_its_feeder(engine: Engine) -> None:
    spec = engine.spec("/bin/sh", "-c", "echo up; sleep 1", limits=Limits(wall_time_ms=20_000))
    taken = 0

    async def stdin() -> AsyncIterator[bytes]:
        nonlocal taken
        for _ in range(64):
            taken += 1
            yield b"x" * (1 << 20)

    async def body(executor: Executor) -> tuple[int, Result]:
        while_running = -1
        async for event in executor.execute(spec, stdin_stream=stdin()):
            if isinstance(event, Output):
                await asyncio.sleep(0.5)  # the feeder has had all the time it wants
                while_running = taken
            elif isinstance(event, Result):
                return while_running, event
        raise AssertionError("no Result")

    while_running, result = asyncio.run(engine._with_executor(body))
    assert result.status is Status.OK, result
    assert while_running == 1  # the pipe holds 64 KiB of the first MiB: nothing more was taken


def test_signal_reaches_the_handler_while_it_runs_and_only_then(engine: Engine) -> None:
    script = 'trap "echo got INT; exit 3" INT; echo ready; while :; do sleep 0.05; done'
    spec = engine.spec("/bin/sh", "-c", script, limits=Limits(wall_time_ms=20_000))

    async def before_it_started(executor: Executor) -> bool:
        # The first turn the execution is registered in: its sandbox is being built (the spawner's reports
        # come over pipes, turns later), so there is no handler to signal yet.
        while "sig-test" not in executor._runs:
            await asyncio.sleep(0)
        assert executor._runs["sig-test"].pidfd is None, "started within one turn of the loop"
        return executor.signal("sig-test", signal.SIGINT)

    async def body(executor: Executor) -> tuple[list[bool], Result, bytes]:
        delivered = [executor.signal("no-such-execution", signal.SIGINT)]
        early = asyncio.ensure_future(before_it_started(executor))
        out = bytearray()
        eid = ""
        async for event in executor.execute(spec, execution_id="sig-test"):
            if early is not None and early.done():
                delivered.append(early.result())
                early = None
            if isinstance(event, Started):
                eid = event.execution_id
            elif isinstance(event, Output):
                out.extend(event.data)
                if out == b"ready\n":
                    delivered.append(executor.signal(eid, signal.SIGINT))
            elif isinstance(event, Result):
                delivered.append(executor.signal(eid, signal.SIGINT))  # gone: nothing to signal
                return delivered, event, bytes(out)
        raise AssertionError("no Result")

    delivered, result, out = asyncio.run(engine._with_executor(body))
    assert delivered == [False, False, True, False]  # unknown, not started yet (dropped), running, gone
    assert (result.status, result.exit_code) == (Status.NONZERO_EXIT, 3), result
    assert out == b"ready\ngot INT\n"


def test_signal_terminate_ends_it_signaled(engine: Engine) -> None:
    spec = engine.spec("/bin/sh", "-c", "echo ready; exec sleep 60", limits=Limits(wall_time_ms=20_000))

    async def body(executor: Executor) -> Result:
        async for event in executor.execute(spec):
            if isinstance(event, Output):
                assert executor.signal(event.execution_id, signal.SIGTERM)
            elif isinstance(event, Result):
                return event
        raise AssertionError("no Result")

    result = asyncio.run(engine._with_executor(body))
    assert (result.status, result.signal) == (Status.SIGNALED, signal.SIGTERM), result


@pytest.mark.parametrize("signum", [signal.SIGSTOP, signal.SIGCONT, signal.SIGUSR1, 0])
def test_only_signals_that_ask_it_to_stop_are_accepted(engine: Engine, signum: int) -> None:
    async def body(executor: Executor) -> None:
        with pytest.raises(ValueError, match="not one a caller may send"):
            executor.signal("any", signum)

    asyncio.run(engine._with_executor(body))
