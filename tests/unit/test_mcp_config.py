"""The ``[mcp]`` table: the daemon's MCP endpoint over streamable HTTP — defaults, every key, and errors that
name the file, the key and the reason; which of its keys only a restart applies."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sandboxd.base.errors import ConfigError
from sandboxd.server.config import Config, load_config, restart_needed
from sandboxd.server.mcp_config import McpConfig, McpListen, normalized_origin

TLS = """
[daemon.tls]
cert_file = "/etc/sandboxd/tls/server.pem"
key_file = "/etc/sandboxd/tls/server.key"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sandboxd.toml"
    path.write_text(text)
    return path


def test_off_by_default() -> None:
    assert Config().mcp == McpConfig()
    assert McpConfig().listen is None
    assert (McpConfig().path, McpConfig().max_sessions, McpConfig().session_idle_timeout_ms) == ("/mcp", 64, 600_000)


def test_every_key(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, """
[mcp]
listen = "localhost:8765"
path = "/tools/mcp"
allowed_origins = ["HTTPS://App.Example.com:443/", "http://127.0.0.1:3000", "https://app.example.com"]
max_sessions = 8
session_idle_timeout = "90s"
resource_url = "https://tools.example.com/tools/mcp"
"""))
    assert config.mcp == McpConfig(
        listen=McpListen("127.0.0.1", 8765), path="/tools/mcp",
        allowed_origins=("https://app.example.com", "http://127.0.0.1:3000"),  # normalized, once each
        max_sessions=8, session_idle_timeout_ms=90_000, resource_url="https://tools.example.com/tools/mcp",
    )
    assert str(config.mcp.listen) == "127.0.0.1:8765"


@pytest.mark.parametrize(("listen", "expected"), [
    ("127.0.0.1:0", McpListen("127.0.0.1", 0)),  # any free port: the daemon logs the one it got
    ("[::1]:8765", McpListen("::1", 8765)),
    ("", None),
])
def test_loopback_listen_needs_no_tls(tmp_path: Path, listen: str, expected: McpListen | None) -> None:
    assert load_config(write(tmp_path, f'[mcp]\nlisten = "{listen}"\n')).mcp.listen == expected


def test_beyond_loopback_with_tls(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, TLS + '[mcp]\nlisten = "0.0.0.0:8765"\n'))
    assert config.mcp.listen == McpListen("0.0.0.0", 8765)
    assert not config.mcp.listen.is_loopback
    assert str(McpListen("::", 8765)) == "[::]:8765"


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[mcp]\nlisten = '0.0.0.0:8765'", "mcp.listen", "needs TLS ([daemon.tls])"),
        ("[mcp]\nlisten = '192.0.2.7:8765'", "mcp.listen", "not a loopback address"),
        ("[mcp]\nlisten = '127.0.0.1'", "mcp.listen", "host:port"),
        ("[mcp]\nlisten = '127.0.0.1:70000'", "mcp.listen", "host:port"),
        ("[mcp]\nlisten = '::1:8765'", "mcp.listen", "needs brackets"),
        ("[mcp]\nlisten = 'mcp.example.com:8765'", "mcp.listen", "not an IP address"),
        ("[mcp]\nlisten = 8765", "mcp.listen", "host:port"),
        ("[mcp]\npath = 'mcp'", "mcp.path", "a path such as"),
        ("[mcp]\npath = '/mcp/'", "mcp.path", "no trailing slash"),
        ("[mcp]\npath = '/'", "mcp.path", "a path such as"),
        ("[mcp]\npath = '/.well-known/mcp'", "mcp.path", "OAuth metadata"),
        ("[mcp]\nallowed_origins = 'https://app.example.com'", "mcp.allowed_origins", "a list of origins"),
        ("[mcp]\nallowed_origins = ['app.example.com']", "mcp.allowed_origins", "not an origin"),
        ("[mcp]\nallowed_origins = ['https://app.example.com/ui']", "mcp.allowed_origins", "no path"),
        ("[mcp]\nallowed_origins = ['ftp://app.example.com']", "mcp.allowed_origins", "http(s)://HOST[:PORT]"),
        ("[mcp]\nallowed_origins = ['https://app.example.com:99999']", "mcp.allowed_origins", "not an origin"),
        ("[mcp]\nmax_sessions = 0", "mcp.max_sessions", "between 1 and"),
        ("[mcp]\nmax_sessions = '64'", "mcp.max_sessions", "an integer"),
        ("[mcp]\nsession_idle_timeout = '0s'", "mcp.session_idle_timeout", "positive"),
        ("[mcp]\nsession_idle_timeout = 600", "mcp.session_idle_timeout", "with a unit"),
        ("[mcp]\nresource_url = 'tools.example.com/mcp'", "mcp.resource_url", "http(s) URL"),
        ("[mcp]\nresource_url = 'https://tools.example.com/mcp?x=1'", "mcp.resource_url", "without query"),
        ("[mcp]\nlisen = '127.0.0.1:8765'", "mcp.lisen", "unknown key"),
        ("mcp = 'on'", "mcp", "a table"),
    ],
)
def test_errors_name_file_key_and_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = caught.value.message
    assert message.startswith(f"{path}: {key}: "), message
    assert reason in message


@pytest.mark.parametrize(("origin", "normalized"), [
    ("http://LOCALHOST:8765", "http://localhost:8765"),
    ("https://app.example.com:443", "https://app.example.com"),
    ("http://app.example.com:80/", "http://app.example.com"),
    ("http://[::1]:8765", "http://[::1]:8765"),
])
def test_origins_compare_as_browsers_send_them(origin: str, normalized: str) -> None:
    assert normalized_origin(origin) == normalized


@pytest.mark.parametrize("origin", ["null", "file://", "http://", "https://user@app.example.com"])
def test_what_is_no_origin(origin: str) -> None:
    with pytest.raises(ValueError, match="not an origin"):
        normalized_origin(origin)


def test_listen_path_and_session_bounds_need_a_restart_origins_do_not() -> None:
    running = Config()
    mcp = running.mcp

    def changed(**keys: object) -> list[str]:
        return restart_needed(running, dataclasses.replace(running, mcp=dataclasses.replace(mcp, **keys)))

    assert changed(listen=McpListen("127.0.0.1", 8765)) == ["mcp.listen"]
    assert changed(path="/other") == ["mcp.path"]
    assert changed(max_sessions=3) == ["mcp.max_sessions"]
    assert changed(session_idle_timeout_ms=1000) == ["mcp.session_idle_timeout"]
    assert changed(allowed_origins=("https://app.example.com",), resource_url="https://t.example/mcp") == []
