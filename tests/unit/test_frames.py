"""The framed socket's wire format: an event wrapped by hand is the FramedReply protobuf would write, and a
header over the limit is refused before anything is read."""

from __future__ import annotations

import pytest

from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2 as pb
from sandboxd.api.frames import FrameError, call_frame, event_frame, frame_length, status_frame


def unframe(frame: bytes) -> bytes:
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    return frame[4:]


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_383, 16_384, 2_097_152])  # each varint length edge
def test_an_event_wrapped_by_hand_is_the_reply_protobuf_writes(size: int) -> None:
    event = pb.ExecuteEvent(output=pb.Output(data=b"x" * size)) if size else pb.ExecuteEvent()
    payload = unframe(event_frame(event))
    assert payload == pb.FramedReply(event=event).SerializeToString()
    assert pb.FramedReply.FromString(payload).event == event


def test_a_status_and_a_call_round_trip() -> None:
    status = pb.FramedReply.FromString(unframe(status_frame(5, "no tool", [("sandboxd-reason", "UNKNOWN_TOOL")])))
    assert (status.status.code, status.status.details) == (5, "no tool")
    assert [(m.key, m.value) for m in status.status.metadata] == [("sandboxd-reason", "UNKNOWN_TOOL")]
    request = pb.ExecuteRequest(tool="echo", params_json='{"a":1}')
    call = pb.FramedCall.FromString(unframe(call_frame(request, [("authorization", "Bearer t")])))
    assert call.execute == request and [(m.key, m.value) for m in call.metadata] == [("authorization", "Bearer t")]


def test_a_header_over_the_limit_is_refused() -> None:
    assert frame_length((1024).to_bytes(4, "big"), max_bytes=1024) == 1024
    with pytest.raises(FrameError, match="1025 bytes is over the limit of 1024"):
        frame_length((1025).to_bytes(4, "big"), max_bytes=1024)
