"""``sandboxctl mcp``: sandboxd's tools served over MCP on stdin/stdout, for MCP clients (desktop apps, agents)::

    MCP client ──stdio (the SDK's JSON-RPC)──▶ sandboxctl mcp ──gRPC, as its caller──▶ sandboxd

The MCP SDK owns the protocol: framing, the handshake, progress tokens and cancellation. This module maps:

    tools/list                 ListTools — what this caller may run; inputSchema = the tool's params schema
    tools/call                 one Execute, with request_id and the label mcp_request_id = the MCP request's id
                               (so the audit records carry it). OK: the handler's stdout as text. Any other
                               verdict, or a refusal by the daemon, is a result with isError whose text names
                               it (VERDICT: message, then the handler's stderr) — not a protocol error
    its progress token         one notifications/progress per output chunk: bytes of output so far
    notifications/cancelled    the Execute call is cancelled, and the daemon kills the execution

The daemon decides (grants, limits, rate) and records (audit) exactly as for any call of the same caller
(``--socket``/``--address``, ``--token``, TLS); the gateway adds no policy of its own and writes nothing to
stdout but protocol messages (logs go to stderr). Each tools/call gets a client, so a channel, of its own: the
client is synchronous, its Execute stream is read in a worker thread, and a thread blocked waiting for the
daemon can only be released by cancelling its call — which is what closing that call's own channel does.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import sys
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
from anyio.streams.memory import MemoryObjectSendStream
from mcp import types
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError

from sandboxd import __version__
from sandboxd.cli.client import SandboxClient, SandboxdError, pb

__all__ = ["LABEL", "build_server", "mcp_tool", "serve"]

log = logging.getLogger("sandboxctl.mcp")

LABEL = "mcp_request_id"  # the execution's label (and its request_id): the id of the MCP request that ran it
_EVENTS_QUEUED = 16  # events read from the daemon, not yet relayed to the MCP client: the reader waits beyond
_INSTRUCTIONS = ("Each tool runs in a sandbox of its own, under the limits its sandboxd sets (memory, CPU and wall "
                 "time, output). A result with isError names the verdict (TIMEOUT, MEMORY_LIMIT, NONZERO_EXIT …) "
                 "or the refusal (INVALID_PARAMS, TOOL_NOT_GRANTED, RATE_LIMITED …) and carries the tool's stderr.")

Connect = Callable[[], SandboxClient]


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


def refusal_text(error: SandboxdError) -> str:
    """``INVALID_PARAMS: $.code: 42 is not of type 'string'`` — the machine reason first, as a verdict is."""
    text = f"{error.reason or error.code.name}: {error.message}"
    return f"{text} (temporary: the same call may succeed later)" if error.temporary else text


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
    refusal: SandboxdError | None = None

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

    def tool_result(self) -> types.CallToolResult:
        if self.refusal is not None:
            return types.CallToolResult(content=[_text(refusal_text(self.refusal))], is_error=True)
        result = self.result
        if result is None:  # the stream ended without its Result: say so rather than pass a partial output as OK
            return types.CallToolResult(content=[_text("INTERNAL: sandboxd ended the call without a result")],
                                        is_error=True)
        stdout = _decoded(self.stdout)
        if result.status == pb.OK and not (result.HasField("exit_code") and result.exit_code != 0):
            return types.CallToolResult(content=[_text(stdout)])
        text = verdict_text(result)
        if self.stderr:
            text += "\n" + _decoded(self.stderr)
        content: list[types.ContentBlock] = [_text(text)]
        if stdout:  # what it printed before it failed may still help
            content.append(_text(stdout))
        return types.CallToolResult(content=content, is_error=True)


class ExecuteCall:
    """One Execute on a client of its own, read in a worker thread and handed to the event loop event by event.

    :meth:`read` runs in the thread; :meth:`end` (event loop) closes the client's channel, which cancels the
    call if it is still running — the daemon then kills the execution and records it cancelled — and so
    releases a thread blocked waiting for the daemon.
    """

    def __init__(self, client: SandboxClient, request: dict[str, Any], execution: Execution) -> None:
        self._client = client
        self._request = request
        self._execution = execution
        self._ended = False

    def read(self, send: MemoryObjectSendStream[pb.ExecuteEvent]) -> None:
        try:
            with closing(self._client.execute(**self._request)) as events:  # closing it cancels the call
                for event in events:
                    anyio.from_thread.run(send.send, event)
        except SandboxdError as error:
            self._execution.refusal = error
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, concurrent.futures.CancelledError,
                ValueError):
            # The MCP side stopped listening (its request was cancelled), or the channel was closed under the
            # call (ValueError: grpc refuses to start one on a closed channel). Anything else is a bug.
            if not self._ended:
                raise

    def end(self) -> None:
        self._ended = True
        self._client.close()


class Gateway:
    """The two MCP handlers: ``client`` answers tools/list; each tools/call gets its own client from ``connect``."""

    def __init__(self, client: SandboxClient, connect: Connect) -> None:
        self._client = client
        self._connect = connect

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        try:
            tools = await anyio.to_thread.run_sync(self._client.list_tools, abandon_on_cancel=True)
        except SandboxdError as error:  # no result can carry an error here: the client gets a protocol error
            log.warning("tools/list: %s", error)
            raise MCPError(code=types.INTERNAL_ERROR, message=f"sandboxd: {refusal_text(error)}") from None
        return types.ListToolsResult(tools=[mcp_tool(tool) for tool in tools])

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        request_id = str(ctx.request_id)
        execution = Execution()
        try:
            client = self._connect()
        except SandboxdError as error:  # e.g. a TLS file gone since start
            execution.refusal = error
            return execution.tool_result()
        call = ExecuteCall(client, {"tool": params.name, "params": params.arguments or {}, "request_id": request_id,
                                    "labels": {LABEL: request_id}}, execution)
        send, receive = anyio.create_memory_object_stream[pb.ExecuteEvent](_EVENTS_QUEUED)

        async def read_in_thread() -> None:
            with send:  # its end ends the relay below
                await anyio.to_thread.run_sync(call.read, send)

        try:
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(read_in_thread)
                try:
                    with receive:
                        async for event in receive:
                            if execution.add(event):
                                await ctx.session.report_progress(execution.output_bytes)  # no-op without a token
                finally:
                    # Done, or cancelled by the client (notifications/cancelled), or failed: either way the call
                    # ends here, and the task group then waits for the reading thread, which this releases.
                    call.end()
        except anyio.get_cancelled_exc_class():
            log.info("tools/call %s %s: cancelled, and its execution with it", request_id, params.name)
            raise
        outcome = refusal_text(execution.refusal) if execution.refusal is not None else (
            verdict_text(execution.result) if execution.result is not None else "no result")
        log.info("tools/call %s %s: %s", request_id, params.name, outcome.partition("\n")[0])
        return execution.tool_result()


def build_server(client: SandboxClient, connect: Connect) -> Server[Any]:
    gateway = Gateway(client, connect)
    return Server("sandboxd", version=__version__, instructions=_INSTRUCTIONS,
                  on_list_tools=gateway.list_tools, on_call_tool=gateway.call_tool)


async def _serve_stdio(server: Server[Any]) -> None:
    # stdio_server points fd 1 at stderr while it serves: stray output cannot corrupt the protocol stream
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def serve(client: SandboxClient, connect: Connect) -> int:
    """Serve MCP on stdin/stdout until the client closes stdin; ``connect`` makes a client like ``client``."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="sandboxctl mcp: %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    anyio.run(_serve_stdio, build_server(client, connect))
    return 0
