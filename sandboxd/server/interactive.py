"""What an ``ExecuteInteractive`` caller sends after its request: the handler's stdin, its EOF, and signals.

One task reads the call's inputs in order and sends each on its way::

    caller ─ExecuteInput─▶ InputPump ─ stdin ──────────▶ bounded queue ─▶ stdin() ─▶ the engine's feeder ─▶ pipe
                                     ─ stdin_eof / the caller's half-close ─▶ stdin() ends: EOF for the handler
                                     ─ signal ─▶ Executor.signal (pid 2, through its pidfd) ─▶ execution.signal

Back-pressure end to end: the next input is read only once the queue has room, the queue empties only as fast
as the handler's pipe takes it, and gRPC's flow control holds the caller back meanwhile — a handler that does
not read costs the daemon a bounded buffer. Inputs stay in order, so a signal sent behind stdin the handler
does not read waits for that stdin; leaving the call still ends the execution at once. A signal for an
execution that has not started, or has ended, is dropped, as are those beyond a rate per execution (each
delivered one is an audit record).

An input that breaks the protocol — undecodable, a second request, stdin after its EOF or above
``max_request_bytes``, an unknown signal — ends the execution (its outcome and Result still come) and then
the call, INVALID_ARGUMENT naming what was wrong.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator
from typing import Protocol

from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2 as pb
from sandboxd.api.handlers import Undecodable
from sandboxd.audit.writer import AuditUnavailable
from sandboxd.base.echo import cut
from sandboxd.base.errors import SandboxError
from sandboxd.base.refusals import InvalidRequest, PayloadTooLarge
from sandboxd.engine.result import Status
from sandboxd.policy.ratelimit import Rate, RateLimiter
from sandboxd.server.admission import Admitted
from sandboxd.server.audit_trail import AuditTrail, Subject

log = logging.getLogger("sandboxd.service")

# Chunks read ahead of the handler's pipe, each at most max_request_bytes: what one call may hold in the daemon.
STDIN_CHUNKS_QUEUED = 2
# Signals one execution may be sent: a person pressing ^C twice is far inside it, a loop is not.
SIGNAL_RATE = Rate(per_minute=60, burst=10)

SIGNALS: dict[int, signal.Signals] = {
    pb.INTERRUPT: signal.SIGINT, pb.TERMINATE: signal.SIGTERM, pb.HANGUP: signal.SIGHUP, pb.KILL: signal.SIGKILL,
    pb.QUIT: signal.SIGQUIT,
}

ExecuteInputs = AsyncIterator[pb.ExecuteInput | Undecodable]


class SignalTarget(Protocol):
    def signal(self, execution_id: str, signum: int) -> bool:
        """Deliver ``signum`` to the execution's handler; False when it is not running."""


class InputPump:
    """The inputs of one admitted interactive execution, from its second input on."""

    def __init__(self, inputs: ExecuteInputs, *, admitted: Admitted, engine: SignalTarget, trail: AuditTrail,
                 max_chunk_bytes: int) -> None:
        self._inputs = inputs
        self._admitted = admitted
        self._engine = engine
        self._trail = trail
        self._max_chunk_bytes = max_chunk_bytes
        self._subject = Subject(admitted.principal, admitted.tool, admitted.execution_id, admitted.request_id)
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(STDIN_CHUNKS_QUEUED)  # None: EOF
        self._signals = RateLimiter()
        self._task: asyncio.Task[None] | None = None
        self.error: SandboxError | None = None  # the input that broke the protocol, once one has

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Stop reading (the execution has ended, or its caller has left)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def stdin(self) -> AsyncIterator[bytes]:
        """The handler's stdin after the request's own, chunk by chunk as the caller sends it."""
        while (chunk := await self._queue.get()) is not None:
            yield chunk

    async def _run(self) -> None:
        eof = False
        try:
            async for item in self._inputs:
                if isinstance(item, Undecodable):
                    raise InvalidRequest(f"an input could not be decoded: {cut(item.error)}")
                kind = item.WhichOneof("input")
                if kind == "stdin":
                    if eof:
                        raise InvalidRequest("stdin after stdin_eof")
                    if len(item.stdin) > self._max_chunk_bytes:
                        raise PayloadTooLarge(f"a stdin chunk of {len(item.stdin)} bytes exceeds "
                                              f"daemon.max_request_bytes = {self._max_chunk_bytes}")
                    if item.stdin:
                        await self._queue.put(item.stdin)
                elif kind == "stdin_eof":
                    if not eof:
                        eof = True
                        await self._queue.put(None)
                elif kind == "signal":
                    self._signal(item.signal)
                elif kind == "request":
                    raise InvalidRequest("the request comes once, as the first input")
                else:
                    raise InvalidRequest("an input with nothing in it")
        except SandboxError as error:
            log.info("execution %s: ended on an invalid input from %r: %s", self._admitted.execution_id,
                     self._admitted.principal, error.message)
            self.error = error
            self._admitted.cancel("invalid-input")
            return
        if not eof:  # the caller half-closed its stream: that ends stdin too
            await self._queue.put(None)

    def _signal(self, value: int) -> None:
        signum = SIGNALS.get(value)
        if signum is None:
            raise InvalidRequest(f"unknown signal {value}: INTERRUPT, TERMINATE, HANGUP, KILL or QUIT")
        if self._signals.try_acquire(None, SIGNAL_RATE, time.monotonic()) > 0:
            log.info("execution %s: %s dropped, above %d signals a minute", self._admitted.execution_id,
                     signum.name, SIGNAL_RATE.per_minute)
            return
        if not self._engine.signal(self._admitted.execution_id, signum):
            return  # not started yet, or already ended: nothing to signal
        try:
            self._trail.signalled(self._subject, signal=signum.name)
        except AuditUnavailable as error:  # delivered but unrecorded: nothing more may happen unrecorded
            log.error("execution %s: %s; ending it", self._admitted.execution_id, error.message)
            self._admitted.cancelled_by = self._admitted.cancelled_by or "audit-unavailable"
            self._admitted.cancel_token.stop(Status.CANCELLED,
                                             f"ended: the audit log cannot record its signals ({error.message})")
