"""The daemon's audit vocabulary: one method per event, over the hash-chained :class:`AuditLog`.

Every record names its time, principal, tool, execution id and request id; what else it says is in
``details``. Events, in the order an execution meets them::

    request.received      an Execute arrived from an identified caller, with its labels (an unidentified one
                          gets only its denied decision: AUTH_FAILED)
    decision              exactly one per request: outcome allowed (role, effective limits) or denied
                          (reason, role when one matched)
    execution.started     pid, uid, cgroup, effective limits, seccomp profile and its digest
    execution.signal      a signal its caller sent the handler (ExecuteInteractive), once delivered: its name
    execution.limit_hit   which limit ended it (memory, time, cpu, output)
    execution.seccomp_violation   the syscall
    execution.cancelled   by whom (a principal, the caller leaving, the daemon stopping)
    network.connect       one per connection the sandbox asked the egress proxy for: host, port, address,
                          protocol, outcome (allowed / denied / failed) and why
    network.closed        one per allowed connection, when it ends: bytes each way, duration, who ended it
    mcp.call              a call of a sandboxed MCP server's tool, once answered: the server's sandbox (its
                          execution id), duration, isError (its decision names the arguments' size and SHA-256)
    execution.finished    status, exit code / signal, usage (network bytes and connections included)

    daemon.started / daemon.stopped / daemon.reloaded / daemon.reload_failed / daemon.recovered
    grant.created / grant.revoked / grant.expired      a runtime grant (principal, tool: the grant's), by whom

The log itself adds ``audit.repaired``, ``audit.expired`` and ``audit.subscriber_dropped``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sandboxd.audit.record import AuditRecord
from sandboxd.audit.writer import AuditLog
from sandboxd.base.echo import ECHO_MAX_CHARS, cut
from sandboxd.base.errors import SandboxError
from sandboxd.base.limits import LIMIT_FIELDS, Limits
from sandboxd.base.refusals import PolicyDenied
from sandboxd.engine.result import Result, Status

COMMAND_ARGS_RECORDED = 32
LABELS_RECORDED = 16  # a request's labels (e.g. the MCP session and request ids) beyond these are counted only

# The Result statuses that mean "a limit ended it", and which limit.
LIMIT_BY_STATUS = {
    Status.MEMORY_LIMIT: "memory",
    Status.TIMEOUT: "wall_time",
    Status.CPU_LIMIT: "cpu_time",
    Status.OUTPUT_LIMIT: "output",
    Status.NETWORK_LIMIT: "network",
}


@dataclass(frozen=True)
class Subject:
    """Who asked for what: the fields every record of one request carries."""

    principal: str = ""
    tool: str = ""
    execution_id: str = ""
    request_id: str = ""


_PLAIN = frozenset({int, float, bool, type(None)})  # recorded as they are


def _bounded(value: Any) -> Any:
    """``value`` with each string in it cut (keys to ``ECHO_MAX_CHARS``), tuples as lists. The exact types of
    the daemon's own details are tried first: four records an execution, and an ABC's isinstance costs."""
    kind = type(value)
    if kind is str:
        return cut(value)
    if kind in _PLAIN:
        return value
    if kind is dict or isinstance(value, Mapping):
        return {cut(key if type(key) is str else str(key), ECHO_MAX_CHARS): _bounded(item)
                for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_bounded(item) for item in value]
    return cut(value) if isinstance(value, str) else value


def limits_details(limits: Limits) -> dict[str, int | None]:
    return {name: getattr(limits, name) for name in LIMIT_FIELDS}  # not dataclasses.asdict: a deep copy, slow


class AuditTrail:
    def __init__(self, log: AuditLog) -> None:
        self.log = log

    def _append(self, event: str, subject: Subject, details: Mapping[str, Any]) -> AuditRecord:
        # What a caller sent (a tool name, a request id, a failing value) is recorded bounded: a refusal
        # must not be able to write megabytes of audit.
        return self.log.append(
            event, principal=cut(subject.principal, ECHO_MAX_CHARS), tool=cut(subject.tool, ECHO_MAX_CHARS),
            execution_id=cut(subject.execution_id, ECHO_MAX_CHARS),
            request_id=cut(subject.request_id, ECHO_MAX_CHARS), details=_bounded(details),
        )

    def check_writable(self) -> None:
        """Raise AuditUnavailable when the log can no longer record: nothing may start unrecorded."""
        self.log.check_writable()

    async def durable(self, record: AuditRecord) -> None:
        """Return once ``record`` (and every record before it) is fsynced; raises AuditUnavailable."""
        await self.log.wait_durable(record.seq)

    # -- requests --------------------------------------------------------------------------------------

    def request_received(self, subject: Subject, *, rpc: str, peer: str, auth_method: str,
                         labels: Mapping[str, str] | None = None) -> AuditRecord:
        """``labels``: the request's (the first ``LABELS_RECORDED`` in key order, each bounded)."""
        details: dict[str, Any] = {"rpc": rpc, "peer": peer, "auth_method": auth_method}
        if labels:
            details["labels"] = dict(sorted(labels.items())[:LABELS_RECORDED])
            if len(labels) > LABELS_RECORDED:
                details["labels_count"] = len(labels)
        return self._append("request.received", subject, details)

    def allowed(self, subject: Subject, *, rpc: str, role: str, limits: Limits | None = None,
                command: Sequence[str] | None = None, clamped: Sequence[str] = (),
                network: Mapping[str, Sequence[str]] | None = None,
                policy: Mapping[str, Any] | None = None, mcp: Mapping[str, Any] | None = None) -> AuditRecord:
        """``command``: a raw command's argv (the first ``COMMAND_ARGS_RECORDED`` arguments, each bounded);
        ``clamped``: the limits lowered to a ceiling; ``network``: the allowlist (``allow``) and the role's
        narrowing of it (``narrow``), when it may connect anywhere; ``policy``: the decision's own facts
        (``grant``: which grant admitted it, ``risk``: the risk assessor's answer)."""
        details: dict[str, Any] = {"outcome": "allowed", "rpc": rpc, "role": role, **(policy or {})}
        if network is not None:
            details["network"] = {key: list(value) for key, value in network.items()}
        if limits is not None:
            details["limits"] = limits_details(limits)
        if command is not None:
            details["argv"] = [cut(arg, ECHO_MAX_CHARS) for arg in command[:COMMAND_ARGS_RECORDED]]
            if len(command) > COMMAND_ARGS_RECORDED:
                details["argv_count"] = len(command)
        if clamped:
            details["clamped"] = list(clamped)
        if mcp is not None:  # a call to a sandboxed MCP server: its server and tool, its arguments' size and digest
            details["mcp"] = dict(mcp)
        return self._append("decision", subject, details)

    def denied(self, subject: Subject, *, rpc: str, error: SandboxError, role: str = "",
               peer: str = "") -> AuditRecord:
        """``peer``: where an unidentified caller called from (the socket, or a TCP address)."""
        details: dict[str, Any] = {"outcome": "denied", "rpc": rpc, "reason": error.reason,
                                   "message": error.message, "role": role or str(getattr(error, "role", "") or "")}
        if isinstance(error, PolicyDenied):  # the rule a constraint held, the risk assessor's answer …
            details.update(error.audit_details())
        if peer:
            details["peer"] = peer
        return self._append("decision", subject, details)

    # -- executions ------------------------------------------------------------------------------------

    def started(self, subject: Subject, *, pid: int, uid: int, cgroup: str, limits: Limits, profile: str,
                profile_digest: str) -> AuditRecord:
        return self._append("execution.started", subject, {
            "pid": pid, "uid": uid, "cgroup": cgroup, "limits": limits_details(limits),
            "seccomp_profile": profile, "seccomp_profile_sha256": profile_digest,
        })

    def signalled(self, subject: Subject, *, signal: str) -> AuditRecord:
        """A signal (``SIGINT`` …) the caller had delivered to the handler."""
        return self._append("execution.signal", subject, {"signal": signal})

    def cancelled(self, subject: Subject, *, by: str) -> AuditRecord:
        return self._append("execution.cancelled", subject, {"by": by})

    def session_created(self, subject: Subject, *, role: str, limits: Limits, uid: int, idle_timeout_ms: int,
                        max_lifetime_ms: int, network: list[str] | None) -> AuditRecord:
        details: dict[str, Any] = {"role": role, "limits": limits_details(limits), "uid": uid,
                                   "idle_timeout_ms": idle_timeout_ms, "max_lifetime_ms": max_lifetime_ms}
        if network is not None:
            details["network"] = network
        return self._append("session.created", subject, details)

    def session_ended(self, subject: Subject, event: str, *, by: str, executions: int,
                      memory_peak_bytes: int) -> AuditRecord:
        """``session.closed`` (by a principal, or the daemon stopping) or ``session.expired`` (idle, lifetime,
        keeper ended)."""
        return self._append(event, subject, {"by": by, "executions": executions,
                                             "memory_peak_bytes": memory_peak_bytes})

    def file_moved(self, subject: Subject, *, direction: str, path: str, size_bytes: int, sha256: str,
                   mode: int) -> AuditRecord:
        """``session.file_put`` / ``session.file_get``: one file in or out of a session's /work."""
        return self._append(f"session.file_{direction}", subject, {
            "path": path, "size_bytes": size_bytes, "sha256": sha256, "mode": oct(mode)})

    def network_connect(self, subject: Subject, *, connection: int, protocol: str, host: str, port: int,
                        address: str, outcome: str, reason: str) -> AuditRecord:
        return self._append("network.connect", subject, {
            "connection": connection, "protocol": protocol, "host": host, "port": port, "address": address,
            "outcome": outcome, "reason": reason,
        })

    def network_closed(self, subject: Subject, *, connection: int, host: str, port: int, address: str,
                       sent_bytes: int, received_bytes: int, duration_ms: int, ended_by: str) -> AuditRecord:
        return self._append("network.closed", subject, {
            "connection": connection, "host": host, "port": port, "address": address, "bytes_sent": sent_bytes,
            "bytes_received": received_bytes, "duration_ms": duration_ms, "ended_by": ended_by,
        })

    def mcp_call(self, subject: Subject, *, server: str, instance: str, duration_ms: int, is_error: bool,
                 outcome: str) -> AuditRecord:
        """A call a sandboxed MCP server answered (or did not): which sandbox of it, how long, isError."""
        return self._append("mcp.call", subject, {"server": server, "instance": instance, "duration_ms": duration_ms,
                                                  "is_error": is_error, "outcome": outcome})

    def finished(self, subject: Subject, result: Result) -> list[AuditRecord]:
        """The outcome: a limit hit or a seccomp violation first when there was one, then ``finished``."""
        records = []
        limit = LIMIT_BY_STATUS.get(result.status)
        if limit is not None:
            records.append(self._append("execution.limit_hit", subject, {"limit": limit, "message": result.message}))
        for violation in result.seccomp_violations:  # the handler's own kill and its descendants'
            records.append(self._append("execution.seccomp_violation", subject, {
                "pid": violation.pid, "abi": violation.abi, "syscall": violation.syscall_name,
                "syscall_nr": violation.syscall_nr,
            }))
        if result.status is Status.SECCOMP_VIOLATION and not any(
                v.syscall_nr == result.seccomp_syscall_nr for v in result.seccomp_violations):
            records.append(self._append("execution.seccomp_violation", subject, {  # from the kernel's log
                "syscall": result.seccomp_syscall_name, "syscall_nr": result.seccomp_syscall_nr,
            }))
        records.append(self._append("execution.finished", subject, {
            "outcome": result.status.value, "message": result.message, "exit_code": result.exit_code,
            "signal": result.signal, "cpu_user_usec": result.cpu_user_usec,
            "cpu_system_usec": result.cpu_system_usec, "wall_time_ms": result.wall_time_ms,
            "memory_peak_bytes": result.memory_peak_bytes, "stdout_bytes": result.stdout_bytes,
            "stderr_bytes": result.stderr_bytes, "output_truncated": result.output_truncated,
            "setup_stage": result.setup_stage, "network_bytes_sent": result.network_bytes_sent,
            "network_bytes_received": result.network_bytes_received,
            "network_connections": result.network_connections,
        }))
        return records

    # -- runtime grants --------------------------------------------------------------------------------

    def runtime_grant(self, event: str, subject: Subject, details: Mapping[str, Any]) -> AuditRecord:
        """``grant.created``, ``grant.revoked`` (``details["by"]``: the admin) or ``grant.expired``; the subject's
        principal and tool are the grant's (whom it lets run what), not the caller's."""
        return self._append(event, subject, details)

    # -- the daemon ------------------------------------------------------------------------------------

    def daemon(self, event: str, details: Mapping[str, Any]) -> AuditRecord:
        """``daemon.started``, ``daemon.stopped``, ``daemon.reloaded``, ``daemon.reload_failed``,
        ``daemon.recovered``."""
        return self._append(f"daemon.{event}", Subject(), details)
