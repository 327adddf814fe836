"""Sandboxed MCP servers as configuration: ``[mcp_servers.NAME]`` tables and ``NAME.toml`` files, parsed like
tools plus how their sandboxes are kept — and refused, naming file and key, when wrong; the stdio framing of
their messages."""

from __future__ import annotations

import json
import textwrap
import tomllib
from pathlib import Path

import anyio
import pytest
from mcp import types

from sandboxd.base.errors import ConfigError
from sandboxd.base.limits import Limits
from sandboxd.base.toml import TomlTable
from sandboxd.policy.config import check_policy, parse_policy
from sandboxd.server.mcp_link import MAX_MESSAGE_BYTES, MessageTooLarge, StdioLink
from sandboxd.server.mcp_servers_config import (
    SERVER_LIFETIME_MS,
    check_tool_names,
    load_mcp_servers,
    split_tool_name,
)

SERVER = """
description = "time"
argv = ["/opt/mcp/bin/python3", "-m", "mcp_server_time"]
seccomp_profile = "python"
scope = "principal"
call_timeout = "5s"
[limits]
memory = "128M"
"""


def load(text: str, tmp_path: Path, directory: Path | None = None) -> dict[str, object]:
    tables = tomllib.loads(text).get("mcp_servers", {})
    return dict(load_mcp_servers(tables, directory, file=tmp_path / "sandboxd.toml", placeholders={},
                                 default_limits=Limits()))


def test_a_table_and_a_file_make_servers(tmp_path: Path) -> None:
    (tmp_path / "fetch.toml").write_text(SERVER.replace('scope = "principal"', ""))
    text = "[mcp_servers.time]\n" + SERVER.replace("[limits]", "[mcp_servers.time.limits]")
    servers = load(text, tmp_path, tmp_path)
    time_server, fetch = servers["time"], servers["fetch"]
    assert time_server.scope == "principal" and time_server.call_timeout_ms == 5000  # type: ignore[attr-defined]
    assert fetch.scope == "session"  # type: ignore[attr-defined]
    limits = time_server.sandbox.limits  # type: ignore[attr-defined]
    assert limits.memory_max_bytes == 128 << 20
    assert limits.wall_time_ms == SERVER_LIFETIME_MS and limits.output_max_bytes is None  # a long-lived server


@pytest.mark.parametrize(("change", "says"), [
    (('scope = "principal"', 'scope = "everyone"'), "mcp_servers.time.scope"),
    (('call_timeout = "5s"', 'call_timeout = "soon"'), "mcp_servers.time.call_timeout"),
    (('seccomp_profile = "python"', 'seccomp_profile = "python"\nport = 1'), "mcp_servers.time.port: unknown key"),
    (('argv = ["/opt', 'argv = ["opt'), "mcp_servers.time.argv"),
])
def test_a_broken_server_names_its_key(tmp_path: Path, change: tuple[str, str], says: str) -> None:
    text = "[mcp_servers.time]\n" + SERVER.replace(*change).replace("[limits]", "[mcp_servers.time.limits]")
    with pytest.raises(ConfigError, match=says):
        load(text, tmp_path)


def test_a_server_name_cannot_hold_the_separator(tmp_path: Path) -> None:
    text = "[mcp_servers.my_time]\n" + SERVER.replace("[limits]", "[mcp_servers.my_time.limits]")
    with pytest.raises(ConfigError, match="'my_time' is not an MCP server name"):
        load(text, tmp_path)


def test_a_tool_may_not_take_a_servers_names(tmp_path: Path) -> None:
    servers = load("[mcp_servers.time]\n" + SERVER.replace("[limits]", "[mcp_servers.time.limits]"), tmp_path)
    with pytest.raises(ConfigError, match="'time__now' has the form of MCP server 'time'"):
        check_tool_names(servers, ["python", "time__now"])  # type: ignore[arg-type]
    assert split_tool_name("time__get_current_time") == ("time", "get_current_time")
    assert split_tool_name("python") is None and split_tool_name("time__") is None


def test_grants_may_name_a_servers_tools_before_they_are_known() -> None:
    policy = parse_policy(TomlTable(tomllib.loads(textwrap.dedent("""
        [principals.local-admin]
        roles = ["r"]
        [roles.r]
        tools = ["time__*", "fetch__fetch"]
        """)), file="sandboxd.toml"))
    check_policy(policy, ["python"], tool_prefixes=["time__", "fetch__"])
    with pytest.raises(ConfigError, match="time__"):
        check_policy(policy, ["python"], tool_prefixes=["fetch__"])


def test_the_link_frames_messages_by_line_and_bounds_them() -> None:
    async def scenario() -> None:
        link = StdioLink()
        request = types.JSONRPCRequest(jsonrpc="2.0", id=1, method="ping")
        await link.from_stdout(json.dumps(request.model_dump(by_alias=True, exclude_none=True)).encode()[:10])
        await link.from_stdout(json.dumps(request.model_dump(by_alias=True, exclude_none=True)).encode()[10:]
                               + b"\nnot json\n")
        first = await link.read_stream.receive()
        assert not isinstance(first, Exception) and first.message.id == 1  # type: ignore[union-attr]
        assert isinstance(await link.read_stream.receive(), Exception)  # handed on, as the SDK's client does
        with pytest.raises(MessageTooLarge):
            await link.from_stdout(b"x" * (MAX_MESSAGE_BYTES + 1))
        await link.close()
        assert [chunk async for chunk in link.stdin()] == []  # closed: the server's stdin ends

    anyio.run(scenario)
