"""The daemon's own servicer as the MCP gateway's :class:`~sandboxd.api.mcp_gateway.ToolSource`: the HTTP
listener's tools/list and tools/call are ListTools and Execute, run in-process as the bearer of the request's
token — identified, decided, rate-limited and audited exactly as the same call over gRPC::

    tools/list ──▶ SandboxService.ListTools(request, CallContext(token, peer))
    tools/call ──▶ SandboxService.Execute(request, CallContext(token, peer)) ── events ──▶ on_event
                   context.abort(code, details, trailing metadata) raises CallAborted ──▶ Refused("REASON: …")

:class:`CallContext` is the part of ``grpc.aio.ServicerContext`` the servicer uses, and nothing more. An MCP
request that is cancelled (notifications/cancelled, its session ended) ends its Execute as grpc ends one whose
caller left: the task that runs the servicer's generator is cancelled once, and the generator's ``finally``
kills the execution and records it CANCELLED (by ``caller-left``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Sequence
from typing import cast

import anyio

from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2 as pb
from sandboxd.api.mcp_gateway import OnEvent, Refused, refusal_text
from sandboxd.server.call_context import CallAborted, CallContext
from sandboxd.server.service import SandboxService

__all__ = ["CallAborted", "CallContext", "InProcessSource", "refusal_of"]

log = logging.getLogger("sandboxd.mcp")


def refusal_of(aborted: CallAborted) -> Refused:
    """What an MCP client is told of a call the servicer refused."""
    return Refused(refusal_text(aborted.reason, aborted.details, temporary=aborted.temporary))


def peer_address(host: str | None, port: int | None) -> str:
    """An HTTP client's address as grpc spells a peer: ``ipv4:127.0.0.1:5678``, ``ipv6:[::1]:5678``."""
    if not host:
        return "tcp:unknown"  # ASGI servers on TCP always know it; one shared budget otherwise
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


class InProcessSource:
    """The servicer, called as the bearer of ``token`` from ``peer`` (see :class:`CallContext`)."""

    def __init__(self, service: SandboxService, token: str, peer: str) -> None:
        self._service = service
        self._token = token
        self._peer = peer

    def _context(self) -> CallContext:
        return CallContext(authorization=[f"Bearer {self._token}"], peer=self._peer)

    async def list_tools(self) -> Sequence[pb.Tool]:
        try:
            response = await self._service.ListTools(pb.ListToolsRequest(), self._context())
        except CallAborted as aborted:
            raise refusal_of(aborted) from None
        return list(response.tools)

    async def execute(self, request: pb.ExecuteRequest, on_event: OnEvent) -> None:
        # Execute is an async generator (typed as the servicer's AsyncIterator): closing it is what ends the call
        events = cast(AsyncGenerator[pb.ExecuteEvent, None], self._service.Execute(request, self._context()))
        relay = asyncio.ensure_future(_relay(events, on_event))
        try:
            await asyncio.shield(relay)
        except asyncio.CancelledError:
            if not relay.done():
                # This MCP request was cancelled. Its own cancellation is anyio's, delivered again at every
                # await until the request's scope ends: the servicer's cleanup (kill, outcome record) would be
                # cut short by it. So the relay task runs apart and is cancelled once, as grpc cancels a
                # servicer whose caller left; this waits, shielded, until the execution is ended and recorded.
                relay.cancel()
                with anyio.CancelScope(shield=True):
                    await asyncio.wait({relay})
            if not relay.cancelled() and relay.exception() is not None:
                log.info("MCP request %s, cancelled: its Execute ended with %s", request.request_id,
                         relay.exception())
            raise


async def _relay(events: AsyncGenerator[pb.ExecuteEvent, None], on_event: OnEvent) -> None:
    """Each event to ``on_event``; the generator closed however this ends (its ``finally`` is the
    servicer's: the slot released, an execution still running killed and recorded)."""
    try:
        async for event in events:
            await on_event(event)
    except CallAborted as aborted:
        raise refusal_of(aborted) from None
    finally:
        await events.aclose()
