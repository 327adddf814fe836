"""``sandboxctl mcp``: sandboxd's tools served over MCP on stdin/stdout, for MCP clients (desktop apps, agents)::

    MCP client ──stdio (the SDK's JSON-RPC)──▶ sandboxctl mcp ──gRPC, as its caller──▶ sandboxd

The mapping is :mod:`sandboxd.api.mcp_gateway`'s, shared with the daemon's streamable-HTTP listener; this
module is its stdio transport and its way to the daemon: the caller's own (``--socket``/``--address``,
``--token``, TLS). It writes nothing to stdout but protocol messages (logs go to stderr). One process is one MCP
session: its id (made at start) labels every call, so a sandboxed MCP server is kept for this client alone.

Each tools/call gets a client, so a channel, of its own: the client is synchronous, its Execute stream is read
in a worker thread, and a thread blocked waiting for the daemon can only be released by cancelling its call —
which is what closing that call's own channel does.
"""

from __future__ import annotations

import concurrent.futures
import logging
import sys
import uuid
from collections.abc import Callable, Sequence
from contextlib import closing
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
from anyio.streams.memory import MemoryObjectSendStream
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server

from sandboxd.api.mcp_gateway import OnEvent, Refused, build_server, refusal_text
from sandboxd.cli.client import SandboxClient, SandboxdError, pb

__all__ = ["StdioSource", "serve"]

log = logging.getLogger("sandboxctl.mcp")

_EVENTS_QUEUED = 16  # events read from the daemon, not yet relayed to the MCP client: the reader waits beyond

Connect = Callable[[], SandboxClient]


def _refused(error: SandboxdError) -> Refused:
    return Refused(refusal_text(error.reason or error.code.name, error.message, temporary=error.temporary))


class ExecuteCall:
    """One Execute on a client of its own, read in a worker thread and handed to the event loop event by event.

    :meth:`read` runs in the thread; :meth:`end` (event loop) closes the client's channel, which cancels the
    call if it is still running — the daemon then kills the execution and records it cancelled — and so
    releases a thread blocked waiting for the daemon.
    """

    def __init__(self, client: SandboxClient, request: dict[str, Any]) -> None:
        self._client = client
        self._request = request
        self._ended = False
        self.refusal: SandboxdError | None = None

    def read(self, send: MemoryObjectSendStream[pb.ExecuteEvent]) -> None:
        try:
            with closing(self._client.execute(**self._request)) as events:  # closing it cancels the call
                for event in events:
                    anyio.from_thread.run(send.send, event)
        except SandboxdError as error:
            self.refusal = error
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, concurrent.futures.CancelledError,
                ValueError):
            # The MCP side stopped listening (its request was cancelled), or the channel was closed under the
            # call (ValueError: grpc refuses to start one on a closed channel). Anything else is a bug.
            if not self._ended:
                raise

    def end(self) -> None:
        self._ended = True
        self._client.close()


class StdioSource:
    """The daemon as ``sandboxctl mcp``'s caller reaches it: ``client`` lists; each call gets a client of its own
    from ``connect``."""

    def __init__(self, client: SandboxClient, connect: Connect) -> None:
        self._client = client
        self._connect = connect

    async def list_tools(self) -> Sequence[pb.Tool]:
        try:
            return await anyio.to_thread.run_sync(self._client.list_tools, abandon_on_cancel=True)
        except SandboxdError as error:
            raise _refused(error) from None

    async def execute(self, request: pb.ExecuteRequest, on_event: OnEvent) -> None:
        try:
            client = self._connect()
        except SandboxdError as error:  # e.g. a TLS file gone since start
            raise _refused(error) from None
        call = ExecuteCall(client, {"tool": request.tool, "params": request.params_json,
                                    "request_id": request.request_id, "labels": dict(request.labels)})
        send, receive = anyio.create_memory_object_stream[pb.ExecuteEvent](_EVENTS_QUEUED)

        async def read_in_thread() -> None:
            with send:  # its end ends the relay below
                await anyio.to_thread.run_sync(call.read, send)

        async with anyio.create_task_group() as task_group:
            task_group.start_soon(read_in_thread)
            try:
                with receive:
                    async for event in receive:
                        await on_event(event)
            finally:
                # Done, or cancelled by the client (notifications/cancelled), or failed: either way the call
                # ends here, and the task group then waits for the reading thread, which this releases.
                call.end()
        if call.refusal is not None:
            raise _refused(call.refusal)


def build_stdio_server(client: SandboxClient, connect: Connect) -> Server[Any]:
    source = StdioSource(client, connect)
    session_id = uuid.uuid4().hex  # this process is one MCP session

    def source_for(ctx: ServerRequestContext[Any]) -> StdioSource:
        return source

    return build_server(source_for, session_id=lambda ctx: session_id)


async def _serve_stdio(server: Server[Any]) -> None:
    # stdio_server points fd 1 at stderr while it serves: stray output cannot corrupt the protocol stream
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def serve(client: SandboxClient, connect: Connect) -> int:
    """Serve MCP on stdin/stdout until the client closes stdin; ``connect`` makes a client like ``client``."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="sandboxctl mcp: %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    logging.getLogger("sandboxd.mcp").setLevel(logging.INFO)
    anyio.run(_serve_stdio, build_stdio_server(client, connect))
    return 0
