"""What the MCP tests share — over stdio, over HTTP, and with sandboxed MCP servers: the bound on one
scenario, the tools and payloads they call, and how they read results, executions and audit records."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from daemon_harness import Daemon
from mcp import types

from sandboxd.cli.client import pb

SCENARIO_TIMEOUT_S = 120
WAIT_S = 30
SHIPPED = {"python", "sqlite_query", "file_processor", "http_fetch"}
SLOW = """
description = "sleep far past its wall time"
argv = ["/bin/sleep", "60"]
[limits]
wall_time = "1s"
"""
# 512 MiB in 8 MiB pieces, each page written: far beyond the python tool's 256M
MEMORY_HOG = """
pieces = []
for _ in range(64):
    piece = bytearray(8 << 20)
    piece[::4096] = b"x" * (len(piece) // 4096)
    pieces.append(piece)
print("not limited")
"""


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    """Run an async scenario, failing it past ``SCENARIO_TIMEOUT_S``."""

    async def bounded() -> None:
        with anyio.fail_after(SCENARIO_TIMEOUT_S):
            await scenario()

    anyio.run(bounded)


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


def list_executions(daemon: Daemon) -> list[pb.RunningExecution]:
    with daemon.client() as client:
        return client.list_executions()


def records(daemon: Daemon, event: str, execution_id: str = "") -> list[dict[str, Any]]:
    return [record for record in daemon.audit_records()
            if record["event"] == event and (not execution_id or record["execution_id"] == execution_id)]
