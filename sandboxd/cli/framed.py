"""The framed socket's client: ``Execute`` without HTTP/2, for a caller on the daemon's host (see
:mod:`sandboxd.server.framed_socket` and :mod:`sandboxd.api.frames`).

A connection carries one call at a time and is kept for the next once its call ended with a status; a call
closed early (``break``, garbage collection) closes its connection, which is how the daemon learns that its
caller left and kills the execution. Connections are shared by the threads of one client.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Generator, Sequence
from typing import BinaryIO

import grpc
from google.protobuf.message import DecodeError

from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2 as pb
from sandboxd.api.frames import HEADER_BYTES, FrameError, call_frame, frame_length
from sandboxd.cli.errors import SandboxdError

__all__ = ["FRAMED_SOCKET_ENV", "FRAMED_UNREACHABLE", "FramedChannel"]

FRAMED_SOCKET_ENV = "SANDBOXD_FRAMED_SOCKET"  # sandboxctl's default --framed-socket
FRAMED_UNREACHABLE = "cannot connect to the framed socket"  # how an UNAVAILABLE of ours begins

MAX_REPLY_BYTES = 64 * 1024 * 1024  # far above any event the daemon sends (its output chunks are 64 KiB)
_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}
_CUT = "the daemon closed the connection in the middle of the call"


class _Connection:
    def __init__(self, path: str) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.socket.connect(path)
        except OSError:
            self.socket.close()
            raise
        self.reader: BinaryIO = self.socket.makefile("rb")

    def read_reply(self) -> pb.FramedReply:
        header = self.reader.read(HEADER_BYTES)
        if len(header) < HEADER_BYTES:
            raise FrameError(_CUT)
        length = frame_length(header, max_bytes=MAX_REPLY_BYTES)
        data = self.reader.read(length)
        if len(data) < length:
            raise FrameError(_CUT)
        return pb.FramedReply.FromString(data)

    def open(self) -> bool:
        """Whether the daemon still holds this idle connection: nothing to read, and no end of it."""
        try:
            return self.socket.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except BlockingIOError:
            return True
        except OSError:
            return False

    def close(self) -> None:
        self.reader.close()
        self.socket.close()


class FramedChannel:
    """Calls to the framed socket at ``path``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()

    def execute(self, request: pb.ExecuteRequest,
                metadata: Sequence[tuple[str, str]] = ()) -> Generator[pb.ExecuteEvent, None, None]:
        """The call's events as they arrive; its status, unless OK, raised as :class:`SandboxdError`."""
        connection = self._connect()
        ended = False
        try:
            try:
                connection.socket.sendall(call_frame(request, metadata))
                while True:
                    reply = connection.read_reply()
                    if reply.WhichOneof("reply") != "status":
                        yield reply.event
                        continue
                    ended = True
                    break
            except (OSError, FrameError, DecodeError) as error:
                raise SandboxdError(grpc.StatusCode.UNAVAILABLE, "",
                                    f"the framed socket {self.path}: {error}") from None
            status = reply.status
            if status.code != grpc.StatusCode.OK.value[0]:
                raise SandboxdError.from_status(_STATUS_CODES.get(status.code, grpc.StatusCode.UNKNOWN),
                                                status.details,
                                                [(entry.key, entry.value) for entry in status.metadata])
        finally:
            if ended:
                with self._lock:
                    self._idle.append(connection)
            else:
                connection.close()  # the daemon sees its caller leave: the execution is ended

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _connect(self) -> _Connection:
        while True:
            with self._lock:
                if not self._idle:
                    break
                connection = self._idle.pop()
            if connection.open():
                return connection
            connection.close()  # the daemon closed it between calls (it stopped, or restarted): a new one
        try:
            return _Connection(self.path)
        except OSError as error:
            raise SandboxdError(grpc.StatusCode.UNAVAILABLE, "",
                                f"{FRAMED_UNREACHABLE} {self.path}: {error}") from None
