"""One JSON POST over HTTP/1.1 on asyncio, for the risk assessor: nothing blocks the event loop, the caller
bounds the time (``asyncio.timeout``; cancelling closes the connection), and the answer is bounded in size.

HTTP is parsed with h11 (a maintained parser), one request per connection (``Connection: close``). No proxy
from the environment is used and no redirect is followed: the configured address is the one called.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import urllib.parse
from collections.abc import Mapping

import h11

_READ_BYTES = 64 * 1024


class HttpError(Exception):
    """The exchange failed: no connection, a protocol error, an answer too large. The message says which."""


async def post_json(url: str, body: bytes, *, headers: Mapping[str, str] | None = None,
                    max_response_bytes: int) -> tuple[int, bytes]:
    """POST ``body`` (JSON) to ``url``; the response's status and body. Raises :class:`HttpError`."""
    parts = urllib.parse.urlsplit(url)
    secure = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=ssl.create_default_context() if secure else None,
            server_hostname=host if secure else None)
    except (OSError, ssl.SSLError) as exc:
        raise HttpError(f"cannot connect to {host}:{port}: {exc}") from None
    try:
        connection = h11.Connection(h11.CLIENT)
        request = h11.Request(method="POST", target=target, headers=[
            ("Host", parts.netloc.rpartition("@")[2]), ("Content-Type", "application/json"),
            ("Accept", "application/json"), ("Content-Length", str(len(body))), ("Connection", "close"),
            *(headers or {}).items()])
        for event in (request, h11.Data(data=body), h11.EndOfMessage()):
            writer.write(connection.send(event) or b"")
        await writer.drain()
        return await _response(connection, reader, max_response_bytes)
    except h11.ProtocolError as exc:
        raise HttpError(f"not an HTTP/1.1 answer: {exc}") from None
    except (OSError, ssl.SSLError) as exc:
        raise HttpError(f"the connection failed: {exc}") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, asyncio.CancelledError):
            await writer.wait_closed()


async def _response(connection: h11.Connection, reader: asyncio.StreamReader,
                    max_response_bytes: int) -> tuple[int, bytes]:
    status = 0
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await reader.read(_READ_BYTES))  # b"" at EOF: h11 then says what it lacks
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > max_response_bytes:
                raise HttpError(f"the answer is larger than {max_response_bytes} bytes")
        elif isinstance(event, h11.EndOfMessage):
            return status, bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            raise HttpError("the connection closed before the answer was complete")
