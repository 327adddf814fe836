"""Admission: the bound on concurrent executions, who is running what, and draining at stop.

An execution holds its slot from admission until its stream has sent the final Result (or its caller
went away), so "idle" means every accepted caller got its answer. Past the bound a request is refused
at once (RESOURCE_EXHAUSTED) — there is no queue to grow without limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sandboxd.base.refusals import Draining, TooManyExecutions
from sandboxd.engine.stop import StopToken

log = logging.getLogger("sandboxd")

# After cancelling what outlived the grace period: how long the streams get to deliver their Results.
RESULT_DELIVERY_S = 10.0


@dataclass
class Admitted:
    """One accepted execution, as the API layer knows it (the executor knows its pid and usage)."""

    execution_id: str
    tool: str  # "" for a raw command
    principal: str
    request_id: str
    labels: Mapping[str, str] = field(default_factory=dict)
    session_id: str = ""  # the session it is a call in
    admitted_at: float = field(default_factory=time.time)
    cancelled_by: str = ""  # the principal that cancelled it, "daemon-stopping", "caller-left"
    outcome_recorded: bool = False  # its execution.finished is written: exactly one per allowed decision
    # Handed to the engine with the spec: set before, during or after set-up, it ends the execution CANCELLED
    # (or NETWORK_LIMIT, when the egress proxy stops it).
    cancel_token: StopToken = field(default_factory=StopToken)

    def cancel(self, by: str) -> None:
        """Ask the engine to end this execution; the first canceller is the one recorded."""
        self.cancelled_by = self.cancelled_by or by
        self.cancel_token.set()


class Admission:
    def __init__(self, max_concurrent_executions: int) -> None:
        self.max_concurrent_executions = max_concurrent_executions
        self._admitted: dict[str, Admitted] = {}
        self._draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def draining(self) -> bool:
        return self._draining

    def check_open(self) -> None:
        if self._draining:
            raise Draining("sandboxd is shutting down and accepts no new executions")

    def admit(self, admitted: Admitted, *, principal_max: int | None = None) -> Admitted:
        """Take a slot for ``admitted``: refused past ``principal_max`` of its principal's, or the daemon's."""
        self.check_open()
        if principal_max is not None:
            own = sum(1 for item in self._admitted.values() if item.principal == admitted.principal)
            if own >= principal_max:
                raise TooManyExecutions(
                    f"principal {admitted.principal!r} already runs {own} executions, the most its role "
                    f"allows (max_concurrent = {principal_max}); retry when one has finished"
                )
        if len(self._admitted) >= self.max_concurrent_executions:
            raise TooManyExecutions(
                f"{len(self._admitted)} executions are running, the most this daemon allows "
                f"(daemon.max_concurrent_executions = {self.max_concurrent_executions}); retry later"
            )
        self._admitted[admitted.execution_id] = admitted
        self._idle.clear()
        return admitted

    def release(self, execution_id: str) -> None:
        self._admitted.pop(execution_id, None)
        if not self._admitted:
            self._idle.set()

    def get(self, execution_id: str) -> Admitted | None:
        return self._admitted.get(execution_id)

    def admitted(self) -> list[Admitted]:
        return sorted(self._admitted.values(), key=lambda item: item.admitted_at)

    def __len__(self) -> int:
        return len(self._admitted)

    def start_draining(self) -> None:
        self._draining = True

    async def drain(self, grace_s: float, *, cancel_all: Callable[[], int], hurry: asyncio.Event) -> None:
        """After :meth:`start_draining`: let what runs finish for ``grace_s`` (less once ``hurry`` is set),
        then cancel what is left with ``cancel_all`` and give the streams time to deliver their Results."""
        idle = asyncio.ensure_future(self.wait_idle(grace_s))
        hurried = asyncio.ensure_future(hurry.wait())
        await asyncio.wait({idle, hurried}, return_when=asyncio.FIRST_COMPLETED)
        hurried.cancel()
        if idle.done() and idle.result():
            return
        idle.cancel()
        # Nothing is admitted any more (draining), and a cancel reaches an execution whatever its stage.
        log.info("grace period over: cancelled %d executions", cancel_all())
        if not await self.wait_idle(RESULT_DELIVERY_S):
            log.warning("%d executions did not deliver their results in time", len(self._admitted))

    async def wait_idle(self, timeout_s: float) -> bool:
        """True once nothing is admitted; False if ``timeout_s`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True
