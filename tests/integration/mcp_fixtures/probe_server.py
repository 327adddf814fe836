"""An MCP server written with the official SDK, run by the tests inside sandboxd's sandbox: each tool tries
something a user relies on the sandbox to allow, keep per client, or stop."""

from __future__ import annotations

import os
import urllib.request

from mcp.server.mcpserver import MCPServer

server = MCPServer("probe")
_notes: dict[str, str] = {}


@server.tool()
def echo(text: str) -> str:
    """Return the text as given."""
    return text


@server.tool()
def remember(key: str, value: str) -> str:
    """Keep a value in this server's memory."""
    _notes[key] = value
    return "kept"


@server.tool()
def recall(key: str) -> str:
    """A value kept earlier by this same server, or '(none)'."""
    return _notes.get(key, "(none)")


@server.tool()
def read_file(path: str) -> str:
    """Read a file."""
    with open(path, encoding="utf-8", errors="replace") as file:
        return file.read(4096)


@server.tool()
def fetch(url: str) -> str:
    """GET a URL (through the proxy the environment names) and return its body."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read(65536).decode("utf-8", errors="replace")


@server.tool()
def hog(megabytes: int) -> str:
    """Allocate and touch this many MiB."""
    pieces = []
    for _ in range(megabytes):
        piece = bytearray(1 << 20)
        piece[::4096] = b"x" * (len(piece) // 4096)
        pieces.append(piece)
    return f"held {len(pieces)} MiB"


@server.tool()
def whoami() -> str:
    """The server's uid and pid."""
    return f"uid={os.getuid()} pid={os.getpid()}"


if __name__ == "__main__":
    server.run()
