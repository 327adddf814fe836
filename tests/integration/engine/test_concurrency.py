"""Concurrent executions keep their own pipes: each gets exactly its own stdin back, none fails or hangs.

Regression: a pipe fd closed twice (or closed while its event-loop watcher was still registered) could close or
silence another execution's pipe that reused the number.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from sandboxd.base.limits import Limits
from sandboxd.engine.executor import Executor
from sandboxd.engine.result import Output, Result, Status

from .conftest import Engine

LOOPS = 3
RUNS_PER_LOOP = 25


def test_concurrent_executions_keep_their_own_pipes(engine: Engine) -> None:
    spec_for = {n: engine.spec("/bin/cat", stdin=f"payload {n}\n".encode() * 50)
                for n in range(LOOPS * RUNS_PER_LOOP)}

    async def main() -> dict[int, tuple[Status, bytes]]:
        executor = await Executor.create(engine.config)
        results: dict[int, tuple[Status, bytes]] = {}

        async def loop(first: int) -> None:
            for n in range(first, first + RUNS_PER_LOOP):
                out = bytearray()
                async for event in executor.execute(spec_for[n]):
                    if isinstance(event, Output):
                        out.extend(event.data)
                    elif isinstance(event, Result):
                        results[n] = (event.status, bytes(out))
        try:
            await asyncio.wait_for(asyncio.gather(*(loop(i * RUNS_PER_LOOP) for i in range(LOOPS))), 120)
        finally:
            await executor.close()
        return results

    results = asyncio.run(main())
    assert len(results) == LOOPS * RUNS_PER_LOOP
    for n, (status, out) in results.items():
        assert status is Status.OK, (n, status)
        assert out == spec_for[n].stdin, n


def test_setup_failures_among_concurrent_executions_touch_only_themselves(engine: Engine) -> None:
    """Regression: one select() batch of the spawner could hold both pipes of a child; handling the status
    pipe's EOF closed the error pipe, and the stale event killed the spawner (every in-flight execution ended
    SETUP_FAILED). Also: an exec that succeeded was reported "died before reporting" when its error pipe's EOF
    was read only while finishing."""
    specs = [engine.spec("/no/such/program") if n % 3 == 0 else engine.spec("/bin/true") for n in range(120)]

    async def main() -> list[Result]:
        executor = await Executor.create(engine.config)

        async def one(n: int) -> Result:
            async for event in executor.execute(specs[n]):
                if isinstance(event, Result):
                    return event
            raise AssertionError("no Result")
        try:
            return await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(len(specs)))), 120)
        finally:
            await executor.close()

    results = asyncio.run(main())
    for n, result in enumerate(results):
        if n % 3 == 0:
            assert (result.status, result.setup_stage) == (Status.SETUP_FAILED, "find handler"), (n, result)
        else:
            assert result.status is Status.OK, (n, result)


def test_five_hundred_concurrent_executions_all_run(engine: Engine) -> None:
    # Regression: every child inherited the spawner's descriptors of the other running executions and set
    # RLIMIT_NOFILE before its stdio moves: at 500 at once, half ended "SETUP_FAILED stdio: Too many open files".
    specs = [engine.spec("/bin/sleep", "3", limits=Limits(wall_time_ms=120_000, open_files_max=8))
             for _ in range(500)]
    runs = engine.run_concurrently(specs)
    statuses = Counter(run.result.status for run in runs)
    assert statuses == {Status.OK: 500}, [run.result for run in runs if run.result.status is not Status.OK][:3]
    assert len({run.started.uid for run in runs if run.started is not None}) == 500  # a uid each
