"""The gRPC servicer of ``sandboxd.v1.Sandbox``: identify, decide, delegate, map errors — thinly.

Every refusal is a :class:`~sandboxd.base.errors.SandboxError` raised below this layer and turned into a
status code in :func:`abort` alone (via :mod:`sandboxd.api.status`). Every request that asks for
something (Execute, ExecuteInteractive, Cancel, SubscribeAudit) gets exactly one ``decision`` record, allowed
or denied; an accepted execution always ends its stream with exactly one Result.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from typing import Any, NoReturn, Protocol

import grpc

from sandboxd import __version__
from sandboxd.api import convert
from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2 as pb
from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2_grpc as pb_grpc
from sandboxd.api.handlers import Undecodable
from sandboxd.api.status import status_for, trailing_metadata_for
from sandboxd.audit.hub import AuditHub
from sandboxd.audit.record import AuditRecord
from sandboxd.base.echo import cut, quote
from sandboxd.base.errors import SandboxError
from sandboxd.base.limits import Limits
from sandboxd.base.refusals import AdminOnly, InvalidRequest, RateLimited, UnknownExecution
from sandboxd.egress.proxy import EgressProxy
from sandboxd.engine.pool import PoolStats
from sandboxd.engine.result import Result, Status
from sandboxd.policy.auth import Identity
from sandboxd.policy.caller import identify, peer_of
from sandboxd.policy.ratelimit import Rate, RateLimiter
from sandboxd.server.admission import Admission
from sandboxd.server.audit_stream import stream_audit
from sandboxd.server.audit_trail import AuditTrail, Subject
from sandboxd.server.execution_stream import EngineLike, record_outcome, stream_execution
from sandboxd.server.grant_service import GrantKeeper, GrantRpcs
from sandboxd.server.host_info import DaemonFacts
from sandboxd.server.intake import accept, target_of
from sandboxd.server.interactive import ExecuteInputs, InputPump
from sandboxd.server.mcp_calls import accept_mcp_call, stream_mcp_call
from sandboxd.server.mcp_servers import McpServers
from sandboxd.server.mcp_servers_config import McpServerConfig
from sandboxd.server.metrics import Metrics
from sandboxd.server.network_rules import network_details
from sandboxd.server.runtime import Runtime
from sandboxd.server.session_service import SessionRpcs
from sandboxd.server.sessions import Sessions
from sandboxd.server.tools import Tool

log = logging.getLogger("sandboxd.service")

# Callers that fail to authenticate, per peer (a TCP address; all of the Unix socket): what they may cost.
UNAUTHENTICATED_RATE = Rate(per_minute=60, burst=20)


def peer_key(peer: str) -> str:
    """The budget a peer counts against: its address without the port (``ipv4:1.2.3.4:5678`` → ``ipv4:1.2.3.4``)."""
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rsplit(":", 1)[0]
    return peer


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


class ExecutorLike(EngineLike, Protocol):
    """What the service needs of :class:`sandboxd.engine.executor.Executor` (unit tests pass a fake)."""

    @property
    def backend_name(self) -> str: ...
    @property
    def cgroup_base(self) -> str: ...
    def running(self) -> Sequence[RunningLike]: ...
    def signal(self, execution_id: str, signum: int) -> bool: ...
    def pool_stats(self) -> PoolStats: ...


async def abort(context: grpc.aio.ServicerContext, error: SandboxError, *, instance: str = "") -> NoReturn:
    """End the call with ``error``'s status; ``instance``: name this daemon (a refusal: a client of a fleet
    retries a temporary one on another daemon)."""
    # bounded: the message travels in trailing metadata, and what a caller sent may be quoted in it
    await context.abort(status_for(error), cut(error.message), trailing_metadata_for(error, instance=instance))
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


class SandboxService(SessionRpcs, GrantRpcs, pb_grpc.SandboxServicer):
    def __init__(
        self,
        *,
        runtime: Callable[[], Runtime],
        executor: ExecutorLike,
        admission: Admission,
        facts: DaemonFacts,
        trail: AuditTrail,
        hub: AuditHub,
        metrics: Metrics,
        egress: EgressProxy | None = None,
        sessions: Sessions | None = None,
        mcp_servers: McpServers | None = None,
    ) -> None:
        self._runtime = runtime  # read once per request: a reload never splits one
        self._egress = egress  # serves the network allowlists; None: an execution that has one cannot start
        self._sessions = sessions  # None: this servicer keeps no sessions (unit tests)
        self._mcp = mcp_servers  # the sandboxed MCP servers, whose tools are NAME__TOOL; None: none served
        self._executor = executor
        self._admission = admission
        self._facts = facts
        self._trail = trail
        self._hub = hub
        self._metrics = metrics
        self._unauthenticated = RateLimiter()
        self._grant_keeper = GrantKeeper(trail)  # runtime grants: one change at a time, ended at their expiry
        self.started_at = time.time()
        self.executions_total = 0
        self.denied_total = 0

    async def _identify(self, context: grpc.aio.ServicerContext, runtime: Runtime, rpc: str) -> Identity:
        """The caller, or an audited AUTH_FAILED."""
        try:
            return identify(context, runtime.authenticator)
        except SandboxError as failure:
            peer = peer_of(context)
            # Unidentified callers share a bounded budget per peer: failed logins cannot flood the log.
            retry_after_s = self._unauthenticated.try_acquire(peer_key(peer), UNAUTHENTICATED_RATE,
                                                              time.monotonic())
            refusal: SandboxError = failure
            if retry_after_s > 0:
                refusal = RateLimited(f"too many failed authentications from {quote(peer)}; retry in "
                                      f"{retry_after_s:.3f}s", retry_after_s=retry_after_s)
            await self._deny(context, Subject(), rpc=rpc, error=refusal, peer=peer)

    async def identify_caller(self, context: grpc.aio.ServicerContext, rpc: str) -> Identity:
        """Who calls through a front door beside gRPC (the MCP listener), from ``context``'s credentials — or
        the audited, per-peer rate-limited AUTH_FAILED of any RPC (raised through ``context.abort``)."""
        return await self._identify(context, self._runtime(), rpc)

    def _allow(self, subject: Subject, *, rpc: str, role: str = "", limits: Limits | None = None,
               command: Sequence[str] | None = None, clamped: Sequence[str] = (),
               network: Mapping[str, Sequence[str]] | None = None,
               policy: Mapping[str, Any] | None = None) -> AuditRecord:
        """Record the grant and count it. ``policy``: the decision's own facts (its grant, a risk assessment)."""
        self._metrics.decision("allowed", "")
        return self._trail.allowed(subject, rpc=rpc, role=role, limits=limits, command=command, clamped=clamped,
                                   network=network, policy=policy)

    async def _deny(self, context: grpc.aio.ServicerContext, subject: Subject, *, rpc: str,
                    error: SandboxError, peer: str = "") -> NoReturn:
        """Record the refusal durably, count it, and end the call with its status."""
        self.denied_total += 1
        self._metrics.decision("denied", error.reason)
        log.info("refused %s for %r (%s): %s", rpc, subject.principal, error.reason, cut(error.message))
        try:
            record = self._trail.denied(subject, rpc=rpc, error=error, peer=peer)
            await self._trail.durable(record)
        except SandboxError as audit_error:  # no refusal unrecorded: the caller learns the log is down
            log.error("the refusal could not be recorded: %s", audit_error.message)
            await abort(context, audit_error)
        await abort(context, error, instance=self._facts.instance)

    async def _caller(self, context: grpc.aio.ServicerContext, rpc: str, tool: str = "",
                      request_id: str = "", labels: Mapping[str, str] | None = None
                      ) -> tuple[Runtime, Identity, Subject]:
        """Who calls (or an audited AUTH_FAILED), and its request recorded — or AUDIT_UNAVAILABLE: nothing is
        decided unrecorded."""
        runtime = self._runtime()
        identity = await self._identify(context, runtime, rpc)
        subject = Subject(identity.principal, tool, "", request_id)
        try:
            self._trail.request_received(subject, rpc=rpc, peer=peer_of(context), auth_method=identity.method,
                                         labels=labels)
            self._trail.check_writable()  # fail closed: no request the log cannot record
            await self._grant_keeper.sweep_due(runtime.grants)  # a runtime grant past its expiry: recorded now
        except SandboxError as error:
            await abort(context, error)
        return runtime, identity, subject

    async def refuse_undecodable(self, request: Undecodable, context: grpc.aio.ServicerContext) -> NoReturn:
        """A request grpc could not decode: INVALID_ARGUMENT naming why, recorded like any refusal."""
        runtime = self._runtime()
        identity = await self._identify(context, runtime, request.rpc)
        error = InvalidRequest(f"the {request.message_type} request could not be decoded: {cut(request.error)}")
        await self._deny(context, Subject(identity.principal), rpc=request.rpc, error=error)

    # -- Execute -------------------------------------------------------------------------------------

    async def Execute(
        self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExecuteEvent]:
        async for event in self._execute(request, context, rpc="Execute"):
            yield event

    async def ExecuteInteractive(
        self, inputs: ExecuteInputs, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExecuteEvent]:
        """Execute, with the handler's stdin, its EOF and signals coming from the caller as it runs (see
        :mod:`sandboxd.server.interactive`); the first input must be the request."""
        inputs = aiter(inputs)  # one iterator for the first input and the rest
        first = await anext(inputs, None)
        if isinstance(first, Undecodable):
            await self.refuse_undecodable(first, context)
        if first is None or first.WhichOneof("input") != "request":
            identity = await self._identify(context, self._runtime(), "ExecuteInteractive")
            got = "nothing" if first is None else (first.WhichOneof("input") or "an empty input")
            error = InvalidRequest(f"the first input of ExecuteInteractive must be its request, not {got}")
            await self._deny(context, Subject(identity.principal), rpc="ExecuteInteractive", error=error)
        async for event in self._execute(first.request, context, rpc="ExecuteInteractive", inputs=inputs):
            yield event

    async def _execute(
        self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext, *, rpc: str,
        inputs: ExecuteInputs | None = None,
    ) -> AsyncIterator[pb.ExecuteEvent]:
        """One execution, from the caller's identity to its Result: the one path of both RPCs. ``inputs``: an
        interactive caller's, after its request."""
        received_at = time.monotonic()
        runtime, identity, subject = await self._caller(context, rpc, target_of(request), request.request_id,
                                                        request.labels)
        served = None if self._mcp is None or request.WhichOneof("target") != "tool" else (
            self._mcp.server_of(runtime, request.tool))
        if served is not None:  # a sandboxed MCP server's tool: a call forwarded, not a sandbox of its own
            if inputs is not None:
                await self._deny(context, subject, rpc=rpc, error=InvalidRequest(
                    f"{request.tool} is an MCP server's tool: it takes no stdin (use Execute)"))
            async for event in self._execute_mcp(request, context, rpc, runtime, identity, subject, served,
                                                 received_at):
                yield event
            return
        try:
            accepted = await accept(request, identity, runtime, self._admission, self._sessions,
                                    observe_risk=self._metrics.risk_assessed)
        except SandboxError as error:
            await self._deny(context, subject, rpc=rpc, error=error)
        admitted, spec, decision = accepted.admitted, accepted.spec, accepted.decision
        # From the admission on, one try/finally: whatever happens, the slot is released and the allowed
        # decision gets exactly one outcome record.
        events: AsyncGenerator[pb.ExecuteEvent, None] | None = None
        pump: InputPump | None = None
        try:
            subject = Subject(identity.principal, admitted.tool, admitted.execution_id, admitted.request_id)
            network = accepted.network
            record = self._allow(subject, rpc=rpc, role=decision.role, limits=spec.limits,
                                 command=spec.argv if not admitted.tool else None, clamped=decision.clamped,
                                 network=network_details(network), policy=decision.audit_details())
            if inputs is not None:
                pump = InputPump(inputs, admitted=admitted, engine=self._executor, trail=self._trail,
                                 max_chunk_bytes=runtime.config.daemon.max_request_bytes)
                pump.start()
            self._metrics.active_executions.inc()
            events = stream_execution(
                admitted, spec, decision_record=record, engine=self._executor, trail=self._trail,
                metrics=self._metrics, received_at=received_at, network=network, proxy=self._egress,
                stdin_stream=None if pump is None else pump.stdin(), session=accepted.session,
            )
            async for event in events:
                yield event
            if pump is not None and pump.error is not None:  # after its Result: the input that ended it
                await abort(context, pump.error)
        except SandboxError as error:  # the audit log failed: the Result cannot be vouched for
            log.error("execution %s: %s", admitted.execution_id, error.message)
            await abort(context, error)
        finally:
            if pump is not None:
                await pump.close()
            # Closed explicitly, not left to the garbage collector: a caller that went away must not
            # leave its execution running.
            if events is not None:
                await events.aclose()
                self._metrics.active_executions.dec()
            if not admitted.outcome_recorded:  # it never reached the engine (the caller left at once)
                admitted.cancelled_by = admitted.cancelled_by or "caller-left"
                try:
                    record_outcome(admitted, Result(admitted.execution_id, Status.CANCELLED,
                                                    "the caller went away before it started"), self._trail)
                except SandboxError as error:
                    log.error("execution %s: its outcome could not be recorded: %s", admitted.execution_id,
                              error.message)
            self._admission.release(admitted.execution_id)
            self.executions_total += 1

    async def _execute_mcp(
        self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext, rpc: str, runtime: Runtime,
        identity: Identity, subject: Subject, served: tuple[McpServerConfig, str], received_at: float,
    ) -> AsyncIterator[pb.ExecuteEvent]:
        assert self._mcp is not None
        try:
            call = await accept_mcp_call(request, identity, runtime, self._admission, self._mcp, *served,
                                         observe_risk=self._metrics.risk_assessed)
        except SandboxError as error:
            await self._deny(context, subject, rpc=rpc, error=error)
        events = stream_mcp_call(call, rpc=rpc, runtime=runtime, servers=self._mcp, trail=self._trail,
                                 metrics=self._metrics, received_at=received_at)
        self._metrics.active_executions.inc()
        try:
            async for event in events:
                yield event
        except SandboxError as error:  # the audit log failed: the Result cannot be vouched for
            await abort(context, error)
        finally:
            await events.aclose()
            self._metrics.active_executions.dec()
            self._admission.release(call.admitted.execution_id)
            self.executions_total += 1

    def cancel_all(self) -> int:
        """Cancel every admitted execution (the end of a drain); each stream still ends with its Result."""
        admitted = self._admission.admitted()
        for item in admitted:
            item.cancel("daemon-stopping")
        return len(admitted)

    # -- the other RPCs --------------------------------------------------------------------------------

    async def Cancel(self, request: pb.CancelRequest, context: grpc.aio.ServicerContext) -> pb.CancelResponse:
        runtime = self._runtime()
        identity = await self._identify(context, runtime, "Cancel")
        admitted = self._admission.get(request.execution_id)
        visible = admitted is not None and (
            admitted.principal == identity.principal or runtime.policy.is_admin(identity)
        )
        subject = Subject(identity.principal, admitted.tool if admitted else "", request.execution_id)
        if admitted is None or not visible:  # another's execution is as unknown as a finished one
            await self._deny(context, subject, rpc="Cancel",
                             error=UnknownExecution(f"no running execution {quote(request.execution_id)}"))
        self._allow(subject, rpc="Cancel")
        admitted.cancel(identity.principal)
        log.info("cancel requested for %s by %s", request.execution_id, identity.principal)
        return pb.CancelResponse()

    async def ListExecutions(
        self, request: pb.ListExecutionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListExecutionsResponse:
        runtime = self._runtime()
        identity = await self._identify(context, runtime, "ListExecutions")
        everyone = runtime.policy.is_admin(identity)
        running = {item.execution_id: item for item in self._executor.running()}
        executions = []
        for admitted in self._admission.admitted():
            if not everyone and admitted.principal != identity.principal:
                continue
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
        runtime = self._runtime()
        identity = await self._identify(context, runtime, "ListTools")
        tools = {tool.name: tool for tool in runtime.registry.tools()}
        labels = {name: tool.classification for name, tool in tools.items()}
        visible = runtime.policy.visible_tools(identity, list(tools), labels)
        messages = [_tool_message(tools[name]) for name in visible]
        if self._mcp is not None:  # the sandboxed MCP servers' tools this caller may call, as NAME__TOOL
            messages += await self._mcp.tools(runtime, identity)
        for message in messages:  # what this caller's grants hold its params to
            constraint = runtime.policy.params_constraint(identity, message.name,
                                                          classification=labels.get(message.name))
            if constraint is not None:
                message.params_constraint_json = json.dumps(constraint, sort_keys=True)
        return pb.ListToolsResponse(tools=messages)

    async def GetInfo(self, request: pb.GetInfoRequest, context: grpc.aio.ServicerContext) -> pb.GetInfoResponse:
        runtime = self._runtime()
        identity = await self._identify(context, runtime, "GetInfo")
        facts = self._facts
        now = time.time()
        return pb.GetInfoResponse(
            version=__version__,
            instance=facts.instance,
            cgroup_backend=self._executor.backend_name,
            cgroup_mode=facts.cgroup_mode,
            cgroup_base=self._executor.cgroup_base,
            kernel_release=facts.kernel_release,
            kernel_features=dict(facts.kernel_features),
            default_limits=convert.limits_to_proto(runtime.registry.default_limits),
            max_concurrent_executions=self._admission.max_concurrent_executions,
            running_executions=len(self._admission),
            max_request_bytes=runtime.config.daemon.max_request_bytes,
            draining=self._admission.draining,
            started_at=convert.timestamp(self.started_at),
            uptime_ms=int((now - self.started_at) * 1000),
            executions_total=self.executions_total,
            denied_total=self.denied_total,
            audit_log=str(self._trail.log.path),
            audit_last_seq=self._trail.log.last_seq,
            principal=identity.principal,
            roles=list(identity.roles),
            config_source=runtime.source_name,
            config_loaded_at=convert.timestamp(runtime.loaded_at),
            pool=_pool_message(self._executor.pool_stats(), runtime.config.sandbox.pool_size),
        )

    async def SubscribeAudit(
        self, request: pb.SubscribeAuditRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AuditEvent]:
        runtime = self._runtime()
        identity = await self._identify(context, runtime, "SubscribeAudit")
        subject = Subject(identity.principal)
        if not runtime.policy.is_admin(identity):
            await self._deny(context, subject, rpc="SubscribeAudit",
                             error=AdminOnly("the audit stream is for admin principals"))
        self._allow(subject, rpc="SubscribeAudit")
        try:
            async for event in stream_audit(request, log=self._trail.log, hub=self._hub,
                                            queue_size=runtime.config.audit.subscriber_queue):
                yield event
        except SandboxError as error:  # dropped for being too slow
            await abort(context, error)


def _pool_message(stats: PoolStats, size: int) -> pb.PoolInfo:
    return pb.PoolInfo(size=size, kinds=stats.keys, ready=stats.ready, building=stats.building, hits=stats.hits,
                       misses=stats.misses, built=stats.built, failed=stats.failed,
                       build_ms_mean=int(stats.build_seconds_total * 1000 / stats.built) if stats.built else 0)


def _tool_message(tool: Tool) -> pb.Tool:
    return pb.Tool(
        name=tool.name,
        description=tool.description,
        params_schema_json=json.dumps(tool.params_schema, sort_keys=True),
        limits=convert.limits_to_proto(tool.limits),
        seccomp_profile=tool.seccomp_profile,
        network=tool.network,
        network_allow=[] if tool.network_allow is None else tool.network_allow.texts(),
        binds=[pb.BindInfo(target=str(bind.target), writable=bind.writable) for bind in tool.binds],
        classification=tool.classification,
    )
