"""The framed socket: ``Execute`` for callers on the same host, without HTTP/2 (``[daemon] framed_socket``).

gRPC's Python server and client cost a pooled ``Execute`` of ``/bin/true`` 2 to 3 ms of CPU and of latency
(``bench/request_floor.py``) — more than the sandbox's own start. Like containerd's ttrpc for its shims, this
door carries the same protobuf messages over a Unix socket, a length before each (``sandboxd.api.frames``),
and hands them to the same servicer through :class:`~sandboxd.server.call_context.CallContext`: identified
(peer ``unix:``, as on the gRPC socket, or a bearer token), decided, admitted and audited exactly as over gRPC.

One call at a time per connection::

    caller ── FramedCall ──▶ SandboxService.Execute(request, CallContext) ── FramedReply{event} … ──▶ caller
                             the end, or context.abort(code, …) ────────── FramedReply{status} ──▶ caller

A caller that closes the connection during a call — or sends anything before its status — has left: the
task that runs the servicer's generator is cancelled once, as grpc cancels one whose caller left, and the
generator's ``finally`` kills the execution and records it CANCELLED (``caller-left``). A frame over the size
limit or one that is not a ``FramedCall`` is refused with INVALID_ARGUMENT naming why, recorded like gRPC's
undecodable requests, and the connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import cast

import grpc
from google.protobuf.message import DecodeError

from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2 as pb
from sandboxd.api.frames import HEADER_BYTES, FrameError, event_frame, frame_length, status_frame
from sandboxd.api.handlers import Undecodable
from sandboxd.server.call_context import CallAborted, CallContext
from sandboxd.server.outbox import Outbox
from sandboxd.server.service import SandboxService
from sandboxd.server.unix_socket import bind_aside

__all__ = ["UNIX_PEER", "FramedListener"]

log = logging.getLogger("sandboxd.framed")

UNIX_PEER = "unix:"  # what grpc reports for a caller on a Unix socket: the authenticator's socket principal
_RPC = "Execute"
WRITE_BUFFER_BYTES = 1 << 20


class FramedListener:
    """Serves ``Execute`` on a Unix socket at ``path`` (made with ``mode`` and group ``gid``, renamed into
    place once it listens) until :meth:`stop`."""

    def __init__(self, service: SandboxService, path: Path, *, mode: int, gid: int, max_call_bytes: int) -> None:
        self._service = service
        self._path = path
        self._mode = mode
        self._gid = gid
        self._max_call_bytes = max_call_bytes
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            bound = bind_aside(self._path, "daemon.framed_socket", mode=self._mode, gid=self._gid,
                               bind=lambda where: listener.bind(str(where)))
            self._server = await asyncio.start_unix_server(self._serve, sock=listener)
        except BaseException:
            listener.close()
            raise
        os.rename(bound, self._path)
        log.info("framed socket on %s", self._path)

    async def stop(self) -> None:
        """Take no more connections, end those open (a call still running is its caller's leaving), remove
        the socket."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        # A few output chunks in flight before the relay waits for the caller (asyncio's default: 64 KiB, one)
        writer.transport.set_write_buffer_limits(high=WRITE_BUFFER_BYTES)
        try:
            while await self._one_call(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the caller went away between calls, or mid-frame: nothing was running for it
        finally:
            self._connections.discard(task)
            writer.close()

    async def _one_call(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve the next call; False: the connection is done (closed by the caller, or refused)."""
        header = await reader.read(HEADER_BYTES)
        if not header:
            return False  # closed between calls
        if len(header) < HEADER_BYTES:
            header += await reader.readexactly(HEADER_BYTES - len(header))
        try:
            length = frame_length(header, max_bytes=self._max_call_bytes)
        except FrameError as error:  # not read: the connection cannot be resynchronised
            await self._refuse(writer, str(error))
            return False
        data = await reader.readexactly(length)
        try:
            call = pb.FramedCall.FromString(data)
        except DecodeError as error:
            await self._refuse(writer, str(error) or "not a FramedCall")
            return False
        context = CallContext(authorization=[entry.value for entry in call.metadata if entry.key == "authorization"],
                              peer=UNIX_PEER)
        return await self._execute(call.execute, context, reader, writer)

    async def _refuse(self, writer: asyncio.StreamWriter, why: str) -> None:
        """A frame that is no call: refused as the socket's caller (no token could be read), recorded."""
        context = CallContext(authorization=(), peer=UNIX_PEER)
        undecodable = Undecodable(rpc=_RPC, message_type="FramedCall", error=why)
        try:
            await self._service.refuse_undecodable(undecodable, cast(grpc.aio.ServicerContext, context))
        except CallAborted as aborted:
            writer.write(_status(aborted))
            await writer.drain()

    async def _execute(self, request: pb.ExecuteRequest, context: CallContext, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> bool:
        events = cast(AsyncGenerator[pb.ExecuteEvent, None],
                      self._service.Execute(request, cast(grpc.aio.ServicerContext, context)))
        outbox = Outbox(writer)
        relay = asyncio.ensure_future(_relay(events, outbox))
        left = asyncio.ensure_future(reader.read(1))  # the caller sends nothing during a call, or has left
        try:
            await asyncio.wait((relay, left), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the daemon stops: end the call as its caller leaving would
            relay.cancel()
            left.cancel()
            await asyncio.gather(relay, left, return_exceptions=True)
            raise
        caller_left = not relay.done()  # it closed (or sent something) while the call ran
        gone = left.done()  # ... or as the call ended: no status to wait for, no next call either way
        left.cancel()
        if caller_left:
            relay.cancel()  # once: the generator's finally kills the execution and records it
        await asyncio.gather(relay, left, return_exceptions=True)
        if caller_left or gone:
            outbox.discard()
            return False
        error = relay.exception()
        if isinstance(error, ConnectionError):  # the relay's writes met the caller's leaving first
            outbox.discard()
            return False
        await outbox.put(_status(error))
        outbox.flush()  # with the Result, held for it
        await writer.drain()
        return True


async def _relay(events: AsyncGenerator[pb.ExecuteEvent, None], outbox: Outbox) -> None:
    try:
        async for event in events:
            # The Result waits for the status: the caller reads neither alone, and is woken once for both
            await outbox.put(event_frame(event), hold=event.WhichOneof("event") == "result")
    finally:
        await events.aclose()


def _status(error: BaseException | None) -> bytes:
    """The status frame that ends a call: OK, the servicer's abort, or INTERNAL (logged) for anything else."""
    if error is None:
        return status_frame(grpc.StatusCode.OK.value[0], "")
    if isinstance(error, CallAborted):
        return status_frame(error.code.value[0], error.details, error.trailing_metadata)
    log.error("a framed call failed", exc_info=error)
    return status_frame(grpc.StatusCode.INTERNAL.value[0], f"the daemon failed: {type(error).__name__}")
