"""Concurrent executions keep their own pipes: each gets exactly its own stdin back, none fails or hangs.

Regression: a pipe fd closed twice (or closed while its event-loop watcher was still registered) could close or
silence another execution's pipe that reused the number.
"""

from __future__ import annotations

import asyncio

from sandboxd.executor import Executor
from sandboxd.result import Output, Result, Status

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
