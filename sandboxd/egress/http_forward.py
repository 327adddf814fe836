"""One plain-HTTP request forwarded, and its response relayed, each re-framed by h11 on both sides.

::

    client --(h11 server: parse)--> uplink --(h11 client: serialize)--> upstream
    client <--(h11 server: serialize)-- downlink <--(h11 client: parse)-- upstream

Re-framing rather than passing bytes through is what keeps one request per connection true: the upstream
gets exactly one request — origin-form target, ``Host`` from the decided target, hop-by-hop headers gone
(as Go's ``httputil.ReverseProxy`` strips them), ``Connection: close`` — and exactly its body; whatever a
client sends past it (a pipelined second request, perhaps for another virtual host behind the same address)
is dropped. The response comes back the same way, its hop-by-hop headers stripped, ``Connection: close``.
Trailers are dropped in both directions (``Trailer`` is hop-by-hop, and an HTTP/1.0 client cannot take them).
"""

from __future__ import annotations

import h11

from sandboxd.egress.http_head import HttpRequest, error_response
from sandboxd.egress.relay import FramingError

# RFC 9110 §7.6.1, and what Go's ReverseProxy strips: meaningful for one hop only.
HOP_BY_HOP = frozenset({b"connection", b"proxy-connection", b"keep-alive", b"proxy-authenticate",
                        b"proxy-authorization", b"te", b"trailer", b"upgrade"})
# Upstream response heads are read with this bound too (a response head is no bigger than a request head).
MIN_RESPONSE_HEAD_BYTES = 64 * 1024
_CUT_SHORT = "the upstream closed its connection before the end of its response"


def strip_hop_by_hop(message: h11.Request | h11.Response | h11.InformationalResponse, *,
                     also: frozenset[bytes] = frozenset()) -> list[tuple[bytes, bytes]]:
    """A message's end-to-end headers, in their original spelling: without the hop-by-hop ones, those its
    ``Connection`` header lists, and ``also``."""
    listed = {token.strip().lower()
              for name, value in message.headers if name == b"connection" for token in value.split(b",")}
    drop = HOP_BY_HOP | listed | also
    return [(name, value) for name, value in message.headers.raw_items() if name.lower() not in drop]


class HttpExchange:
    def __init__(self, request: HttpRequest, max_head_bytes: int) -> None:
        self._asked = request.asked
        self._client = request.connection  # h11 SERVER, past the request head
        self._upstream = h11.Connection(h11.CLIENT,
                                        max_incomplete_event_size=max(max_head_bytes, MIN_RESPONSE_HEAD_BYTES))
        headers = strip_hop_by_hop(request.request, also=frozenset({b"host"}))
        head = h11.Request(method=request.request.method, target=request.origin_target,
                           headers=[(b"Host", request.authority), *headers, (b"Connection", b"close")])
        self.first_upstream_bytes = self._upstream.send(head) or b""
        self.uplink = _Uplink(self)
        self.downlink = _Downlink(self)
        self.response_started = False

    def error_reply(self, status: int, reason: str) -> bytes:
        """Our own answer, as long as no part of the upstream's has gone out."""
        if self.response_started:
            return b""
        self.response_started = True
        verb = "timed out" if status == 504 else "failed"
        return error_response(status, f"sandboxd egress: the request to {self._asked} {verb} ({reason})")


class _Uplink:
    """The client's request body, re-framed for the upstream; done at its end."""

    def __init__(self, exchange: HttpExchange) -> None:
        self._x = exchange
        self.complete = False

    def feed(self, data: bytes) -> bytes:
        if data:  # b"" drains what h11 holds already (receive_data(b"") would mean EOF)
            self._x._client.receive_data(data)
        return self._drain()

    def feed_eof(self) -> bytes:
        if self.complete:
            return b""
        self._x._client.receive_data(b"")
        out = self._drain()
        if not self.complete:
            raise FramingError("the client closed its connection in the middle of its request", ended_by="client")
        return out

    def interrupted(self, ended_by: str) -> bytes:
        return b""

    def _drain(self) -> bytes:
        out = bytearray()
        while not self.complete:
            try:
                event = self._x._client.next_event()
                if isinstance(event, h11.Data):
                    out += self._x._upstream.send(h11.Data(data=bytes(event.data))) or b""
                elif isinstance(event, h11.EndOfMessage):
                    out += self._x._upstream.send(h11.EndOfMessage()) or b""
                    self.complete = True
                elif isinstance(event, h11.ConnectionClosed):
                    raise FramingError("the client closed its connection in the middle of its request",
                                       ended_by="client")
                else:  # NEED_DATA (or PAUSED)
                    break
            except h11.ProtocolError as exc:
                raise FramingError(f"malformed request body ({exc})", self._x.error_reply(400, str(exc))) from None
        return bytes(out)


class _Downlink:
    """The upstream's response, re-framed for the client; done at its end."""

    def __init__(self, exchange: HttpExchange) -> None:
        self._x = exchange
        self.complete = False

    def feed(self, data: bytes) -> bytes:
        if data:
            self._x._upstream.receive_data(data)
        return self._drain()

    def feed_eof(self) -> bytes:
        self._x._upstream.receive_data(b"")
        out = self._drain(at_eof=True)
        if not self.complete:
            raise FramingError(_CUT_SHORT, out + self._x.error_reply(502, _CUT_SHORT), ended_by="upstream")
        return out

    def interrupted(self, ended_by: str) -> bytes:
        if ended_by == "idle timeout":
            return self._x.error_reply(504, "no response within the idle timeout")
        if ended_by in ("client", "upstream"):
            return b""
        return self._x.error_reply(502, ended_by)

    def _drain(self, *, at_eof: bool = False) -> bytes:
        x = self._x
        out = bytearray()
        while not self.complete:
            try:
                event = x._upstream.next_event()
                if isinstance(event, h11.InformationalResponse):
                    out += x._client.send(h11.InformationalResponse(
                        status_code=event.status_code, headers=strip_hop_by_hop(event), reason=event.reason)) or b""
                elif isinstance(event, h11.Response):
                    x.response_started = True
                    out += x._client.send(h11.Response(
                        status_code=event.status_code, reason=event.reason,
                        headers=[*strip_hop_by_hop(event), (b"Connection", b"close")])) or b""
                elif isinstance(event, h11.Data):
                    out += x._client.send(h11.Data(data=bytes(event.data))) or b""
                elif isinstance(event, h11.EndOfMessage):
                    out += x._client.send(h11.EndOfMessage()) or b""
                    self.complete = True
                else:  # NEED_DATA, PAUSED, or ConnectionClosed (feed_eof says what a cut-short response means)
                    break
            except h11.ProtocolError as exc:
                if at_eof:  # h11 objects to the close itself: the response was cut short
                    raise FramingError(_CUT_SHORT, bytes(out) + x.error_reply(502, _CUT_SHORT),
                                       ended_by="upstream") from None
                why = f"the upstream's response is malformed ({exc})"
                raise FramingError(why, bytes(out) + x.error_reply(502, why)) from None
        return bytes(out)
