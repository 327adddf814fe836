"""MCP's stdio transport over a sandboxed server's stdin and stdout, as the daemon sees them: the output
chunks of its execution in, bytes for its stdin out — JSON-RPC messages one per line, as the MCP SDK's own stdio
client frames them. The SDK's :class:`~mcp.ClientSession` runs on :attr:`read_stream`/:attr:`write_stream`.

A line longer than ``MAX_MESSAGE_BYTES`` ends the link (a server cannot make the daemon buffer without bound);
a line that is not JSON-RPC is handed to the session as the exception it is, as the SDK's stdio client does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import anyio
from mcp import types
from mcp.shared.message import SessionMessage

log = logging.getLogger("sandboxd.mcp")

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_QUEUED_MESSAGES = 16


class MessageTooLarge(Exception):
    pass


class StdioLink:
    def __init__(self) -> None:
        self._to_session, self.read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](
            _QUEUED_MESSAGES)
        self.write_stream, self._from_session = anyio.create_memory_object_stream[SessionMessage](_QUEUED_MESSAGES)
        # unbounded: only the daemon's own session writes here, a message per request it sends
        self._stdin: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._partial = bytearray()

    # -- the server's side -----------------------------------------------------------------------------

    async def stdin(self) -> AsyncIterator[bytes]:
        """The server's stdin: what the session writes, until :meth:`close` (then EOF)."""
        while (data := await self._stdin.get()) is not None:
            yield data

    async def from_stdout(self, data: bytes) -> None:
        """Output of the server: whole lines go to the session; raises MessageTooLarge."""
        self._partial.extend(data)
        *lines, rest = bytes(self._partial).split(b"\n")
        if len(rest) > MAX_MESSAGE_BYTES:
            raise MessageTooLarge(f"the server wrote a message of more than {MAX_MESSAGE_BYTES} bytes")
        self._partial = bytearray(rest)
        for line in lines:
            if not line.strip():
                continue
            message: SessionMessage | Exception
            try:
                message = SessionMessage(types.jsonrpc_message_adapter.validate_json(line, by_name=False))
            except ValueError as error:
                log.warning("an MCP server wrote a line that is not JSON-RPC: %.200r", line)
                message = error
            try:
                await self._to_session.send(message)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return  # the session is gone

    # -- the session's side ----------------------------------------------------------------------------

    async def pump_writes(self) -> None:
        """Relay the session's messages to the server's stdin, until the session closes its write stream."""
        async with self._from_session:
            async for message in self._from_session:
                line = message.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
                await self._stdin.put(line.encode())

    async def close(self) -> None:
        """The server is gone, or is to go: the session reads EOF, the server's stdin ends."""
        await self._to_session.aclose()
        self._stdin.put_nowait(None)

