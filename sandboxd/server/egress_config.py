"""The ``[egress]`` table of the daemon's configuration: the proxy every sandbox with a network allowlist
reaches the outside through. Every key, with its default::

    [egress]
    resolve = { "api.example.test" = "127.0.0.1" }   # names pinned to addresses (one, or a list): the daemon
                                                     # never asks DNS for them, and a pinned address counts as
                                                     # explicitly allowed (split-horizon deployments, tests)
    connect_timeout = "10s"          # to reach an allowed address
    handshake_timeout = "10s"        # for a client inside to send a whole request head / SOCKS request
    idle_timeout = "2m"              # a connection with no byte either way for this long is closed
    resolve_timeout = "5s"           # for the daemon's own DNS lookup of an allowed name
    max_head = "32K"                 # an HTTP request head larger than this is refused (431)
    connections_max = 32             # open at once, per execution
    connections_per_second = 20      # new connections, per execution

Which hosts a sandbox may reach is not here: a tool's ``[network] allow``, narrowed by the caller's role's
``network_allow``; a raw command's ``allow_hosts``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from sandboxd.base.toml import TomlTable
from sandboxd.base.units import parse_positive_duration_ms, parse_size_bytes
from sandboxd.egress.allowlist import parse_entry
from sandboxd.egress.settings import EgressSettings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _head_bytes(value: object) -> int:
    size = parse_size_bytes(value)  # type: ignore[arg-type]
    if not 1024 <= size <= 1024 * 1024:
        raise ValueError(f"must be between 1K and 1M, got {size} bytes")
    return size


def _pins(table: TomlTable) -> Mapping[str, tuple[Address, ...]]:
    raw = table.take_raw("resolve")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise table.error("resolve", f"expected a table of name = \"address\" (or [addresses]), got {raw!r}")
    pins: dict[str, tuple[Address, ...]] = {}
    for name, value in raw.items():
        where = f"resolve.{name}"
        try:
            entry = parse_entry(name)
        except ValueError as exc:
            raise table.error(where, str(exc)) from None
        if entry.host is None or entry.host.startswith("*.") or entry.port is not None:
            raise table.error(where, f"{name!r}: a pin names one host, without port or wildcard")
        texts = value if isinstance(value, list) else [value]
        if not texts or not all(isinstance(text, str) for text in texts):
            raise table.error(where, f"expected an address or a list of addresses, got {value!r}")
        try:
            pins[entry.host] = tuple(ipaddress.ip_address(text) for text in texts)
        except ValueError as exc:
            raise table.error(where, str(exc)) from None
    return pins


def parse_egress(table: TomlTable) -> EgressSettings:
    default = EgressSettings()
    positive_ms = parse_positive_duration_ms
    settings = EgressSettings(
        resolve=_pins(table),
        connect_timeout_ms=table.take_parsed("connect_timeout", default.connect_timeout_ms, positive_ms),
        handshake_timeout_ms=table.take_parsed("handshake_timeout", default.handshake_timeout_ms, positive_ms),
        idle_timeout_ms=table.take_parsed("idle_timeout", default.idle_timeout_ms, positive_ms),
        resolve_timeout_ms=table.take_parsed("resolve_timeout", default.resolve_timeout_ms, positive_ms),
        max_head_bytes=table.take_parsed("max_head", default.max_head_bytes, _head_bytes),
        connections_max=table.take_int("connections_max", default.connections_max, minimum=1, maximum=4096),
        connections_per_second=table.take_int("connections_per_second", default.connections_per_second,
                                               minimum=1, maximum=100_000),
    )
    table.finish()
    return settings
