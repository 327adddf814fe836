"""Cancel: an execution cancelled from outside ends CANCELLED, its whole tree killed."""

from __future__ import annotations

import asyncio

from sandboxd.base.limits import Limits
from sandboxd.engine.executor import Executor
from sandboxd.engine.result import Result, Started, Status
from sandboxd.engine.stop import StopToken

from .conftest import Engine


def test_cancel_yields_cancelled(engine: Engine) -> None:
    spec = engine.spec("/bin/sh", "-c", "sleep 60 & sleep 60", limits=Limits(wall_time_ms=30_000))
    run = engine.run(spec, cancel_after_s=0.3)
    assert run.result.status is Status.CANCELLED, run.result
    assert run.result.wall_time_ms < 5000


def test_a_stop_token_ends_it_for_its_reason_and_the_first_reason_wins(engine: Engine) -> None:
    token = StopToken()
    spec = engine.spec("/bin/sh", "-c", "sleep 60 & sleep 60", limits=Limits(wall_time_ms=30_000))

    async def body(executor: Executor) -> Result:
        async for event in executor.execute(spec, cancel=token):
            if isinstance(event, Started):
                token.stop(Status.NETWORK_LIMIT, "network limit of 10 bytes reached")
                token.stop(Status.CANCELLED)  # too late: the first reason is the one reported
            elif isinstance(event, Result):
                return event
        raise AssertionError("no Result")

    result = asyncio.run(engine._with_executor(body))
    assert result.status is Status.NETWORK_LIMIT, result
    assert result.message == "network limit of 10 bytes reached"
