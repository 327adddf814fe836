"""What a client asked for, and the ways the proxy can say no — each with its HTTP status and SOCKS5 reply code,
so one refusal reads the same whichever protocol carried the request.

Two kinds of "no": :class:`HandshakeFailed` before any target was named (silence, garbage, an unsupported
protocol: answered, closed, no event), and :class:`Refused` once one was (a ``ConnectAttempt`` is emitted).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from sandboxd.egress.allowlist import normalize_host


@dataclass(frozen=True)
class Asked:
    """The target a client named: ``host`` lower-cased without trailing dot, ``address`` when it is a literal."""

    protocol: str  # "http-connect" | "http" | "socks5"
    host: str
    address: IPv4Address | IPv6Address | None
    port: int

    @classmethod
    def parse(cls, protocol: str, host: str, port: int) -> Asked:
        """A :class:`ValueError` when ``host`` cannot be a host or ``port`` is outside 1-65535."""
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is outside 1-65535")
        name, address = normalize_host(host)  # at most 253 characters, or a ValueError
        return cls(protocol, name, address, port)

    def __str__(self) -> str:
        return format_target(self.host, self.port)


def format_target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Kind(enum.Enum):
    """Why a named target was not connected: its outcome, HTTP status, SOCKS5 reply code and verb."""

    LIMITED = ("limited", "denied", 429, 0x02, "was refused")
    NOT_ALLOWED = ("not allowed", "denied", 403, 0x02, "is not allowed for this execution")
    UNRESOLVED = ("unresolved", "failed", 502, 0x04, "could not be reached")
    NETWORK_UNREACHABLE = ("network unreachable", "failed", 502, 0x03, "could not be reached")
    HOST_UNREACHABLE = ("host unreachable", "failed", 502, 0x04, "could not be reached")
    REFUSED = ("refused", "failed", 502, 0x05, "could not be reached")
    TIMEOUT = ("timeout", "failed", 504, 0x06, "could not be reached")
    FAILED = ("failed", "failed", 502, 0x01, "could not be reached")

    def __init__(self, label: str, outcome: str, http_status: int, socks_reply: int, verb: str) -> None:
        self.label = label
        self.outcome = outcome
        self.http_status = http_status
        self.socks_reply = socks_reply
        self.verb = verb


class Refused(Exception):
    """A named target not connected: ``reason`` goes into the event and, after the target, into the reply."""

    def __init__(self, kind: Kind, reason: str, address: str = "") -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.address = address  # the address refused or last tried, "" when none was reached

    def message(self, asked: Asked) -> str:
        return f"sandboxd egress: {asked} {self.kind.verb} ({self.reason})"


class HandshakeFailed(Exception):
    """The client never named a target; ``reply`` (maybe empty) is what it gets before the connection closes."""

    def __init__(self, why: str, reply: bytes = b"") -> None:
        super().__init__(why)
        self.why = why
        self.reply = reply
