"""What the egress proxy tells the daemon about an execution's connections, and what it is told to enforce.

Per connection the hooks hear, in order::

    connect(ConnectAttempt)     once the client named a target: "allowed" (connected), "denied" (by the
                                limits or the lists) or "failed" (allowed, but unreachable)
    closed(ConnectionClosed)    once per *allowed* connection, when both of its sides are closed

and per execution ``byte_limit()`` at most once. A client that never names a target (silence, garbage, an
unsupported protocol) is answered and closed without an event: there is nothing to decide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sandboxd.egress.allowlist import Allowlist

PROTOCOLS = ("http-connect", "http", "socks5")
OUTCOMES = ("allowed", "denied", "failed")


@dataclass(frozen=True)
class ConnectAttempt:
    connection: int  # per-execution sequence number, from 1
    protocol: str  # "http-connect" | "http" | "socks5"
    host: str  # as asked, lower-cased (a name or an address literal), at most 253 characters
    port: int
    address: str  # the address connected to or refused; "" when none was reached (e.g. not on the list)
    outcome: str  # "allowed" | "denied" | "failed" (allowed by policy, but resolving or connecting failed)
    reason: str  # allowed: the allowlist entry that matched; denied / failed: why, readable


@dataclass(frozen=True)
class ConnectionClosed:
    connection: int
    protocol: str
    host: str
    port: int
    address: str
    bytes_sent: int  # from the sandbox to the upstream
    bytes_received: int  # from the upstream to the sandbox
    duration_ms: int  # from accepting the client's connection to both sides closed
    ended_by: str  # "client", "upstream", "idle timeout", "byte limit", "execution ended", "error: ..."


class EgressHooks(Protocol):
    """Called on the event loop, synchronously; an exception is logged and changes nothing for the proxy."""

    def connect(self, event: ConnectAttempt) -> None: ...

    def closed(self, event: ConnectionClosed) -> None: ...

    def byte_limit(self) -> None: ...


@dataclass(frozen=True)
class ExecutionRules:
    allow: Allowlist  # the tool's (or the raw command's) list
    narrow: Allowlist | None = None  # the caller's role's list: a connection must match both when set
    network_max_bytes: int | None = None  # sent + received, all connections of the execution together
