"""An ``Execute`` of ``NAME__TOOL``: one tools/call of a sandboxed MCP server, decided and recorded as any call.

Accepting it (:func:`accept_mcp_call`) is intake's order for a tool: the daemon takes work, the request's
size, the policy (grant — globs like ``"time__*"`` —, payload, rate), the arguments against the tool's
``inputSchema`` as the server listed it, a concurrency slot. The stream (:func:`stream_mcp_call`) then carries::

    decision (allowed)   with mcp: server, tool, arguments_bytes, arguments_sha256 — before the server sees it
    Output (stdout)      the server's CallToolResult as JSON (the MCP gateways pass it through as it is)
    mcp.call             the server's sandbox, duration, isError
    execution.finished   OK when the server answered (its isError is in the result); otherwise the verdict:
                         the server's own when it ended under the call (MEMORY_LIMIT …), TIMEOUT past
                         call_timeout, SETUP_FAILED when it could not be started, CANCELLED
    Result               with mcp_server set

The call runs in the instance kept for the caller (see :mod:`sandboxd.server.mcp_servers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jsonschema

from sandboxd.api import convert
from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2 as pb
from sandboxd.api.mcp_labels import SESSION_LABEL
from sandboxd.base.errors import SandboxError
from sandboxd.base.refusals import InvalidRequest, RateLimited, UnknownTool
from sandboxd.engine.result import Output, Result, Status, Stream
from sandboxd.policy.auth import Identity
from sandboxd.policy.decisions import Decision
from sandboxd.policy.risk import Observer
from sandboxd.server.admission import Admission, Admitted
from sandboxd.server.audit_trail import AuditTrail, Subject
from sandboxd.server.execution_stream import record_outcome
from sandboxd.server.intake import checked_payload_bytes
from sandboxd.server.mcp_instance_types import InstanceKey, ServerGone
from sandboxd.server.mcp_servers import McpServers
from sandboxd.server.mcp_servers_config import McpServerConfig
from sandboxd.server.metrics import Metrics
from sandboxd.server.registry import UnresolvableSchema, parse_params, validate_params
from sandboxd.server.risk_intake import assess_risk
from sandboxd.server.runtime import Runtime

if TYPE_CHECKING:  # the SDK is loaded once a server starts, not with the daemon
    from mcp import types

OUTPUT_CHUNK_BYTES = 64 * 1024
UNCLASSIFIED = ""  # a server's tools carry no classification label ([policy] unclassified says what that is)


@dataclass(frozen=True)
class McpCall:
    admitted: Admitted
    config: McpServerConfig
    tool: str  # as the server names it
    arguments: dict[str, Any]
    arguments_bytes: int
    arguments_sha256: str
    decision: Decision
    key: InstanceKey


async def accept_mcp_call(request: pb.ExecuteRequest, identity: Identity, runtime: Runtime, admission: Admission,
                          servers: McpServers, config: McpServerConfig, tool: str, *,
                          observe_risk: Observer | None = None) -> McpCall:
    """Decide on a call of ``config``'s ``tool``, held to the policy as any tool's call is — the grant (the
    server's tools carry no classification: a clearance below the highest does not reach them), the arguments
    against the server's schema and the grants' constraints, the risk assessor — or raise the refusal. A
    refusal before the policy's decision is charged a rate token, as intake charges one."""
    decided = False
    try:
        admission.check_open()
        if request.session_id or request.stdin or request.limits.ByteSize():
            raise InvalidRequest(f"{request.tool} is a tool of MCP server {config.name!r}: its sandbox, limits and "
                                 "input are the server's; send params only")
        payload_bytes = checked_payload_bytes(request, runtime)
        runtime.policy.check_grant(identity, request.tool, classification=UNCLASSIFIED)
        arguments = parse_params(request.params_json)
        listed = {item.name: item for item in await servers.catalog(runtime, config)}
        if tool not in listed:
            raise UnknownTool(f"MCP server {config.name!r} has no tool {tool!r}")
        _check_arguments(arguments, listed[tool])
        decision = runtime.policy.decide(identity, tool=request.tool, requested={}, tool_limits=config.sandbox.limits,
                                         payload_bytes=payload_bytes, params=arguments, classification=UNCLASSIFIED)
        decided = True
        decision = await assess_risk(runtime, identity, decision, params=arguments, argv=None,
                                     labels=request.labels, request_id=request.request_id, observe=observe_risk)
    except RateLimited:
        raise
    except SandboxError:
        if not decided:
            runtime.policy.charge_refusal(identity)
        raise
    mcp_session = request.labels.get(SESSION_LABEL, "") if config.scope == "session" else ""
    admitted = admission.admit(Admitted(
        execution_id=uuid.uuid4().hex[:16], tool=request.tool, principal=identity.principal,
        request_id=request.request_id, labels=dict(request.labels)), principal_max=decision.max_concurrent)
    encoded = request.params_json.encode()
    return McpCall(admitted, config, tool, arguments, len(encoded), hashlib.sha256(encoded).hexdigest(), decision,
                   InstanceKey(config.name, identity.principal, mcp_session))


def _check_arguments(arguments: dict[str, Any], tool: types.Tool) -> None:
    try:
        jsonschema.validators.validator_for(tool.input_schema).check_schema(tool.input_schema)
    except jsonschema.SchemaError:
        return  # the server's schema is its own business; it checks its arguments itself
    try:
        validate_params(arguments, tool.input_schema)
    except UnresolvableSchema:
        return  # likewise: the server checks its arguments itself, in its sandbox


async def stream_mcp_call(call: McpCall, *, rpc: str, runtime: Runtime, servers: McpServers, trail: AuditTrail,
                          metrics: Metrics, received_at: float) -> AsyncGenerator[pb.ExecuteEvent, None]:
    admitted, config = call.admitted, call.config
    subject = Subject(admitted.principal, admitted.tool, admitted.execution_id, admitted.request_id)
    metrics.decision("allowed", "")
    record = trail.allowed(subject, rpc=rpc, role=call.decision.role, policy=call.decision.audit_details(), mcp={
        "server": config.name, "tool": call.tool, "arguments_bytes": call.arguments_bytes,
        "arguments_sha256": call.arguments_sha256})
    result: Result | None = None
    instance_id = ""
    is_error = False
    started_at = time.monotonic()
    output = b""
    try:
        yield pb.ExecuteEvent(audit=convert.audit_event(record))
        try:
            instance = await _until_cancelled(admitted, servers.instance(runtime, config, call.key, call.decision))
            instance_id = instance.instance_id
            answer = await _until_cancelled(admitted, instance.call(call.tool, call.arguments))
        except ServerGone as gone:
            status = Status[pb.Status.Name(gone.status)]
            result = _result(admitted, Status.CANCELLED if status is Status.OK else status, gone.message, started_at)
        except TimeoutError:
            result = _result(admitted, Status.TIMEOUT, f"MCP server {config.name!r} did not answer within "
                             f"call_timeout ({config.call_timeout_ms / 1000:g} s)", started_at)
        except SandboxError as error:  # it could not be started: no sandbox, or too many of them
            result = _result(admitted, Status.SETUP_FAILED, f"{error.reason}: {error.message}", started_at)
        else:
            is_error = bool(answer.is_error)
            output = answer.model_dump_json(by_alias=True, exclude_none=True).encode()
            result = _result(admitted, Status.OK, "the MCP server answered" + (" (isError)" if is_error else ""),
                             started_at, stdout_bytes=len(output))
        if result.status is not Status.OK:
            is_error = True
        for offset in range(0, len(output), OUTPUT_CHUNK_BYTES):
            chunk = output[offset:offset + OUTPUT_CHUNK_BYTES]
            metrics.output_bytes("stdout", len(chunk))
            yield convert.output_event(Output(admitted.execution_id, Stream.STDOUT, chunk))
    finally:
        if result is None:  # the caller went away
            admitted.cancelled_by = admitted.cancelled_by or "caller-left"
            result = _result(admitted, Status.CANCELLED, "the caller went away", started_at)
        records = [trail.mcp_call(subject, server=config.name, instance=instance_id,
                                  duration_ms=result.wall_time_ms, is_error=is_error or result.status is not Status.OK,
                                  outcome=result.status.value)]
        records += record_outcome(admitted, result, trail)
        metrics.execution_finished(admitted.tool, result, seconds=time.monotonic() - received_at)
    await trail.durable(records[-1])
    for item in records:
        yield pb.ExecuteEvent(audit=convert.audit_event(item))
    event = convert.result_event(result)
    event.result.mcp_server = config.name
    yield event


async def _until_cancelled(admitted: Admitted, work: Any) -> Any:
    """``work``'s result, or CANCELLED (ServerGone) when the call is cancelled first (Cancel, the daemon
    stopping)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(admitted.cancel_token.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if not task.done() or task.cancelled():
        raise ServerGone(pb.CANCELLED, f"cancelled by {admitted.cancelled_by or 'unknown'}")
    return task.result()


def _result(admitted: Admitted, status: Status, message: str, started_at: float, *, stdout_bytes: int = 0) -> Result:
    return Result(admitted.execution_id, status, message, wall_time_ms=int((time.monotonic() - started_at) * 1000),
                  stdout_bytes=stdout_bytes)

