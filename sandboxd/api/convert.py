"""Conversions between the engine's dataclasses and the API's protobuf messages — nothing else.

Enum names are shared on purpose: ``Status.MEMORY_LIMIT`` in :mod:`sandboxd.engine.result` is ``MEMORY_LIMIT``
in ``sandboxd.v1.Status``, so the mapping is by name and a new status cannot be silently misnumbered.
"""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2 as pb
from sandboxd.audit.record import AuditRecord
from sandboxd.base.limits import LIMIT_FIELDS, Limits
from sandboxd.engine.result import Output, Result, Started, Stream


def limits_to_proto(limits: Limits) -> pb.Limits:
    message = pb.Limits()
    for name in LIMIT_FIELDS:
        value = getattr(limits, name)
        if value is not None:
            setattr(message, name, value)
    return message


def limits_from_proto(message: pb.Limits) -> dict[str, int]:
    """The per-call limits a request sets (unset fields are absent: "keep the tool's")."""
    return {name: getattr(message, name) for name in LIMIT_FIELDS if message.HasField(name)}


def timestamp(unix_seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(unix_seconds * 1e9))
    return stamp


def started_event(event: Started, *, tool: str, profile: str, request_id: str) -> pb.ExecuteEvent:
    return pb.ExecuteEvent(
        started=pb.Started(
            execution_id=event.execution_id,
            limits=limits_to_proto(event.limits),
            tool=tool,
            seccomp_profile=profile,
            pid=event.pid,
            cgroup=event.cgroup,
            request_id=request_id,
            uid=event.uid,
        )
    )


def output_event(event: Output) -> pb.ExecuteEvent:
    stream = pb.STDOUT if event.stream is Stream.STDOUT else pb.STDERR
    return pb.ExecuteEvent(output=pb.Output(stream=stream, data=event.data))


def result_message(result: Result) -> pb.Result:
    message = pb.Result(
        execution_id=result.execution_id,
        status=result.status.value,  # the same names on both sides
        message=result.message,
        usage=pb.Usage(
            cpu_user_usec=result.cpu_user_usec,
            cpu_system_usec=result.cpu_system_usec,
            wall_time_ms=result.wall_time_ms,
            memory_peak_bytes=result.memory_peak_bytes,
            stdout_bytes=result.stdout_bytes,
            stderr_bytes=result.stderr_bytes,
            network_bytes_sent=result.network_bytes_sent,
            network_bytes_received=result.network_bytes_received,
            network_connections=result.network_connections,
        ),
        output_truncated=result.output_truncated,
        seccomp_syscall_name=result.seccomp_syscall_name,
        setup_stage=result.setup_stage,
        setup_errno=result.setup_errno,
        seccomp_violations=[
            pb.SeccompViolation(pid=v.pid, abi=v.abi, syscall_nr=v.syscall_nr, syscall_name=v.syscall_name)
            for v in result.seccomp_violations
        ],
    )
    if result.exit_code is not None:
        message.exit_code = result.exit_code
    if result.signal is not None:
        message.signal = result.signal
    if result.seccomp_syscall_nr is not None:
        message.seccomp_syscall_nr = result.seccomp_syscall_nr
    return message


def result_event(result: Result) -> pb.ExecuteEvent:
    return pb.ExecuteEvent(result=result_message(result))


def audit_event(record: AuditRecord) -> pb.AuditEvent:
    details = record.details
    message = pb.AuditEvent(
        event=record.event, principal=record.principal, tool=record.tool, execution_id=record.execution_id,
        outcome=str(details.get("outcome", "")), seq=record.seq, request_id=record.request_id,
        details_json=record.details_json, record_json=record.to_line()[:-1],
    )
    when = datetime.fromisoformat(record.time)  # not FromJsonString (strptime) nor FromDatetime: both slow
    message.time.seconds, message.time.nanos = int(when.timestamp()), when.microsecond * 1000
    return message
