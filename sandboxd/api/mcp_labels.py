"""The labels an MCP call carries on its execution — importable without the MCP SDK (the daemon loads the SDK
only when it serves MCP)."""

from __future__ import annotations

REQUEST_LABEL = "mcp_request_id"  # the execution's label (and its request_id): the MCP request that ran it
SESSION_LABEL = "mcp_session_id"  # the MCP session it came in: a sandboxed MCP server is kept per such session
