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
from typing import Any, NoReturn, cast

import anyio
import grpc

from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2 as pb
from sandboxd.api.mcp_gateway import OnEvent, Refused, refusal_text
from sandboxd.api.status import TEMPORARY_METADATA_KEY, reason_from_metadata
from sandboxd.server.service import SandboxService

__all__ = ["CallAborted", "CallContext", "InProcessSource"]

log = logging.getLogger("sandboxd.mcp")

Metadata = tuple[tuple[str, str], ...]


class CallAborted(Exception):
    """What ``context.abort`` ends a call with: the status, its message and the trailing metadata (reason …)."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: Metadata) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata

    @property
    def reason(self) -> str:
        """The machine reason (AUTH_FAILED, RATE_LIMITED …), or the status code's name when none was sent."""
        return reason_from_metadata(self.trailing_metadata) or self.code.name

    @property
    def temporary(self) -> bool:
        return any(key == TEMPORARY_METADATA_KEY and value == "true" for key, value in self.trailing_metadata)

    def metadata_value(self, key: str) -> str | None:
        return next((value for name, value in self.trailing_metadata if name == key), None)

    def refusal(self) -> Refused:
        return Refused(refusal_text(self.reason, self.details, temporary=self.temporary))


class CallContext:
    """A ``grpc.aio.ServicerContext`` for a call that never crossed gRPC: its credentials are the
    ``authorization`` values of an HTTP request, its peer that request's TCP address (``ipv4:…`` / ``ipv6:…``,
    never ``unix:``: such a caller is not the socket's principal, and failed logins count per address)."""

    def __init__(self, *, authorization: Sequence[str], peer: str) -> None:
        self._metadata: Metadata = tuple(("authorization", value) for value in authorization)
        self._peer = peer

    def invocation_metadata(self) -> Metadata:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}  # no client certificate reaches the servicer through HTTP: a bearer token identifies

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> NoReturn:
        raise CallAborted(code, details, tuple((str(key), str(value)) for key, value in trailing_metadata or ()))


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
            raise aborted.refusal() from None
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
        raise aborted.refusal() from None
    finally:
        await events.aclose()
