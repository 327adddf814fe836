"""What names, runs and ends a sandboxed MCP server's instance — importable without the MCP SDK, which the
daemon loads only once it starts a server (:mod:`sandboxd.server.mcp_instance`)."""

from __future__ import annotations

from dataclasses import dataclass

from sandboxd.egress.proxy import EgressProxy
from sandboxd.server.admission import Admission
from sandboxd.server.audit_trail import AuditTrail
from sandboxd.server.execution_stream import EngineLike
from sandboxd.server.metrics import Metrics


@dataclass(frozen=True)
class InstanceKey:
    """Who a server's sandbox is kept for: a principal, and (scope "session") one MCP session of theirs."""

    server: str
    principal: str
    mcp_session: str = ""


@dataclass(frozen=True)
class Daemon:
    """What running a server needs of the daemon."""

    engine: EngineLike
    admission: Admission
    trail: AuditTrail
    metrics: Metrics
    egress: EgressProxy | None


class ServerGone(Exception):
    """The server ended (or never answered): ``status`` and ``message`` say how, for the calls it leaves."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
