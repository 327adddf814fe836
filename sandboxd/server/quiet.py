"""Before the gRPC server stops: wait until callers have stopped sending.

A stopping daemon says NOT_SERVING on its health service, and clients of a fleet (round_robin with gRPC's
client-side health checking) take it out of their rotation at once — but calls already on their way still
arrive for a moment. gRPC's asyncio server cancels a call that arrives just as it stops, before its handler
runs: its caller gets CANCELLED and cannot tell that the call never started. So the daemon stops its server
only once no call has begun for ``quiet_s`` (health checks aside), or after ``limit_s``; until then every
call is still answered — refused DRAINING, which a client retries on another daemon.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

HEALTH_METHODS_PREFIX = "/grpc.health.v1.Health/"
QUIET_S = 0.25
QUIET_LIMIT_S = 2.0


class CallClock(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """When the last call (other than a health check) began."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.last_call_at = clock()

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                handler_call_details: Any) -> Any:
        if not handler_call_details.method.startswith(HEALTH_METHODS_PREFIX):
            self.last_call_at = self._clock()
        return await continuation(handler_call_details)

    async def wait_quiet(self, quiet_s: float = QUIET_S, limit_s: float = QUIET_LIMIT_S) -> bool:
        """Return once no call has begun for ``quiet_s`` (True), or after ``limit_s`` (False)."""
        deadline = self._clock() + limit_s
        while True:
            now = self._clock()
            idle_s = now - self.last_call_at
            if idle_s >= quiet_s:
                return True
            if now >= deadline:
                return False
            await asyncio.sleep(min(quiet_s - idle_s, deadline - now))  # then look again
