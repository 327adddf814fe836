"""``record``: the caller writes an outcome down (the daemon: its audit records, fsynced) while the engine
releases the sandbox. The Result is yielded only once both are done; a record that fails is raised once the
sandbox is gone, and no Result is yielded for an outcome that could not be written down."""

from __future__ import annotations

import asyncio

import pytest

from sandboxd.engine.executor import Executor
from sandboxd.engine.result import Event, Result, Status

from .conftest import Engine


class LogBroken(Exception):
    pass


def test_the_result_is_yielded_once_it_is_recorded(engine: Engine) -> None:
    recorded: list[Result] = []

    async def record(result: Result) -> None:
        await asyncio.sleep(0.05)  # a slow disk: the Result waits for it
        recorded.append(result)

    async def body(executor: Executor) -> list[Event]:
        return [event async for event in executor.execute(engine.spec("/bin/true"), record=record)]

    events = asyncio.run(engine._with_executor(body))
    result = events[-1]
    assert isinstance(result, Result) and result.status is Status.OK, result
    assert recorded == [result]


def test_a_record_that_fails_is_raised_after_the_release_and_no_result_is_yielded(engine: Engine) -> None:
    async def record(result: Result) -> None:
        raise LogBroken(result.status.name)

    async def body(executor: Executor) -> tuple[list[Event], list[object]]:
        events: list[Event] = []
        with pytest.raises(LogBroken, match="OK"):
            async for event in executor.execute(engine.spec("/bin/true"), record=record):
                events.append(event)
        return events, list(executor.running())

    events, running = asyncio.run(engine._with_executor(body))
    assert not any(isinstance(event, Result) for event in events)
    assert running == []  # released: nothing of it runs, and the fixture finds no cgroup or mount left
