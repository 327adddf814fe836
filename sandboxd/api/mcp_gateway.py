"""sandboxd's tools as MCP tools — the mapping both MCP front doors share (``sandboxctl mcp`` on stdio, the
daemon's streamable-HTTP listener); each brings a :class:`ToolSource`, the way it reaches the daemon as its caller::

    tools/list                 ListTools — what this caller may run; inputSchema = the tool's params schema
    tools/call                 one Execute, with request_id and the labels mcp_request_id (the MCP request's id)
                               and mcp_session_id (the MCP session's), so the audit records carry both. OK: the
                               handler's stdout as text — or, for a tool a sandboxed MCP server serves, the
                               server's own result, passed through. Any other verdict, or a refusal by the
                               daemon, is a result with isError whose text names it (VERDICT: message, then the
                               handler's stderr) — not a protocol error
    its progress token         one notifications/progress per output chunk: bytes of output so far
    notifications/cancelled    the Execute is cancelled, and the daemon kills the execution

The MCP SDK owns the protocol: framing, the handshake, progress tokens and cancellation. The gateway adds no
policy of its own: the daemon decides (grants, limits, rate) and records (audit) as for any call of the caller.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from mcp import types
from mcp.server import Server, ServerRequestContext
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from sandboxd import __version__
from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2 as pb
from sandboxd.api.mcp_labels import REQUEST_LABEL, SESSION_LABEL

__all__ = ["REQUEST_LABEL", "SESSION_LABEL", "Refused", "ToolSource", "build_server", "mcp_tool", "verdict_text"]

log = logging.getLogger("sandboxd.mcp")

INSTRUCTIONS = ("Each tool runs in a sandbox of its own, under the limits its sandboxd sets (memory, CPU and wall "
                "time, output). A result with isError names the verdict (TIMEOUT, MEMORY_LIMIT, NONZERO_EXIT …) "
                "or the refusal (INVALID_PARAMS, TOOL_NOT_GRANTED, RATE_LIMITED …) and carries the tool's stderr.")

OnEvent = Callable[[pb.ExecuteEvent], Awaitable[None]]


class Refused(Exception):
    """The daemon refused the call (or could not be reached): ``text`` is ``REASON: message``."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def refusal_text(reason: str, message: str, *, temporary: bool = False) -> str:
    """``INVALID_PARAMS: $.code: 42 is not of type 'string'`` — the machine reason first, as a verdict is."""
    text = f"{reason}: {message}"
    return f"{text} (temporary: the same call may succeed later)" if temporary else text


class ToolSource(Protocol):
    """How one front door reaches the daemon for one MCP request, as that request's caller."""

    async def list_tools(self) -> Sequence[pb.Tool]:
        """The caller's ListTools; raises :class:`Refused`."""
        ...

    async def execute(self, request: pb.ExecuteRequest, on_event: OnEvent) -> None:
        """One Execute, each event handed to ``on_event`` as it comes; raises :class:`Refused`. Cancelling the
        calling task cancels the execution."""
        ...


SourceFor = Callable[[ServerRequestContext[Any]], ToolSource]


def mcp_tool(tool: pb.Tool) -> types.Tool:
    """A daemon's tool as MCP lists it: name, description, and its params schema as the input schema."""
    try:
        schema: Any = json.loads(tool.params_schema_json) if tool.params_schema_json else None
    except json.JSONDecodeError:
        schema = None
    if not isinstance(schema, dict) or schema.get("type") != "object":
        # The daemon requires an object schema of every tool; an older one may send none. It validates the
        # params itself whatever the client was told.
        schema = {"type": "object"}
    return types.Tool(name=tool.name, description=tool.description or None, input_schema=schema)


def verdict_text(result: pb.Result) -> str:
    """``MEMORY_LIMIT: memory limit of 67108864 bytes reached (OOM kill)``, with the syscall or setup stage."""
    status = pb.Status.Name(result.status)
    text = f"{status}: {result.message or status.lower()}"
    if result.seccomp_syscall_name:
        text += f" (syscall {result.seccomp_syscall_name})"
    if result.setup_stage:
        text += f" (setup stage {result.setup_stage})"
    return text


def _text(text: str) -> types.TextContent:
    return types.TextContent(type="text", text=text)


def _decoded(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", errors="replace")


@dataclass
class Execution:
    """What one tools/call's Execute brought back: output, the Result, or the daemon's refusal."""

    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    output_bytes: int = 0  # stdout + stderr so far: the progress reported
    result: pb.Result | None = None
    refusal: str | None = None

    def add(self, event: pb.ExecuteEvent) -> bool:
        """Take one event; True when it was output (worth a progress notification)."""
        kind = event.WhichOneof("event")
        if kind == "output":
            (self.stdout if event.output.stream == pb.STDOUT else self.stderr).extend(event.output.data)
            self.output_bytes += len(event.output.data)
            return True
        if kind == "result":
            self.result = event.result
        return False

    @property
    def passes_result(self) -> bool:
        """A sandboxed MCP server served it: its stdout is that server's CallToolResult, as JSON."""
        return self.result is not None and bool(self.result.mcp_server)

    def outcome(self) -> str:
        if self.refusal is not None:
            return self.refusal
        return verdict_text(self.result) if self.result is not None else "no result"

    def tool_result(self) -> types.CallToolResult:
        if self.refusal is not None:
            return types.CallToolResult(content=[_text(self.refusal)], is_error=True)
        result = self.result
        if result is None:  # the stream ended without its Result: say so rather than pass a partial output as OK
            return types.CallToolResult(content=[_text("INTERNAL: sandboxd ended the call without a result")],
                                        is_error=True)
        ok = result.status == pb.OK and not (result.HasField("exit_code") and result.exit_code != 0)
        if self.passes_result and ok:
            try:
                return types.CallToolResult.model_validate_json(bytes(self.stdout))
            except ValidationError as error:
                return types.CallToolResult(content=[_text(f"INTERNAL: the MCP server's result is malformed: "
                                                           f"{error.errors()[0]['msg']}")], is_error=True)
        stdout = _decoded(self.stdout)
        if ok:
            return types.CallToolResult(content=[_text(stdout)])
        text = verdict_text(result)
        if self.stderr:
            text += "\n" + _decoded(self.stderr)
        content: list[types.ContentBlock] = [_text(text)]
        if stdout and not self.passes_result:  # what it printed before it failed may still help
            content.append(_text(stdout))
        return types.CallToolResult(content=content, is_error=True)


class Gateway:
    """The two MCP handlers; ``source_for`` gives each request its way to the daemon, as that request's caller.

    ``session_id`` names the MCP session for the labels when the transport has no id of its own (stdio)."""

    def __init__(self, source_for: SourceFor, *, session_id: Callable[[ServerRequestContext[Any]], str]) -> None:
        self._source_for = source_for
        self._session_id = session_id

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        try:
            tools = await self._source_for(ctx).list_tools()
        except Refused as error:  # no result can carry an error here: the client gets a protocol error
            log.warning("tools/list: %s", error.text)
            raise MCPError(code=types.INTERNAL_ERROR, message=f"sandboxd: {error.text}") from None
        return types.ListToolsResult(tools=[mcp_tool(tool) for tool in tools])

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        request_id = str(ctx.request_id)
        execution = Execution()
        request = pb.ExecuteRequest(
            tool=params.name, params_json=json.dumps(params.arguments or {}), request_id=request_id,
            labels={REQUEST_LABEL: request_id, SESSION_LABEL: self._session_id(ctx)},
        )

        async def on_event(event: pb.ExecuteEvent) -> None:
            if execution.add(event):
                await ctx.session.report_progress(execution.output_bytes)  # a no-op without a progress token

        try:
            await self._source_for(ctx).execute(request, on_event)
        except Refused as error:
            execution.refusal = error.text
        except anyio.get_cancelled_exc_class():
            log.info("tools/call %s %s: cancelled, and its execution with it", request_id, params.name)
            raise
        log.info("tools/call %s %s: %s", request_id, params.name, execution.outcome().partition("\n")[0])
        return execution.tool_result()


def build_server(source_for: SourceFor, *, session_id: Callable[[ServerRequestContext[Any]], str]) -> Server[Any]:
    gateway = Gateway(source_for, session_id=session_id)
    return Server("sandboxd", version=__version__, instructions=INSTRUCTIONS,
                  on_list_tools=gateway.list_tools, on_call_tool=gateway.call_tool)
