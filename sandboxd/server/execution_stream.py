"""One accepted execution as the ``Execute`` stream carries it: engine events → API events, with audit.

What the caller receives, in order: the ``decision`` record, ``Started`` and its ``execution.started``
record, ``Output`` as it comes, then the outcome records (``execution.cancelled``, ``limit_hit``,
``seccomp_violation``, ``finished``) and last the ``Result`` — sent only once those records are fsynced.
An engine that breaks its promise of a Result still produces one here.

An execution with a network allowlist gets its door out served by the egress proxy from before it starts
(``NetworkReady``) until its sandbox is gone; then its connections are closed — each ``network.closed``
recorded before ``execution.finished`` — and the Result carries their bytes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

from sandboxd.api import convert
from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2 as pb
from sandboxd.audit.record import AuditRecord
from sandboxd.audit.writer import AuditUnavailable
from sandboxd.egress.events import ExecutionRules
from sandboxd.egress.proxy import EgressProxy, ExecutionEgress
from sandboxd.engine.result import Event, NetworkReady, Output, Result, Started, Status
from sandboxd.engine.run import SessionSandbox
from sandboxd.engine.spec import ExecutionSpec
from sandboxd.server.admission import Admitted
from sandboxd.server.audit_trail import AuditTrail, Subject
from sandboxd.server.execution_network import NetworkRecorder
from sandboxd.server.metrics import Metrics
from sandboxd.server.sessions import OpenSession

log = logging.getLogger("sandboxd.service")


class EngineLike(Protocol):
    def execute(
        self, spec: ExecutionSpec, *, execution_id: str | None = None, cancel: asyncio.Event | None = None,
        stdin_stream: AsyncIterator[bytes] | None = None, session: SessionSandbox | None = None,
        record: Callable[[Result], Awaitable[None]] | None = None,
    ) -> AsyncIterator[Event]: ...


def _audit_events(records: Sequence[AuditRecord]) -> list[pb.ExecuteEvent]:
    return [pb.ExecuteEvent(audit=convert.audit_event(record)) for record in records]


def record_outcome(admitted: Admitted, result: Result, trail: AuditTrail) -> list[AuditRecord]:
    """The outcome records of an allowed execution — exactly once: a cancellation first, then the limit hit or
    seccomp kills, then ``execution.finished``."""
    subject = Subject(admitted.principal, admitted.tool, admitted.execution_id, admitted.request_id)
    admitted.outcome_recorded = True
    records = []
    if result.status is Status.CANCELLED:
        records.append(trail.cancelled(subject, by=admitted.cancelled_by or "unknown"))
    return records + trail.finished(subject, result)


def with_network_usage(result: Result, egress: ExecutionEgress) -> Result:
    return dataclasses.replace(result, network_bytes_sent=egress.bytes_sent,
                               network_bytes_received=egress.bytes_received, network_connections=egress.connections)


async def stream_execution(
    admitted: Admitted,
    spec: ExecutionSpec,
    *,
    decision_record: AuditRecord,
    engine: EngineLike,
    trail: AuditTrail,
    metrics: Metrics,
    received_at: float,
    network: ExecutionRules | None = None,
    proxy: EgressProxy | None = None,
    stdin_stream: AsyncIterator[bytes] | None = None,
    session: OpenSession | None = None,
) -> AsyncGenerator[pb.ExecuteEvent, None]:
    execution_id = admitted.execution_id
    subject = Subject(admitted.principal, admitted.tool, execution_id, admitted.request_id)
    result: Result | None = None
    started = False
    egress: ExecutionEgress | None = None
    spawn_requested_at = time.monotonic()
    metrics.queue_seconds.observe(spawn_requested_at - received_at)
    records: list[AuditRecord] = []

    async def record_while_released(decided: Result) -> None:
        """The outcome written down and fsynced while the engine removes the sandbox — but for one with a door
        out, whose connections are counted once it is gone."""
        nonlocal records
        if egress is None:
            records = record_outcome(admitted, decided, trail)
            await trail.durable(records[-1])

    if session is not None:
        session.call_started()
    events = engine.execute(spec, execution_id=execution_id, cancel=admitted.cancel_token, stdin_stream=stdin_stream,
                            session=None if session is None else session.sandbox, record=record_while_released)
    # The engine sets the sandbox going (a pooled one is let through its gate) while the decision goes out.
    first_event = asyncio.ensure_future(anext(events, None))
    try:
        # inside the try: a caller that leaves at the very first event still gets its outcome recorded
        yield pb.ExecuteEvent(audit=convert.audit_event(decision_record))
        event = await first_event
        while event is not None:
            if isinstance(event, Result):
                result = event
                if egress is not None:  # the sandbox is gone: end its connections before they are counted
                    await egress.close()
                break
            if isinstance(event, NetworkReady):
                if network is None or proxy is None:  # the engine opened a door nobody asked for: keep it shut
                    raise RuntimeError("the sandbox has a network door but no allowlist to serve it with")
                recorder = NetworkRecorder(admitted=admitted, trail=trail, metrics=metrics,
                                           network_max_bytes=network.network_max_bytes)
                egress = proxy.attach(event.listener.dup(), network, recorder)
            elif isinstance(event, Started):
                started = True
                metrics.spawn_seconds.observe(time.monotonic() - spawn_requested_at)
                record = trail.started(
                    subject, pid=event.pid, uid=event.uid, cgroup=event.cgroup, limits=event.limits,
                    profile=spec.seccomp_profile_name,
                    profile_digest=hashlib.sha256(spec.seccomp_bpf).hexdigest(),
                )
                yield convert.started_event(
                    event, tool=admitted.tool, profile=spec.seccomp_profile_name, request_id=admitted.request_id
                )
                yield pb.ExecuteEvent(audit=convert.audit_event(record))
            elif isinstance(event, Output):
                metrics.output_bytes(event.stream.name.lower(), len(event.data))
                yield convert.output_event(event)
            event = await anext(events, None)
    except AuditUnavailable:  # the log, not the engine, failed: the service answers AUDIT_UNAVAILABLE
        raise
    except Exception as error:  # not BaseException: a caller that left (cancellation) passes through
        log.exception("execution %s: the engine failed", execution_id)
        status = Status.CANCELLED if started else Status.SETUP_FAILED
        result = Result(execution_id, status, f"sandboxd engine failure: {error}")
    finally:
        if result is None:  # the caller went away (its call was cancelled) before the Result
            admitted.cancelled_by = admitted.cancelled_by or "caller-left"
            result = Result(execution_id, Status.CANCELLED,
                            "the caller went away" if started else "the caller went away before it started")
        # Recorded before the engine is closed: a second cancellation during the close must not lose it. And
        # the engine is closed whatever the recording does (a broken audit log raises): leaving early closes
        # the stream, which kills the execution and removes its cgroup.
        try:
            if egress is not None:
                result = with_network_usage(result, egress)
            if not admitted.outcome_recorded:
                records = record_outcome(admitted, result, trail)
            metrics.execution_finished(admitted.tool, result, seconds=time.monotonic() - received_at)
        finally:
            try:
                await _settle(first_event, execution_id)  # the engine's generator runs in it: done before closing
                aclose = getattr(events, "aclose", None)
                if aclose is not None:
                    await aclose()
            finally:
                if session is not None:
                    session.call_ended()
                if egress is not None:  # closes at once whatever the caller does (idempotent)
                    await egress.close()
    await trail.durable(records[-1])  # the Result never precedes its records on disk
    for audit_event in _audit_events(records):
        yield audit_event
    yield convert.result_event(result)


async def _settle(first_event: asyncio.Future[Event | None], execution_id: str) -> None:
    """The wait for the engine's first event, over: cancelled if the caller left before it came."""
    if first_event.done():
        if not first_event.cancelled():
            first_event.exception()  # taken by the stream, or the caller left: retrieved either way
        return
    first_event.cancel()
    try:
        await first_event
    except asyncio.CancelledError:
        if not first_event.cancelled():  # it was us who was cancelled, not the wait
            raise
    except Exception:
        log.exception("execution %s: the engine failed as the caller left", execution_id)
