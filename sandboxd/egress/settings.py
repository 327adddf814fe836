"""The egress proxy's bounds and pins, one set for the daemon (the ``[egress]`` table), and the environment that
points a sandbox's programs at the proxy.

Every timeout and size is per connection and every count per execution, so one sandbox's traffic — or its
hostility — costs the others nothing: a client has ``handshake_timeout_ms`` to say where it wants to go, a
tunnel lives while bytes move (``idle_timeout_ms``), and ``connections_max`` / ``connections_per_second``
bound how much of the daemon one execution may hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

PROXY_PORT = 3128  # the port inside every sandbox, on its loopback (the usual HTTP proxy port)


@dataclass(frozen=True)
class EgressSettings:
    # Pinned names (lower-case, no trailing dot) → their addresses: never looked up in DNS, and a pinned
    # address counts as explicitly allowed (it may be inward: split-horizon services, tests).
    resolve: Mapping[str, tuple[IPv4Address | IPv6Address, ...]] = field(default_factory=dict)
    connect_timeout_ms: int = 10_000
    handshake_timeout_ms: int = 10_000  # for a client to send a whole request head / SOCKS request
    idle_timeout_ms: int = 120_000  # a connection with no byte either way for this long is closed
    resolve_timeout_ms: int = 5_000
    max_head_bytes: int = 32 * 1024  # an HTTP request head larger than this is answered 431
    connections_max: int = 32  # open at once, per execution
    connections_per_second: int = 20  # new connections per execution, as a token bucket with this burst

    def __post_init__(self) -> None:
        for name in ("connect_timeout_ms", "handshake_timeout_ms", "idle_timeout_ms", "resolve_timeout_ms",
                     "max_head_bytes", "connections_max", "connections_per_second"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"egress setting {name} must be a positive integer, got {value!r}")
        for name, addresses in self.resolve.items():
            if name != name.lower() or name.endswith(".") or not name:
                raise ValueError(f"egress resolve pin {name!r}: write the name in lower case, without trailing dot")
            if not addresses or not all(isinstance(a, IPv4Address | IPv6Address) for a in addresses):
                raise ValueError(f"egress resolve pin {name!r}: expected one or more IP addresses, got {addresses!r}")


def proxy_env(port: int = PROXY_PORT) -> dict[str, str]:
    """The variables that send a sandbox's HTTP clients, and SOCKS-speaking ones (``socks5h``: the proxy
    resolves names, the sandbox has no DNS), through the proxy. Both spellings: tools read one or the other."""
    http = f"http://127.0.0.1:{port}"
    upper = {
        "HTTP_PROXY": http,
        "HTTPS_PROXY": http,
        "ALL_PROXY": f"socks5h://127.0.0.1:{port}",
        "NO_PROXY": "localhost,127.0.0.1,::1",
    }
    return {**upper, **{name.lower(): value for name, value in upper.items()}}
