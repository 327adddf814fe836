"""Moving bytes between a decided client and its upstream: one asyncio Protocol per side, no coroutine per chunk.

::

    client --data--> [uplink framer] ---> upstream          counted as sent
    client <--- [downlink framer] <--data-- upstream        counted as received

A tunnel has no framers: bytes pass as they are. A forwarded HTTP request has two (see
:mod:`sandboxd.egress.http_forward`) that re-frame the request and its response.

Bounds, per connection, as Envoy and HAProxy keep them:

* flow control: a side stops being read while the other's write buffer is above ``HIGH_WATER_BYTES`` and
  is read again below ``LOW_WATER_BYTES``, so a fast sender never outruns a slow receiver by more than
  the high-water mark plus one read (256 KiB);
* idle: no byte either way for ``idle_timeout_s`` ends the connection;
* bytes: every chunk is granted by the execution's budget first; what the budget does not cover is not
  forwarded, and the connection ends ("byte limit").

Ending: an EOF is passed on (half-close) and the relay ends once both directions are done; an error, a
reset or a close on either side ends both. Ending closes both transports, letting what is buffered flush
for at most the idle timeout, then aborts. :attr:`Relay.finished` resolves when both sides are closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol, cast

from sandboxd.egress.inbox import Inbox

log = logging.getLogger("sandboxd.egress")

HIGH_WATER_BYTES = 256 * 1024
LOW_WATER_BYTES = 64 * 1024


class FramingError(Exception):
    """A framer cannot go on: ``why`` ends the relay ("error: ..."), ``reply`` (maybe empty) goes to the client."""

    def __init__(self, why: str, reply: bytes = b"", *, ended_by: str | None = None) -> None:
        super().__init__(why)
        self.why = why
        self.reply = reply
        self.ended_by = ended_by or f"error: {why}"


class Framer(Protocol):
    """Turns what one side sends into what the other gets; raises :class:`FramingError`."""

    @property
    def complete(self) -> bool:
        """The message is through: what the side sends next is dropped."""
        ...

    def feed(self, data: bytes) -> bytes:
        """What to pass on for ``data`` (``b""``: just what the framer already holds)."""
        ...

    def feed_eof(self) -> bytes: ...

    def interrupted(self, ended_by: str) -> bytes:
        """The relay ends early for ``ended_by``: what to tell the client, if anything still can be."""
        ...


# (sent, count) -> how many of count bytes the execution's budget lets through; sent = client to upstream.
Account = Callable[[bool, int], int]


class _Side(asyncio.Protocol):
    def __init__(self, relay: Relay, name: str) -> None:
        self.relay = relay
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.eof = False
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if not self.relay.started:
            self.transport.pause_reading()  # nothing moves before the relay has both ends

    def data_received(self, data: bytes) -> None:
        self.relay._guarded(self.relay._received, self, data)

    def eof_received(self) -> bool:
        self.relay._guarded(self.relay._eof, self)
        return True  # keep the other direction open (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay._lost(self, exc)

    def pause_writing(self) -> None:
        self.relay._other(self).pause()

    def resume_writing(self) -> None:
        self.relay._other(self).resume()

    def pause(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and self.relay.started and not self.relay.ended_by:
            self.transport.resume_reading()


class Relay:
    def __init__(self, *, account: Account, idle_timeout_s: float, uplink: Framer | None = None,
                 downlink: Framer | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._account = account
        self._idle_timeout_s = idle_timeout_s
        self._uplink = uplink
        self._downlink = downlink
        self.client = _Side(self, "client")
        self.upstream = _Side(self, "upstream")
        self.started = False
        self.ended_by = ""
        self.bytes_sent = 0
        self.bytes_received = 0
        self.finished: asyncio.Future[None] = self._loop.create_future()
        self._first_eof = ""
        self._last_activity = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None

    def start(self, inbox: Inbox, first_upstream_bytes: bytes) -> None:
        """Take the client's connection over from ``inbox`` (the upstream's is already :attr:`upstream`):
        send ``first_upstream_bytes``, then whatever the client sent meanwhile, then let both sides read."""
        client = inbox.transport
        upstream = self.upstream.transport
        if client is None or upstream is None:
            raise RuntimeError("the relay starts with both connections made")
        client.set_protocol(self.client)
        self.client.transport = client
        for transport in (client, upstream):
            transport.set_write_buffer_limits(high=HIGH_WATER_BYTES, low=LOW_WATER_BYTES)
        self.started = True
        self._arm_idle(self._idle_timeout_s)
        self.client.lost = inbox.lost
        if self.upstream.lost or self.client.lost:
            self.end("upstream" if self.upstream.lost else "client")
            self._check_finished()
            return
        self._guarded(self._pass, first_upstream_bytes, self.upstream, True)
        early = inbox.take_buffered()
        if early or self._uplink is not None:  # a framer may hold part of the body already, read with the head
            self._guarded(self._received, self.client, early)
        if inbox.eof:
            self._guarded(self._eof, self.client)
        if not self.ended_by:
            upstream.resume_reading()
            if upstream.get_write_buffer_size() <= HIGH_WATER_BYTES:
                client.resume_reading()  # the inbox may have paused it

    def end(self, ended_by: str) -> None:
        """Close both sides (what is buffered still goes out, for at most the idle timeout)."""
        if self.ended_by:
            return
        self.ended_by = ended_by
        if self._downlink is not None and self.client.transport is not None and not self.client.lost:
            try:
                reply = self._downlink.interrupted(ended_by)
            except Exception:  # a framer's courtesy reply is not worth a crash
                log.exception("egress: the downlink framer failed while the connection ended")
                reply = b""
            if reply:
                self.client.transport.write(reply)
        for side in (self.client, self.upstream):
            if side.transport is not None and not side.transport.is_closing():
                side.transport.close()
        self._arm_idle(self._idle_timeout_s)  # now bounds the flush: then abort

    def abort(self, ended_by: str) -> None:
        """Close both sides at once, dropping what is buffered."""
        if not self.ended_by:
            self.ended_by = ended_by
        for side in (self.client, self.upstream):
            if side.transport is not None:
                side.transport.abort()

    # the two directions

    def _received(self, side: _Side, data: bytes) -> None:
        if self.ended_by:
            return
        framer = self._uplink if side is self.client else self._downlink
        if framer is not None:
            if framer.complete:
                return  # past the end of the message: dropped, and not activity
            try:
                data = framer.feed(data)
            except FramingError as exc:
                self._framing_failed(exc)
                return
        self._last_activity = self._loop.time()
        self._pass(data, self._other(side), side is self.client)
        if self._downlink is not None and self._downlink.complete:
            self.end("upstream")  # the response is through: one request per connection

    def _eof(self, side: _Side) -> None:
        side.eof = True
        self._first_eof = self._first_eof or side.name
        if self.ended_by:
            return
        other = self._other(side)
        framer = self._uplink if side is self.client else self._downlink
        if framer is None:
            if other.transport is not None and other.transport.can_write_eof() and not other.transport.is_closing():
                other.transport.write_eof()
            if self.client.eof and self.upstream.eof:
                self.end(self._first_eof)
            return
        try:
            data = framer.feed_eof()
        except FramingError as exc:
            self._framing_failed(exc)
            return
        self._pass(data, other, side is self.client)
        if self._downlink is not None and (self._downlink.complete or side is self.upstream):
            self.end("upstream")

    def _pass(self, data: bytes, to: _Side, sent: bool) -> None:
        if not data or to.transport is None or self.ended_by:
            return
        granted = self._account(sent, len(data))
        if granted:
            to.transport.write(data if granted == len(data) else data[:granted])
            if sent:
                self.bytes_sent += granted
            else:
                self.bytes_received += granted
        if granted < len(data):
            self.end("byte limit")

    def _framing_failed(self, exc: FramingError) -> None:
        if exc.reply and self.client.transport is not None and not self.client.lost:
            self.client.transport.write(exc.reply)
        self._downlink = None  # its reply, if any, is written
        self.end(exc.ended_by)

    def _other(self, side: _Side) -> _Side:
        return self.upstream if side is self.client else self.client

    # ending

    def _lost(self, side: _Side, exc: Exception | None) -> None:
        side.lost = True
        if not self.started:
            return
        if not self.ended_by:
            self.end(side.name if exc is None else f"error: {side.name}: {_describe(exc)}")
        self._check_finished()

    def _check_finished(self) -> None:
        if self.client.lost and self.upstream.lost and not self.finished.done():
            if self._timer is not None:
                self._timer.cancel()
            self.finished.set_result(None)

    def _arm_idle(self, delay_s: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(delay_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.ended_by:  # the flush took too long: drop what is left
            self.abort(self.ended_by)
            return
        # One timer per connection, re-armed lazily: a busy tunnel does not reschedule it for every chunk.
        due = self._last_activity + self._idle_timeout_s
        if self._loop.time() >= due:
            self.end("idle timeout")
        else:
            self._arm_idle(due - self._loop.time())

    def _guarded(self, method: Callable[..., None], *args: object) -> None:
        """One connection's bug ends that connection, never the event loop's callback."""
        try:
            method(*args)
        except Exception as exc:
            log.exception("egress: relaying failed")
            self.abort(f"error: {_describe(exc)}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
