"""The daemon loads the MCP SDK and its web stack only to serve MCP: a daemon without ``[mcp] listen`` and
without sandboxed MCP servers starts without them (a third of its start-up time, and memory it would hold)."""

from __future__ import annotations

import subprocess
import sys

MCP_STACK = ("mcp", "mcp_types", "pydantic", "pydantic_core", "starlette", "uvicorn", "anyio", "httpx")


def test_the_daemon_module_does_not_import_the_mcp_stack() -> None:
    probe = ("import sys, sandboxd.server.daemon; "
             "print(sorted({name.split('.')[0] for name in sys.modules} & set(sys.argv[1:])))")
    loaded = subprocess.run([sys.executable, "-c", probe, *MCP_STACK], check=True, capture_output=True,
                            text=True).stdout.strip()
    assert loaded == "[]"
