"""The gRPC servicer of ``sandboxd.v1.Sandbox``: convert, delegate, map errors — in that order, thinly.

Every refusal is a :class:`~sandboxd.errors.SandboxError` raised below this layer and turned into a
status code in :func:`_abort` alone (via :mod:`sandboxd.api_errors`). An accepted execution always ends
its stream with exactly one Result, whatever happens to the engine underneath.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import NoReturn, Protocol

import grpc

from sandboxd import __version__, convert
from sandboxd._proto.sandboxd.v1 import sandbox_pb2 as pb
from sandboxd._proto.sandboxd.v1 import sandbox_pb2_grpc as pb_grpc
from sandboxd.admission import Admission, Admitted
from sandboxd.api_errors import InvalidRequest, PayloadTooLarge, UnknownExecution, status_for, trailing_metadata_for
from sandboxd.errors import SandboxError
from sandboxd.host_info import DaemonFacts
from sandboxd.registry import ToolRegistry
from sandboxd.result import Event, Output, Result, Started, Status
from sandboxd.spec import ExecutionSpec

log = logging.getLogger("sandboxd.service")
audit_log = logging.getLogger("sandboxd.audit")


class RunningLike(Protocol):
    @property
    def execution_id(self) -> str: ...
    @property
    def started_at(self) -> float: ...
    @property
    def pid(self) -> int: ...
    @property
    def cpu_usec(self) -> int: ...
    @property
    def memory_peak_bytes(self) -> int: ...


class ExecutorLike(Protocol):
    """What the service needs of :class:`sandboxd.executor.Executor` (unit tests pass a fake)."""

    @property
    def backend_name(self) -> str: ...
    @property
    def cgroup_base(self) -> str: ...
    def execute(self, spec: ExecutionSpec, *, execution_id: str | None = None) -> AsyncIterator[Event]: ...
    def cancel(self, execution_id: str) -> bool: ...
    def running(self) -> Sequence[RunningLike]: ...


async def _abort(context: grpc.aio.ServicerContext, error: SandboxError) -> NoReturn:
    await context.abort(status_for(error), error.message, trailing_metadata_for(error))
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


def _principal(context: grpc.aio.ServicerContext) -> str:
    # Until callers authenticate (the policy issue), whoever could open the socket is known by peer only.
    return str(context.peer() or "unknown")


class SandboxService(pb_grpc.SandboxServicer):
    def __init__(
        self, *, registry: ToolRegistry, executor: ExecutorLike, admission: Admission, facts: DaemonFacts
    ) -> None:
        self._registry = registry
        self._executor = executor
        self._admission = admission
        self._facts = facts

    # -- Execute -------------------------------------------------------------------------------------

    async def Execute(
        self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExecuteEvent]:
        try:
            self._admission.check_open()  # a stopping daemon does not even validate
            spec = self._plan(request)
            admitted = self._admission.admit(
                Admitted(
                    execution_id=uuid.uuid4().hex[:16],
                    tool=spec.tool,
                    principal=_principal(context),
                    request_id=request.request_id,
                    labels=dict(request.labels),
                )
            )
        except SandboxError as error:
            log.info("refused %s: %s (%s)", _target_name(request), error.message, error.reason)
            await _abort(context, error)
        events = self._run(admitted, spec)
        try:
            async for event in events:
                yield event
        finally:
            # Closed explicitly, not left to the garbage collector: a caller that went away must not
            # leave its execution running.
            await events.aclose()
            self._admission.release(admitted.execution_id)

    def _plan(self, request: pb.ExecuteRequest) -> ExecutionSpec:
        size_bytes = request.ByteSize()
        if size_bytes > self._facts.max_request_bytes:
            raise PayloadTooLarge(
                f"request of {size_bytes} bytes exceeds daemon.max_request_bytes = "
                f"{self._facts.max_request_bytes}"
            )
        limits = convert.limits_from_proto(request.limits)
        target = request.WhichOneof("target")
        if target == "tool":
            spec = self._registry.plan_tool(
                request.tool, params_json=request.params_json, stdin=request.stdin, limits=limits,
                labels=request.labels,
            )
        elif target == "command":
            if request.params_json:
                raise InvalidRequest("params_json belongs to tools; a command reads its stdin")
            spec = self._registry.plan_command(
                list(request.command.argv), profile=request.command.profile, stdin=request.stdin,
                limits=limits, labels=request.labels,
            )
        else:
            raise InvalidRequest("the request names neither a tool nor a command")
        return spec

    async def _run(self, admitted: Admitted, spec: ExecutionSpec) -> AsyncGenerator[pb.ExecuteEvent, None]:
        execution_id = admitted.execution_id
        profile = spec.seccomp_profile_name
        yield self._audit("execution.admitted", admitted, "allowed", {"seccomp_profile": profile})
        result: Result | None = None
        started = False
        events = self._executor.execute(spec, execution_id=execution_id)
        try:
            async for event in events:
                if isinstance(event, Result):
                    result = event
                    break
                if isinstance(event, Started):
                    started = True
                    if admitted.cancel_requested:  # Cancel came before the engine knew the id
                        self._executor.cancel(execution_id)
                    yield convert.started_event(
                        event, tool=admitted.tool, profile=profile, request_id=admitted.request_id
                    )
                elif isinstance(event, Output):
                    yield convert.output_event(event)
        except Exception as error:  # not BaseException: a caller that left (cancellation) passes through
            # The engine promises a Result; if it broke that promise the caller still gets one.
            log.exception("execution %s: the engine failed", execution_id)
            status = Status.CANCELLED if started else Status.SETUP_FAILED
            result = Result(execution_id, status, f"sandboxd engine failure: {error}")
        finally:
            # Leaving early (the caller went away) closes the stream, which kills the execution.
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
        if result is None:
            result = Result(execution_id, Status.SETUP_FAILED, "the engine ended without a result")
        yield self._audit("execution.finished", admitted, result.status.value, {"message": result.message})
        yield convert.result_event(result)

    def _audit(
        self, event: str, admitted: Admitted, outcome: str, details: Mapping[str, str]
    ) -> pb.ExecuteEvent:
        audit_log.info(
            "%s execution=%s tool=%s principal=%s outcome=%s",
            event, admitted.execution_id, admitted.tool or "(command)", admitted.principal, outcome,
        )
        return convert.audit_event(
            event, principal=admitted.principal, tool=admitted.tool, execution_id=admitted.execution_id,
            outcome=outcome, details=details,
        )

    def cancel_all(self) -> int:
        """Cancel every admitted execution (the end of a drain); each stream still ends with its Result."""
        admitted = self._admission.admitted()
        for item in admitted:
            item.cancel_requested = True
            self._executor.cancel(item.execution_id)
        return len(admitted)

    # -- the other RPCs --------------------------------------------------------------------------------

    async def Cancel(
        self, request: pb.CancelRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelResponse:
        admitted = self._admission.get(request.execution_id)
        if admitted is None:
            await _abort(context, UnknownExecution(f"no running execution {request.execution_id!r}"))
        admitted.cancel_requested = True
        self._executor.cancel(request.execution_id)
        log.info("cancel requested for %s by %s", request.execution_id, _principal(context))
        return pb.CancelResponse()

    async def ListExecutions(
        self, request: pb.ListExecutionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListExecutionsResponse:
        running = {item.execution_id: item for item in self._executor.running()}
        executions = []
        for admitted in self._admission.admitted():
            live = running.get(admitted.execution_id)
            message = pb.RunningExecution(
                execution_id=admitted.execution_id,
                tool=admitted.tool,
                principal=admitted.principal,
                request_id=admitted.request_id,
                labels=dict(admitted.labels),
                started_at=convert.timestamp(live.started_at if live else admitted.admitted_at),
            )
            if live is not None:
                message.pid = live.pid
                message.cpu_usec = live.cpu_usec
                message.memory_peak_bytes = live.memory_peak_bytes
            executions.append(message)
        return pb.ListExecutionsResponse(executions=executions)

    async def ListTools(
        self, request: pb.ListToolsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListToolsResponse:
        return pb.ListToolsResponse(tools=[convert.tool_message(tool) for tool in self._registry.tools()])

    async def GetInfo(
        self, request: pb.GetInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetInfoResponse:
        facts = self._facts
        return pb.GetInfoResponse(
            version=__version__,
            instance=facts.instance,
            cgroup_backend=self._executor.backend_name,
            cgroup_mode=facts.cgroup_mode,
            cgroup_base=self._executor.cgroup_base,
            kernel_release=facts.kernel_release,
            kernel_features=dict(facts.kernel_features),
            default_limits=convert.limits_to_proto(self._registry.default_limits),
            max_concurrent_executions=self._admission.max_concurrent_executions,
            running_executions=len(self._admission),
            max_request_bytes=facts.max_request_bytes,
            draining=self._admission.draining,
        )


def _target_name(request: pb.ExecuteRequest) -> str:
    if request.WhichOneof("target") == "command":
        return f"command {list(request.command.argv)[:1]}"
    return f"tool {request.tool!r}"
