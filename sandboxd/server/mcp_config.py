"""The ``[mcp]`` table: sandboxd's tools served over MCP's streamable HTTP by the daemon itself (see
:mod:`sandboxd.server.mcp_http`). Every key, with its default::

    [mcp]
    listen = ""                   # e.g. "127.0.0.1:8765" ("…:0": any free port, logged); beyond loopback
                                  # only with [daemon.tls], whose certificate then serves it as https
    path = "/mcp"                 # the endpoint
    allowed_origins = []          # browser origins allowed besides the endpoint's own (its http(s)://HOST:PORT
                                  # and the localhost / 127.0.0.1 / [::1] forms of it); a request without an
                                  # Origin header is no browser's and is allowed (it still needs a token)
    max_sessions = 64             # MCP sessions open at once; one more is refused (503) until one ends
    session_idle_timeout = "10m"  # a session without a request in flight for this long is ended
    resource_url = ""             # the endpoint's public URL, named by the OAuth protected-resource metadata
                                  # (RFC 9728) served when JWTs are configured; "" = the listener's own URL
                                  # (set it when clients reach the endpoint by a name or through a proxy)

A caller is identified as on gRPC — its bearer token, a static one or a JWT — and runs as that principal.
``allowed_origins`` and ``resource_url`` are read per request (a reload applies them); the other keys only
at start.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass

from sandboxd.base.toml import TomlTable
from sandboxd.base.units import parse_positive_duration_ms

__all__ = ["McpConfig", "McpListen", "normalized_origin", "parse_mcp"]

MAX_SESSIONS_CEILING = 10_000
_PATH = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")


@dataclass(frozen=True)
class McpListen:
    """Where the endpoint listens: an IP address (``localhost`` is 127.0.0.1) and a port (0: any free one)."""

    host: str
    port: int

    @property
    def is_loopback(self) -> bool:
        return ipaddress.ip_address(self.host).is_loopback

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class McpConfig:
    listen: McpListen | None = None  # None: no MCP endpoint
    path: str = "/mcp"
    allowed_origins: tuple[str, ...] = ()  # normalized: scheme://host[:port], lower case
    max_sessions: int = 64
    session_idle_timeout_ms: int = 10 * 60_000
    resource_url: str = ""  # "": the endpoint's own URL


def _listen(value: object, *, tls: bool) -> McpListen | None:
    if value == "":
        return None
    example = "expected \"host:port\" such as \"127.0.0.1:8765\""
    if not isinstance(value, str):
        raise ValueError(f"{example}, got {value!r}")
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 address needs brackets, as in \"[::1]:8765\", got {value!r}")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{example}, got {value!r}")
    try:
        address = ipaddress.ip_address("127.0.0.1" if host == "localhost" else host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address (or localhost)") from None
    if not address.is_loopback and not tls:
        raise ValueError(f"{value!r} is not a loopback address: listening beyond this host needs TLS "
                         "([daemon.tls])")
    return McpListen(str(address), int(port))


def _path(value: object) -> str:
    if not isinstance(value, str) or not _PATH.match(value):
        raise ValueError(f"expected a path such as \"/mcp\" (letters, digits, '.', '_', '~', '-' between "
                         f"slashes, no trailing slash), got {value!r}")
    if value.startswith("/.well-known"):
        raise ValueError(f"{value!r} is under /.well-known, where the OAuth metadata is served")
    return value


def normalized_origin(value: str) -> str:
    """``HTTPS://Example.COM:8443/`` → ``https://example.com:8443``: an origin as browsers send it, compared
    exactly (a default port is not spelt out). Raises ValueError saying what is not an origin."""
    try:
        parts = urllib.parse.urlsplit(value.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an origin ({exc})") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an origin: expected http(s)://HOST[:PORT]")
    if parts.username is not None or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{value!r} is not an origin: scheme, host and port only, no path")
    scheme = parts.scheme.lower()
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname.lower()
    default_port = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" if port in (None, default_port) else f"{scheme}://{host}:{port}"


def _origins(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"expected a list of origins such as [\"https://app.example.com\"], got {value!r}")
    return tuple(dict.fromkeys(normalized_origin(item) for item in value))


def _resource_url(value: object) -> str:
    if value == "":
        return ""
    if not isinstance(value, str):
        raise ValueError(f"expected a URL such as \"https://tools.example.com/mcp\", got {value!r}")
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"expected an http(s) URL without query or fragment, got {value!r}")
    return value


def parse_mcp(table: TomlTable, *, tls: bool) -> McpConfig:
    """The ``[mcp]`` table (finished here); ``tls``: whether [daemon.tls] is configured."""
    default = McpConfig()
    result = McpConfig(
        listen=table.take_parsed("listen", default.listen, lambda value: _listen(value, tls=tls)),
        path=table.take_parsed("path", default.path, _path),
        allowed_origins=table.take_parsed("allowed_origins", default.allowed_origins, _origins),
        max_sessions=table.take_int("max_sessions", default.max_sessions, minimum=1, maximum=MAX_SESSIONS_CEILING),
        session_idle_timeout_ms=table.take_parsed("session_idle_timeout", default.session_idle_timeout_ms,
                                                  parse_positive_duration_ms),
        resource_url=table.take_parsed("resource_url", default.resource_url, _resource_url),
    )
    table.finish()
    return result
