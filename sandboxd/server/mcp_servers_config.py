"""Third-party MCP servers, each run in a sandbox of its own: ``[mcp_servers.NAME]`` tables in the config file,
or one ``NAME.toml`` per server in ``mcp_servers_dir`` (a file replaces a table of the same name).

A server is configured as a tool is (see :mod:`sandboxd.server.tools`: ``argv``, ``seccomp_profile``,
``[network] allow``, ``[limits]``, ``[[binds]]``, ``[env]`` with its declared secrets) — without a params
schema: it lists its own tools — plus how its sandboxes are kept::

    [mcp_servers.time]
    description = "The reference MCP time server"
    argv = ["/opt/mcp/bin/mcp-server-time", "--local-timezone", "UTC"]
    seccomp_profile = "python"
    scope = "session"             # one sandbox per MCP client session (default), or "principal": one per caller
    start_timeout = "30s"         # from the sandbox's start to the server's answer to initialize
    call_timeout = "60s"          # one tools/call; past it the call is an error result (TIMEOUT), the server lives
    idle_timeout = "10m"          # a sandbox without a call for this long is stopped
    max_instances = 16            # sandboxes of this server at once (each counts as a running execution too)
    [mcp_servers.time.limits]     # the sandbox's: its whole life (wall_time, default 1h), memory, pids …
    memory = "256M"

Its tools are offered as ``NAME__TOOL``; role grants name them so (globs too: ``"time__*"``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sandboxd.base.errors import ConfigError
from sandboxd.base.limits import Limits
from sandboxd.base.toml import TomlTable, read_toml
from sandboxd.base.units import parse_positive_duration_ms
from sandboxd.server.tools import Tool, tool_from_table

SEPARATOR = "__"  # NAME__TOOL: the server's name, then the tool's as the server names it
_SERVER_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")  # no "_": "__" must end the server's name
SERVER_LIFETIME_MS = 60 * 60_000  # a server's wall time unless its [limits] say otherwise
Scope = Literal["session", "principal"]


@dataclass(frozen=True)
class McpServerConfig:
    name: str
    sandbox: Tool  # what runs, and how it is confined (its params schema is unused)
    scope: Scope = "session"
    start_timeout_ms: int = 30_000
    call_timeout_ms: int = 60_000
    idle_timeout_ms: int = 10 * 60_000
    max_instances: int = 16

    def tool_name(self, tool: str) -> str:
        return f"{self.name}{SEPARATOR}{tool}"


def split_tool_name(name: str) -> tuple[str, str] | None:
    """``("time", "get_current_time")`` of ``time__get_current_time``; None for a name of no server's form."""
    server, separator, tool = name.partition(SEPARATOR)
    return (server, tool) if separator and tool and _SERVER_NAME.match(server) else None


def server_limits(defaults: Limits) -> Limits:
    """A server's defaults: the daemon's, living an hour, without a CPU-time or output bound (its stdout is the
    protocol: each message is bounded instead)."""
    return dataclasses.replace(defaults, wall_time_ms=SERVER_LIFETIME_MS, cpu_time_ms=None, output_max_bytes=None)


def load_mcp_servers(
    tables: Mapping[str, Any], directory: Path | None, *, file: Path | str, placeholders: Mapping[str, str],
    default_limits: Limits,
) -> dict[str, McpServerConfig]:
    """The servers of the config's ``[mcp_servers]`` (read from ``file``) and of ``directory``'s ``*.toml``."""
    limits = server_limits(default_limits)
    servers: dict[str, McpServerConfig] = {}
    for name, raw in tables.items():
        if not isinstance(raw, dict):
            raise ConfigError(f"{file}: mcp_servers.{name}: expected a table, got {raw!r}")
        servers[name] = _server(name, TomlTable(raw, file=file, prefix=f"mcp_servers.{name}"), placeholders, limits)
    if directory is not None and directory.is_dir():
        for path in sorted(directory.glob("*.toml")):
            servers[path.stem] = _server(path.stem, TomlTable(read_toml(path), file=path), placeholders, limits)
    return dict(sorted(servers.items()))


def check_tool_names(servers: Mapping[str, McpServerConfig], tool_names: Sequence[str]) -> None:
    """No tool of the registry may look like a server's: ``NAME__…`` names belong to server ``NAME``."""
    for tool in tool_names:
        split = split_tool_name(tool)
        if split is not None and split[0] in servers:
            raise ConfigError(f"tool {tool!r} has the form of MCP server {split[0]!r}'s tools ({split[0]}__TOOL): "
                              "rename one of them")


def _server(name: str, table: TomlTable, placeholders: Mapping[str, str], limits: Limits) -> McpServerConfig:
    if not _SERVER_NAME.match(name):
        raise ConfigError(f"{table.file}: {table.key_path('')}: {name!r} is not an MCP server name: a lowercase "
                          "letter, then lowercase letters, digits or '-' (at most 32; no '_': tools are NAME__TOOL)")
    sandbox = tool_from_table(name, table, placeholders=placeholders, default_limits=limits, params_schema=False)
    default = McpServerConfig(name, sandbox)
    scope = table.take_str("scope", default.scope)
    if scope not in ("session", "principal"):
        raise table.error("scope", f"expected \"session\" or \"principal\", got {scope!r}")
    server = McpServerConfig(
        name, sandbox, scope="session" if scope == "session" else "principal",
        start_timeout_ms=table.take_parsed("start_timeout", default.start_timeout_ms, parse_positive_duration_ms),
        call_timeout_ms=table.take_parsed("call_timeout", default.call_timeout_ms, parse_positive_duration_ms),
        idle_timeout_ms=table.take_parsed("idle_timeout", default.idle_timeout_ms, parse_positive_duration_ms),
        max_instances=table.take_int("max_instances", default.max_instances, minimum=1, maximum=4096),
    )
    if sandbox.limits.memory_max_bytes is None:
        raise table.error("limits", "an MCP server's sandbox needs a memory limit")
    table.finish()
    return server
