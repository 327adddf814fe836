"""The HTTP side of the proxy's one port: read one request head with h11 and say where it wants to go.

Three request forms are understood (RFC 9112 §3.2)::

    CONNECT api.example.com:443 HTTP/1.1         authority-form: a tunnel ("http-connect")
    GET http://api.example.com/path HTTP/1.1     absolute-form: one request forwarded ("http")
    GET /path HTTP/1.1 + Host: api.example.com   origin-form, from a client that does not know it is proxied:
                                                 decided on its Host header, port 80 unless it names one

An ``https://`` URI in a plain request is refused (400): the client has to tunnel it with CONNECT. The
target's host and port are parsed here, once, and the forwarded request carries exactly those (its ``Host``
is rebuilt from them), so the upstream cannot read a different host than the one decided on.

Every answer the proxy makes itself (refusals, timeouts) is :func:`error_response`: plain text, one line
that names the target and the reason, and ``Connection: close``.
"""

from __future__ import annotations

import http
from dataclasses import dataclass

import h11

from sandboxd.egress.inbox import Inbox
from sandboxd.egress.target import Asked, HandshakeFailed, Refused, format_target

CONNECT_ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"


# How much of a refusal's text its status line carries: a CONNECT client shows only that line (Python's
# "Tunnel connection failed: 403 …", curl -v), never the body.
PHRASE_TEXT_CHARS = 160


def error_response(status: int, text: str, *, in_status_line: bool = False) -> bytes:
    """A complete response the proxy answers itself: ``text`` as a one-line plain-text body (and, bounded, in
    the reason phrase too when ``in_status_line``)."""
    line = text.encode("ascii", "backslashreplace").replace(b"\r", b" ").replace(b"\n", b" ")
    body = line + b"\n"
    phrase = http.HTTPStatus(status).phrase
    if in_status_line:
        short = line.decode("ascii")
        phrase += f" ({short[:PHRASE_TEXT_CHARS]}{'...' if len(short) > PHRASE_TEXT_CHARS else ''})"
    head = (f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n")
    return head.encode("ascii") + body


def bad_request(why: str, status: int = 400) -> HandshakeFailed:
    return HandshakeFailed(why, error_response(status, f"sandboxd egress: {why}"))


@dataclass(frozen=True)
class HttpRequest:
    asked: Asked
    connection: h11.Connection  # the client's side, just past the request head
    request: h11.Request
    origin_target: bytes  # the path and query to forward ("" for CONNECT)
    authority: bytes  # the forwarded request's Host: the decided host, and the port if the client named one

    def refusal_reply(self, refused: Refused) -> bytes:
        return error_response(refused.kind.http_status, refused.message(self.asked), in_status_line=True)

    def established_reply(self, bound: tuple[str, int]) -> bytes:
        # For a forwarded request the upstream's response is the answer.
        return CONNECT_ESTABLISHED if self.asked.protocol == "http-connect" else b""


async def read_http_request(inbox: Inbox, max_head_bytes: int) -> HttpRequest:
    """Read request heads until one is whole; :class:`HandshakeFailed` (with a 4xx answer) otherwise."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head_bytes)
    # h11 bounds only an *incomplete* head: one that arrives whole in a single read is taken at any size.
    # So it is fed at most one byte past the bound; the rest waits in the inbox (a body, early tunnel bytes).
    fed_bytes = 0
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                raise bad_request(f"the request head is larger than {max_head_bytes} bytes", 431) from None
            raise bad_request(f"a malformed HTTP request ({exc})", exc.error_status_hint) from None
        if event is h11.NEED_DATA:
            if fed_bytes > max_head_bytes:  # h11 raises before this; kept so the bound never rests on it alone
                raise bad_request(f"the request head is larger than {max_head_bytes} bytes", 431)
            data = await inbox.read(max_head_bytes + 1 - fed_bytes)
            fed_bytes += len(data)
            connection.receive_data(data)  # b"" at EOF: h11 then says closed or malformed
        elif isinstance(event, h11.Request):
            return _interpret(connection, event)
        else:  # ConnectionClosed: the client left before finishing its head
            raise HandshakeFailed("the client ended its connection in the middle of its request head")


def _interpret(connection: h11.Connection, request: h11.Request) -> HttpRequest:
    try:
        target = request.target.decode("ascii")
    except UnicodeDecodeError:
        raise bad_request("the request target is not ASCII") from None
    hosts = [value for name, value in request.headers if name == b"host"]
    if len(hosts) > 1:
        raise bad_request("more than one Host header")
    if request.method == b"CONNECT":
        if "/" in target or "@" in target:
            raise bad_request(f"CONNECT takes host:port, not {target[:100]!r}")
        asked, _ = _split_authority("http-connect", target, default_port=None)
        return HttpRequest(asked, connection, request, b"", b"")
    if target.startswith("/"):  # origin-form: a client that does not know it talks to a proxy
        if not hosts:
            raise bad_request("an origin-form request without a Host header: no host to connect to")
        host_text = hosts[0].decode("ascii", "replace")
        if "@" in host_text:
            raise bad_request(f"Host {host_text[:100]!r} is not host[:port]")
        asked, explicit_port = _split_authority("http", host_text, default_port=80)
        return HttpRequest(asked, connection, request, target.encode(), _authority(asked, explicit_port))
    scheme, separator, rest = target.partition("://")
    if not separator:
        raise bad_request(f"request target {target[:100]!r} is neither a URI nor a path")
    if scheme.lower() == "https":
        raise bad_request("an https:// URI cannot be forwarded as plain HTTP: tunnel it with CONNECT "
                          "(HTTPS_PROXY does)")
    if scheme.lower() != "http":
        raise bad_request(f"scheme {scheme[:20]!r} is not supported (http://, or CONNECT for anything else)")
    # RFC 3986: the authority runs to the first "/", "?" or "#"; userinfo (before the last "@") is dropped.
    end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    authority_text = rest[:end].rpartition("@")[2]
    origin = rest[end:].partition("#")[0]
    if not origin.startswith("/"):
        origin = "/" + origin
    asked, explicit_port = _split_authority("http", authority_text, default_port=80)
    return HttpRequest(asked, connection, request, origin.encode(), _authority(asked, explicit_port))


def _split_authority(protocol: str, text: str, *, default_port: int | None) -> tuple[Asked, bool]:
    """``host[:port]`` or ``[v6]:port`` → the target, and whether the port was written."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise bad_request(f"{text[:100]!r} is not [address]:port")
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1:
        raise bad_request(f"{text[:100]!r}: an IPv6 address needs brackets, as in [::1]:443")
    else:
        host, colon, port_text_or_empty = text.partition(":")
        port_text = port_text_or_empty if colon else None
    if port_text is None:
        if default_port is None:
            raise bad_request(f"{text[:100]!r} names no port (CONNECT takes host:port)")
        port = default_port
    elif port_text.isascii() and port_text.isdigit() and len(port_text) <= 5:
        port = int(port_text)
    else:
        raise bad_request(f"{text[:100]!r}: port {port_text[:10]!r} is not a number")
    try:
        return Asked.parse(protocol, host, port), port_text is not None
    except ValueError as exc:
        raise bad_request(f"{text[:100]!r} is not a target: {exc}") from None


def _authority(asked: Asked, explicit_port: bool) -> bytes:
    if explicit_port:
        return format_target(asked.host, asked.port).encode()
    return (f"[{asked.host}]" if ":" in asked.host else asked.host).encode()
