"""A client connection before its target is decided: what it sent, buffered up to a bound, for the handshake
coroutine to read, and a reply written back.

The buffer stops the socket (``pause_reading``) past ``limit_bytes`` and lets it go again once read, so a
client that keeps sending while its request is being decided (a TLS ClientHello right behind its CONNECT)
costs at most that much memory. Once a tunnel takes over, :meth:`take_buffered` hands it what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast


class ClientGone(Exception):
    """The client closed or reset its connection before it finished saying what it wanted."""


class Inbox(asyncio.Protocol):
    def __init__(self, limit_bytes: int) -> None:
        self._limit_bytes = limit_bytes
        self._buffer = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self.transport: asyncio.Transport | None = None
        self.received_bytes = 0
        self.eof = False  # the client sent FIN (it may still read)
        self.lost = False  # the connection is closed

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self.received_bytes += len(data)
        if len(self._buffer) > self._limit_bytes and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return True  # half-closed: the reply still has to go out

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = self.eof = True
        self._wake()

    # for the handshake

    async def read(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` of what is buffered, waiting for at least one; ``b""`` once the client has sent
        EOF and everything before it is read."""
        while not self._buffer and not self.eof:
            await self._wait()
        data = bytes(self._buffer[:max_bytes])
        del self._buffer[:max_bytes]
        self._maybe_resume()
        return data

    async def read_exactly(self, count: int) -> bytes:
        """``count`` bytes; :class:`ClientGone` if the client ends first."""
        while len(self._buffer) < count:
            if self.eof:
                raise ClientGone(f"the client ended its connection after {self.received_bytes} bytes")
            await self._wait()
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        self._maybe_resume()
        return data

    async def peek_byte(self) -> int:
        while not self._buffer:
            if self.eof:
                raise ClientGone("the client ended its connection without sending anything")
            await self._wait()
        return self._buffer[0]

    def take_buffered(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        self._maybe_resume()
        return data

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def close_after_reply(self, linger_s: float) -> None:
        """Close once the reply is out. Sent FIN first and waits up to ``linger_s`` for the client's, reading
        and dropping what it still sends: closing with unread bytes would make the kernel answer RST, and an
        RST can destroy the reply before the client has read it."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._limit_bytes = 0  # no more reading for anyone: what comes is dropped below
        with contextlib.suppress(OSError):
            if transport.can_write_eof():
                transport.write_eof()
        try:
            async with asyncio.timeout(linger_s):
                while not self.eof:
                    self._buffer.clear()
                    self._maybe_resume(force=True)
                    await self._wait()
        except TimeoutError:
            pass
        finally:
            if transport.get_write_buffer_size():
                transport.abort()  # a client that reads nothing does not get to hold the socket
            else:
                transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # internals

    def _maybe_resume(self, force: bool = False) -> None:
        if self._paused and (force or len(self._buffer) <= self._limit_bytes) and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
