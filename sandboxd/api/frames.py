"""The framed socket's wire format (``FramedCall`` / ``FramedReply`` in ``sandbox.proto``), both ends' half.

A frame is a 4-byte big-endian length, then that many bytes of one protobuf message. The caller sends a
``FramedCall`` (its metadata and an ``ExecuteRequest``); the daemon answers with ``FramedReply`` frames, the
call's ``ExecuteEvent`` s and then one ``FramedStatus``. An event is wrapped by hand, without a ``FramedReply``
to copy it into: the bytes of ``FramedReply{event}`` are field 1's tag, the event's length as a varint, then
the event's own bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2 as pb

__all__ = ["HEADER_BYTES", "FrameError", "call_frame", "event_frame", "frame_length", "status_frame"]

HEADER_BYTES = 4
_EVENT_TAG = b"\x0a"  # FramedReply.event: field 1, wire type 2 (length-delimited)


class FrameError(Exception):
    """A frame that breaks the format: too long, or cut short."""


def frame_length(header: bytes, *, max_bytes: int) -> int:
    """The length a frame's header announces, refused above ``max_bytes``."""
    length = int.from_bytes(header, "big")
    if length > max_bytes:
        raise FrameError(f"a frame of {length} bytes is over the limit of {max_bytes}")
    return length


def _framed(payload: bytes) -> bytes:
    return len(payload).to_bytes(HEADER_BYTES, "big") + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def event_frame(event: pb.ExecuteEvent) -> bytes:
    data = event.SerializeToString()
    return _framed(_EVENT_TAG + _varint(len(data)) + data)


def status_frame(code: int, details: str, metadata: Sequence[tuple[str, str]] = ()) -> bytes:
    status = pb.FramedStatus(code=code, details=details,
                             metadata=[pb.FramedMetadata(key=key, value=value) for key, value in metadata])
    return _framed(pb.FramedReply(status=status).SerializeToString())


def call_frame(request: pb.ExecuteRequest, metadata: Sequence[tuple[str, str]] = ()) -> bytes:
    call = pb.FramedCall(execute=request,
                         metadata=[pb.FramedMetadata(key=key, value=value) for key, value in metadata])
    return _framed(call.SerializeToString())
