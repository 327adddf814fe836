"""One client connection, from accept to closed, as one task::

    handshake    the first byte picks the protocol: 05 SOCKS5, 04 SOCKS4 (refused), else HTTP/1.1;
                 the whole request within handshake_timeout_ms (else 408 / close)
    limits       the execution's byte budget, open connections and rate        (ConnectAttempt "denied")
    decide       lists, resolve once, judge the addresses (decide.decide)      ("denied" / "failed")
    connect      to the judged addresses in order (decide.connect)             ("failed", or "allowed")
    relay        the reply, then relay.Relay until either side ends            (ConnectionClosed)

Every way out of a step answers the client in its protocol and closes. Nothing raised here reaches the
event loop: a bug ends its own connection, logged.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

from sandboxd.egress import socks
from sandboxd.egress.decide import Address, Resolver, connect, decide
from sandboxd.egress.events import ConnectAttempt, ConnectionClosed, ExecutionRules
from sandboxd.egress.http_forward import HttpExchange
from sandboxd.egress.http_head import HttpRequest, error_response, read_http_request
from sandboxd.egress.inbox import ClientGone, Inbox
from sandboxd.egress.quota import ExecutionQuota
from sandboxd.egress.relay import Framer, Relay
from sandboxd.egress.settings import EgressSettings
from sandboxd.egress.target import HandshakeFailed, Kind, Refused

log = logging.getLogger("sandboxd.egress")

LINGER_MAX_S = 2.0  # after a refusal, how long the client gets to read it and close first
EARLY_BYTES_MAX = 64 * 1024  # what a client may send ahead of its answer before it is no longer read


@dataclass(frozen=True)
class Shared:
    """What every execution's connections share: the daemon's settings and the ways to addresses."""

    settings: EgressSettings
    pins: Mapping[str, tuple[Address, ...]]
    resolver: Resolver
    own_addresses: Callable[[], Collection[Address]]


class Execution(Protocol):
    """The execution a connection belongs to (:class:`~sandboxd.egress.proxy.ExecutionEgress`)."""

    @property
    def rules(self) -> ExecutionRules: ...

    @property
    def quota(self) -> ExecutionQuota: ...

    def next_number(self) -> int: ...

    def emit_connect(self, event: ConnectAttempt) -> None: ...

    def emit_closed(self, event: ConnectionClosed) -> None: ...

    def account(self, sent: bool, count: int) -> int: ...

    def handshake_over(self, connection: Connection) -> None: ...


async def read_request(inbox: Inbox, settings: EgressSettings) -> HttpRequest | socks.SocksRequest:
    """The client's request, whole, within the handshake timeout; :class:`HandshakeFailed` or
    :class:`ClientGone` otherwise."""
    is_http = False
    try:
        async with asyncio.timeout(settings.handshake_timeout_ms / 1000):
            first = await inbox.peek_byte()
            if first == socks.VERSION:
                return await socks.read_socks5(inbox)
            if first == 0x04:
                raise HandshakeFailed("SOCKS4 is not supported (SOCKS5 and HTTP are)", socks.SOCKS4_REJECTED)
            is_http = True
            return await read_http_request(inbox, settings.max_head_bytes)
    except TimeoutError:
        why = f"no complete request within {settings.handshake_timeout_ms} ms"
        raise HandshakeFailed(why, error_response(408, f"sandboxd egress: {why}") if is_http else b"") from None


class Connection:
    def __init__(self, sock: socket.socket, execution: Execution, shared: Shared) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._execution = execution
        self._shared = shared
        self._accepted_at = self._loop.time()
        self._inbox: Inbox | None = None
        self._relay: Relay | None = None
        self._handshaking = True
        self._running = False
        self.task: asyncio.Task[None] | None = None

    def end(self, ended_by: str, *, abort: bool) -> None:
        """From outside: end this connection now (``abort``: drop what is buffered) or once flushed."""
        relay = self._relay
        if relay is not None and relay.started:
            if abort:
                relay.abort(ended_by)
            else:
                relay.end(ended_by)
        elif abort and self.task is not None:
            if not self._running:
                self._sock.close()  # a task cancelled before its first step runs no cleanup
            self.task.cancel()  # still deciding: its cleanup closes the client and any upstream socket

    async def serve(self) -> None:
        self._running = True
        try:
            await self._serve()
        except asyncio.CancelledError:
            pass  # the execution ended it; the cleanup below has run
        except Exception:
            log.exception("egress: a connection failed")
        finally:
            if self._inbox is None:
                self._sock.close()  # never handed to a transport
            elif self._relay is None or not self._relay.started:
                self._inbox.abort()  # else the relay has closed it
            self._handshake_over()

    async def _serve(self) -> None:
        settings = self._shared.settings
        _transport, inbox = await self._loop.connect_accepted_socket(lambda: Inbox(EARLY_BYTES_MAX), self._sock)
        self._inbox = inbox
        try:
            request = await read_request(inbox, settings)
        except HandshakeFailed as exc:
            log.debug("egress: closing a client that named no target: %s", exc.why)
            await self._refuse(inbox, exc.reply)
            return
        except ClientGone:
            return
        await self._connect(request, inbox)

    async def _connect(self, request: HttpRequest | socks.SocksRequest, inbox: Inbox) -> None:
        settings = self._shared.settings
        execution = self._execution
        asked = request.asked
        number = execution.next_number()

        def attempt(outcome: str, address: str, reason: str) -> None:
            execution.emit_connect(ConnectAttempt(number, asked.protocol, asked.host, asked.port, address,
                                                  outcome, reason))

        holds_slot = False
        try:
            try:
                limited = execution.quota.open_connection()
                if limited is not None:
                    raise Refused(Kind.LIMITED, limited)
                holds_slot = True
                decision = await decide(asked, execution.rules, pins=self._shared.pins,
                                        resolver=self._shared.resolver,
                                        resolve_timeout_s=settings.resolve_timeout_ms / 1000,
                                        own_addresses=self._shared.own_addresses)
                sock, address = await connect(decision.addresses, asked.port, settings.connect_timeout_ms / 1000)
            except (Refused, asyncio.CancelledError):
                raise
            except Exception as exc:  # a bug, or a resolver that broke its contract: fail closed, readably
                log.exception("egress: deciding %s failed", asked)
                raise Refused(Kind.FAILED, f"internal error: {exc}") from exc
        except Refused as refused:
            if holds_slot:
                execution.quota.close_connection()
            attempt(refused.kind.outcome, refused.address, refused.reason)
            await self._refuse(inbox, request.refusal_reply(refused))
            return
        except asyncio.CancelledError:
            if holds_slot:
                execution.quota.close_connection()
            attempt("failed", "", "execution ended")
            raise

        attempt("allowed", str(address), decision.entry.text)
        ended_by = "execution ended"
        relay: Relay | None = None
        try:
            bound = sock.getsockname()[:2]
            inbox.write(request.established_reply(bound))
            first_bytes, uplink, downlink = self._opening(request)
            relay = self._relay = Relay(account=execution.account, idle_timeout_s=settings.idle_timeout_ms / 1000,
                                        uplink=uplink, downlink=downlink)
            upstream_side = relay.upstream
            await self._loop.connect_accepted_socket(lambda: upstream_side, sock)
            relay.start(inbox, first_bytes)
            self._handshake_over()
            await _wait_finished(relay)
            ended_by = relay.ended_by
        except BaseException as exc:  # cancelled (the execution ended) or a bug: close what is open, at once
            if not isinstance(exc, asyncio.CancelledError):
                ended_by = f"error: {exc}"
            if relay is not None:
                relay.abort(ended_by)
                if relay.started:
                    await _wait_finished(relay)
            raise
        finally:
            if relay is None or relay.upstream.transport is None:
                sock.close()  # else the transport owns it, and has closed it or is closing it
            execution.quota.close_connection()
            execution.emit_closed(ConnectionClosed(
                number, asked.protocol, asked.host, asked.port, str(address),
                bytes_sent=relay.bytes_sent if relay else 0, bytes_received=relay.bytes_received if relay else 0,
                duration_ms=round((self._loop.time() - self._accepted_at) * 1000),
                ended_by=(relay.ended_by if relay and relay.ended_by else ended_by)))

    def _opening(self, request: HttpRequest | socks.SocksRequest) -> tuple[bytes, Framer | None, Framer | None]:
        """What goes upstream first, and the framers (none for a tunnel)."""
        if isinstance(request, socks.SocksRequest):
            return b"", None, None  # what the client sent early is still in the inbox, in order
        if request.asked.protocol == "http-connect":
            return bytes(request.connection.trailing_data[0]), None, None  # read along with the head
        exchange = HttpExchange(request, self._shared.settings.max_head_bytes)
        return exchange.first_upstream_bytes, exchange.uplink, exchange.downlink

    async def _refuse(self, inbox: Inbox, reply: bytes) -> None:
        # Lingering still holds a handshake place: refused clients cannot pile up sockets faster than that.
        inbox.write(reply)
        await inbox.close_after_reply(min(LINGER_MAX_S, self._shared.settings.handshake_timeout_ms / 1000))

    def _handshake_over(self) -> None:
        if self._handshaking:
            self._handshaking = False
            self._execution.handshake_over(self)


async def _wait_finished(relay: Relay) -> None:
    """Until both sides are closed; a cancellation arriving meanwhile waits for that too, then goes on."""
    cancelled = False
    while not relay.finished.done():
        try:
            await asyncio.shield(relay.finished)
        except asyncio.CancelledError:
            cancelled = True
            relay.abort("execution ended")
    if cancelled:
        raise asyncio.CancelledError
