"""One execution's traffic through the egress proxy, as the daemon keeps account of it: every connection in
the audit (``network.connect``, ``network.closed``) and the metrics, and the byte budget's verdict.

The proxy calls these hooks on the event loop as connections are decided and end. An audit log that can no
longer record ends the execution: a connection nobody can vouch for is not one to let run on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sandboxd.audit.writer import AuditUnavailable
from sandboxd.egress.events import ConnectAttempt, ConnectionClosed
from sandboxd.engine.result import Status
from sandboxd.server.admission import Admitted
from sandboxd.server.audit_trail import AuditTrail, Subject
from sandboxd.server.metrics import Metrics

log = logging.getLogger("sandboxd.service")


class NetworkRecorder:
    """The :class:`~sandboxd.egress.events.EgressHooks` of one execution."""

    def __init__(self, *, admitted: Admitted, trail: AuditTrail, metrics: Metrics,
                 network_max_bytes: int | None) -> None:
        self._admitted = admitted
        self._trail = trail
        self._subject = Subject(admitted.principal, admitted.tool, admitted.execution_id, admitted.request_id)
        self._metrics = metrics
        self._network_max_bytes = network_max_bytes

    def connect(self, event: ConnectAttempt) -> None:
        self._metrics.network_connection(self._subject.tool, event.outcome)
        self._record(lambda: self._trail.network_connect(
            self._subject, connection=event.connection, protocol=event.protocol, host=event.host,
            port=event.port, address=event.address, outcome=event.outcome, reason=event.reason))

    def closed(self, event: ConnectionClosed) -> None:
        self._metrics.network_bytes(self._subject.tool, sent_bytes=event.bytes_sent,
                                    received_bytes=event.bytes_received)
        self._record(lambda: self._trail.network_closed(
            self._subject, connection=event.connection, host=event.host, port=event.port, address=event.address,
            sent_bytes=event.bytes_sent, received_bytes=event.bytes_received, duration_ms=event.duration_ms,
            ended_by=event.ended_by))

    def byte_limit(self) -> None:
        message = (f"network limit of {self._network_max_bytes} bytes reached (sent and received through the "
                   "egress proxy)")
        self._admitted.cancel_token.stop(Status.NETWORK_LIMIT, message)

    def _record(self, append: Callable[[], object]) -> None:
        try:
            append()
        except AuditUnavailable as error:
            log.error("execution %s: %s; ending it", self._subject.execution_id, error.message)
            self._admitted.cancelled_by = self._admitted.cancelled_by or "audit-unavailable"
            message = f"ended: the audit log cannot record its network connections ({error.message})"
            self._admitted.cancel_token.stop(Status.CANCELLED, message)
