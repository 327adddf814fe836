# mypy: ignore-errors
import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Signal(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIGNAL_UNSPECIFIED: _ClassVar[Signal]
    INTERRUPT: _ClassVar[Signal]
    TERMINATE: _ClassVar[Signal]
    HANGUP: _ClassVar[Signal]
    KILL: _ClassVar[Signal]
    QUIT: _ClassVar[Signal]

class Stream(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STREAM_UNSPECIFIED: _ClassVar[Stream]
    STDOUT: _ClassVar[Stream]
    STDERR: _ClassVar[Stream]

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_UNSPECIFIED: _ClassVar[Status]
    OK: _ClassVar[Status]
    NONZERO_EXIT: _ClassVar[Status]
    SIGNALED: _ClassVar[Status]
    TIMEOUT: _ClassVar[Status]
    CPU_LIMIT: _ClassVar[Status]
    MEMORY_LIMIT: _ClassVar[Status]
    OUTPUT_LIMIT: _ClassVar[Status]
    SECCOMP_VIOLATION: _ClassVar[Status]
    CANCELLED: _ClassVar[Status]
    SETUP_FAILED: _ClassVar[Status]
    NETWORK_LIMIT: _ClassVar[Status]
SIGNAL_UNSPECIFIED: Signal
INTERRUPT: Signal
TERMINATE: Signal
HANGUP: Signal
KILL: Signal
QUIT: Signal
STREAM_UNSPECIFIED: Stream
STDOUT: Stream
STDERR: Stream
STATUS_UNSPECIFIED: Status
OK: Status
NONZERO_EXIT: Status
SIGNALED: Status
TIMEOUT: Status
CPU_LIMIT: Status
MEMORY_LIMIT: Status
OUTPUT_LIMIT: Status
SECCOMP_VIOLATION: Status
CANCELLED: Status
SETUP_FAILED: Status
NETWORK_LIMIT: Status

class Limits(_message.Message):
    __slots__ = ("memory_max_bytes", "cpu_time_ms", "cpu_share_percent", "wall_time_ms", "output_max_bytes", "pids_max", "file_size_max_bytes", "open_files_max", "tmpfs_size_bytes", "network_max_bytes")
    MEMORY_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    CPU_SHARE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    WALL_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    PIDS_MAX_FIELD_NUMBER: _ClassVar[int]
    FILE_SIZE_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    OPEN_FILES_MAX_FIELD_NUMBER: _ClassVar[int]
    TMPFS_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    NETWORK_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    memory_max_bytes: int
    cpu_time_ms: int
    cpu_share_percent: int
    wall_time_ms: int
    output_max_bytes: int
    pids_max: int
    file_size_max_bytes: int
    open_files_max: int
    tmpfs_size_bytes: int
    network_max_bytes: int
    def __init__(self, memory_max_bytes: _Optional[int] = ..., cpu_time_ms: _Optional[int] = ..., cpu_share_percent: _Optional[int] = ..., wall_time_ms: _Optional[int] = ..., output_max_bytes: _Optional[int] = ..., pids_max: _Optional[int] = ..., file_size_max_bytes: _Optional[int] = ..., open_files_max: _Optional[int] = ..., tmpfs_size_bytes: _Optional[int] = ..., network_max_bytes: _Optional[int] = ...) -> None: ...

class Command(_message.Message):
    __slots__ = ("argv", "profile", "allow_hosts")
    ARGV_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_HOSTS_FIELD_NUMBER: _ClassVar[int]
    argv: _containers.RepeatedScalarFieldContainer[str]
    profile: str
    allow_hosts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, argv: _Optional[_Iterable[str]] = ..., profile: _Optional[str] = ..., allow_hosts: _Optional[_Iterable[str]] = ...) -> None: ...

class ExecuteRequest(_message.Message):
    __slots__ = ("tool", "command", "params_json", "stdin", "limits", "request_id", "labels", "session_id")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TOOL_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    tool: str
    command: Command
    params_json: str
    stdin: bytes
    limits: Limits
    request_id: str
    labels: _containers.ScalarMap[str, str]
    session_id: str
    def __init__(self, tool: _Optional[str] = ..., command: _Optional[_Union[Command, _Mapping]] = ..., params_json: _Optional[str] = ..., stdin: _Optional[bytes] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., request_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., session_id: _Optional[str] = ...) -> None: ...

class ExecuteInput(_message.Message):
    __slots__ = ("request", "stdin", "stdin_eof", "signal")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    STDIN_EOF_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    request: ExecuteRequest
    stdin: bytes
    stdin_eof: bool
    signal: Signal
    def __init__(self, request: _Optional[_Union[ExecuteRequest, _Mapping]] = ..., stdin: _Optional[bytes] = ..., stdin_eof: _Optional[bool] = ..., signal: _Optional[_Union[Signal, str]] = ...) -> None: ...

class SessionCommand(_message.Message):
    __slots__ = ("profile", "allow_hosts")
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_HOSTS_FIELD_NUMBER: _ClassVar[int]
    profile: str
    allow_hosts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, profile: _Optional[str] = ..., allow_hosts: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateSessionRequest(_message.Message):
    __slots__ = ("tool", "command", "limits", "idle_timeout_ms", "max_lifetime_ms", "labels", "request_id")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TOOL_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_LIFETIME_MS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    tool: str
    command: SessionCommand
    limits: Limits
    idle_timeout_ms: int
    max_lifetime_ms: int
    labels: _containers.ScalarMap[str, str]
    request_id: str
    def __init__(self, tool: _Optional[str] = ..., command: _Optional[_Union[SessionCommand, _Mapping]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., idle_timeout_ms: _Optional[int] = ..., max_lifetime_ms: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("session_id", "tool", "principal", "limits", "uid", "created_at", "expires_at", "idle_timeout_ms", "labels", "executions", "running", "last_used_at")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_AT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    tool: str
    principal: str
    limits: Limits
    uid: int
    created_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    idle_timeout_ms: int
    labels: _containers.ScalarMap[str, str]
    executions: int
    running: int
    last_used_at: _timestamp_pb2.Timestamp
    def __init__(self, session_id: _Optional[str] = ..., tool: _Optional[str] = ..., principal: _Optional[str] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., uid: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., idle_timeout_ms: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., executions: _Optional[int] = ..., running: _Optional[int] = ..., last_used_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CloseSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class CloseSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[Session]
    def __init__(self, sessions: _Optional[_Iterable[_Union[Session, _Mapping]]] = ...) -> None: ...

class FileHeader(_message.Message):
    __slots__ = ("session_id", "path", "mode")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    path: str
    mode: int
    def __init__(self, session_id: _Optional[str] = ..., path: _Optional[str] = ..., mode: _Optional[int] = ...) -> None: ...

class PutFileInput(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: FileHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[FileHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class FileInfo(_message.Message):
    __slots__ = ("path", "size_bytes", "sha256", "mode")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    path: str
    size_bytes: int
    sha256: str
    mode: int
    def __init__(self, path: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., mode: _Optional[int] = ...) -> None: ...

class GetFileRequest(_message.Message):
    __slots__ = ("session_id", "path")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    path: str
    def __init__(self, session_id: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("data", "info")
    DATA_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    info: FileInfo
    def __init__(self, data: _Optional[bytes] = ..., info: _Optional[_Union[FileInfo, _Mapping]] = ...) -> None: ...

class ExecuteEvent(_message.Message):
    __slots__ = ("started", "output", "audit", "result")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    AUDIT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    started: Started
    output: Output
    audit: AuditEvent
    result: Result
    def __init__(self, started: _Optional[_Union[Started, _Mapping]] = ..., output: _Optional[_Union[Output, _Mapping]] = ..., audit: _Optional[_Union[AuditEvent, _Mapping]] = ..., result: _Optional[_Union[Result, _Mapping]] = ...) -> None: ...

class Started(_message.Message):
    __slots__ = ("execution_id", "limits", "tool", "seccomp_profile", "pid", "cgroup", "request_id", "uid")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    SECCOMP_PROFILE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    CGROUP_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    limits: Limits
    tool: str
    seccomp_profile: str
    pid: int
    cgroup: str
    request_id: str
    uid: int
    def __init__(self, execution_id: _Optional[str] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., tool: _Optional[str] = ..., seccomp_profile: _Optional[str] = ..., pid: _Optional[int] = ..., cgroup: _Optional[str] = ..., request_id: _Optional[str] = ..., uid: _Optional[int] = ...) -> None: ...

class Output(_message.Message):
    __slots__ = ("stream", "data")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    stream: Stream
    data: bytes
    def __init__(self, stream: _Optional[_Union[Stream, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class AuditEvent(_message.Message):
    __slots__ = ("time", "event", "principal", "tool", "execution_id", "outcome", "seq", "request_id", "details_json", "record_json")
    TIME_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    RECORD_JSON_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    event: str
    principal: str
    tool: str
    execution_id: str
    outcome: str
    seq: int
    request_id: str
    details_json: str
    record_json: str
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event: _Optional[str] = ..., principal: _Optional[str] = ..., tool: _Optional[str] = ..., execution_id: _Optional[str] = ..., outcome: _Optional[str] = ..., seq: _Optional[int] = ..., request_id: _Optional[str] = ..., details_json: _Optional[str] = ..., record_json: _Optional[str] = ...) -> None: ...

class SubscribeAuditRequest(_message.Message):
    __slots__ = ("principals", "tools", "events", "since", "last", "follow")
    PRINCIPALS_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    principals: _containers.RepeatedScalarFieldContainer[str]
    tools: _containers.RepeatedScalarFieldContainer[str]
    events: _containers.RepeatedScalarFieldContainer[str]
    since: _timestamp_pb2.Timestamp
    last: int
    follow: bool
    def __init__(self, principals: _Optional[_Iterable[str]] = ..., tools: _Optional[_Iterable[str]] = ..., events: _Optional[_Iterable[str]] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("cpu_user_usec", "cpu_system_usec", "wall_time_ms", "memory_peak_bytes", "stdout_bytes", "stderr_bytes", "network_bytes_sent", "network_bytes_received", "network_connections")
    CPU_USER_USEC_FIELD_NUMBER: _ClassVar[int]
    CPU_SYSTEM_USEC_FIELD_NUMBER: _ClassVar[int]
    WALL_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_PEAK_BYTES_FIELD_NUMBER: _ClassVar[int]
    STDOUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    STDERR_BYTES_FIELD_NUMBER: _ClassVar[int]
    NETWORK_BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    NETWORK_BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    NETWORK_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    cpu_user_usec: int
    cpu_system_usec: int
    wall_time_ms: int
    memory_peak_bytes: int
    stdout_bytes: int
    stderr_bytes: int
    network_bytes_sent: int
    network_bytes_received: int
    network_connections: int
    def __init__(self, cpu_user_usec: _Optional[int] = ..., cpu_system_usec: _Optional[int] = ..., wall_time_ms: _Optional[int] = ..., memory_peak_bytes: _Optional[int] = ..., stdout_bytes: _Optional[int] = ..., stderr_bytes: _Optional[int] = ..., network_bytes_sent: _Optional[int] = ..., network_bytes_received: _Optional[int] = ..., network_connections: _Optional[int] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("execution_id", "status", "message", "exit_code", "signal", "usage", "output_truncated", "seccomp_syscall_nr", "seccomp_syscall_name", "setup_stage", "setup_errno", "seccomp_violations", "mcp_server")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    SECCOMP_SYSCALL_NR_FIELD_NUMBER: _ClassVar[int]
    SECCOMP_SYSCALL_NAME_FIELD_NUMBER: _ClassVar[int]
    SETUP_STAGE_FIELD_NUMBER: _ClassVar[int]
    SETUP_ERRNO_FIELD_NUMBER: _ClassVar[int]
    SECCOMP_VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    MCP_SERVER_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    status: Status
    message: str
    exit_code: int
    signal: int
    usage: Usage
    output_truncated: bool
    seccomp_syscall_nr: int
    seccomp_syscall_name: str
    setup_stage: str
    setup_errno: int
    seccomp_violations: _containers.RepeatedCompositeFieldContainer[SeccompViolation]
    mcp_server: str
    def __init__(self, execution_id: _Optional[str] = ..., status: _Optional[_Union[Status, str]] = ..., message: _Optional[str] = ..., exit_code: _Optional[int] = ..., signal: _Optional[int] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., output_truncated: _Optional[bool] = ..., seccomp_syscall_nr: _Optional[int] = ..., seccomp_syscall_name: _Optional[str] = ..., setup_stage: _Optional[str] = ..., setup_errno: _Optional[int] = ..., seccomp_violations: _Optional[_Iterable[_Union[SeccompViolation, _Mapping]]] = ..., mcp_server: _Optional[str] = ...) -> None: ...

class SeccompViolation(_message.Message):
    __slots__ = ("pid", "abi", "syscall_nr", "syscall_name")
    PID_FIELD_NUMBER: _ClassVar[int]
    ABI_FIELD_NUMBER: _ClassVar[int]
    SYSCALL_NR_FIELD_NUMBER: _ClassVar[int]
    SYSCALL_NAME_FIELD_NUMBER: _ClassVar[int]
    pid: int
    abi: str
    syscall_nr: int
    syscall_name: str
    def __init__(self, pid: _Optional[int] = ..., abi: _Optional[str] = ..., syscall_nr: _Optional[int] = ..., syscall_name: _Optional[str] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("execution_id",)
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    def __init__(self, execution_id: _Optional[str] = ...) -> None: ...

class CancelResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListExecutionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RunningExecution(_message.Message):
    __slots__ = ("execution_id", "tool", "principal", "request_id", "labels", "started_at", "pid", "cpu_usec", "memory_peak_bytes")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    CPU_USEC_FIELD_NUMBER: _ClassVar[int]
    MEMORY_PEAK_BYTES_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    tool: str
    principal: str
    request_id: str
    labels: _containers.ScalarMap[str, str]
    started_at: _timestamp_pb2.Timestamp
    pid: int
    cpu_usec: int
    memory_peak_bytes: int
    def __init__(self, execution_id: _Optional[str] = ..., tool: _Optional[str] = ..., principal: _Optional[str] = ..., request_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., pid: _Optional[int] = ..., cpu_usec: _Optional[int] = ..., memory_peak_bytes: _Optional[int] = ...) -> None: ...

class ListExecutionsResponse(_message.Message):
    __slots__ = ("executions",)
    EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    executions: _containers.RepeatedCompositeFieldContainer[RunningExecution]
    def __init__(self, executions: _Optional[_Iterable[_Union[RunningExecution, _Mapping]]] = ...) -> None: ...

class ListToolsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BindInfo(_message.Message):
    __slots__ = ("target", "writable")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    WRITABLE_FIELD_NUMBER: _ClassVar[int]
    target: str
    writable: bool
    def __init__(self, target: _Optional[str] = ..., writable: _Optional[bool] = ...) -> None: ...

class Tool(_message.Message):
    __slots__ = ("name", "description", "params_schema_json", "limits", "seccomp_profile", "network", "binds", "network_allow", "mcp_server", "params_constraint_json", "classification")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_SCHEMA_JSON_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    SECCOMP_PROFILE_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    BINDS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_ALLOW_FIELD_NUMBER: _ClassVar[int]
    MCP_SERVER_FIELD_NUMBER: _ClassVar[int]
    PARAMS_CONSTRAINT_JSON_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    params_schema_json: str
    limits: Limits
    seccomp_profile: str
    network: str
    binds: _containers.RepeatedCompositeFieldContainer[BindInfo]
    network_allow: _containers.RepeatedScalarFieldContainer[str]
    mcp_server: str
    params_constraint_json: str
    classification: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., params_schema_json: _Optional[str] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., seccomp_profile: _Optional[str] = ..., network: _Optional[str] = ..., binds: _Optional[_Iterable[_Union[BindInfo, _Mapping]]] = ..., network_allow: _Optional[_Iterable[str]] = ..., mcp_server: _Optional[str] = ..., params_constraint_json: _Optional[str] = ..., classification: _Optional[str] = ...) -> None: ...

class ListToolsResponse(_message.Message):
    __slots__ = ("tools",)
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    tools: _containers.RepeatedCompositeFieldContainer[Tool]
    def __init__(self, tools: _Optional[_Iterable[_Union[Tool, _Mapping]]] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetInfoResponse(_message.Message):
    __slots__ = ("version", "instance", "cgroup_backend", "cgroup_mode", "cgroup_base", "kernel_release", "kernel_features", "default_limits", "max_concurrent_executions", "running_executions", "max_request_bytes", "draining", "started_at", "uptime_ms", "executions_total", "denied_total", "audit_log", "audit_last_seq", "principal", "roles", "config_source", "config_loaded_at", "pool")
    class KernelFeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bool
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bool] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    CGROUP_BACKEND_FIELD_NUMBER: _ClassVar[int]
    CGROUP_MODE_FIELD_NUMBER: _ClassVar[int]
    CGROUP_BASE_FIELD_NUMBER: _ClassVar[int]
    KERNEL_RELEASE_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FEATURES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_LIMITS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    UPTIME_MS_FIELD_NUMBER: _ClassVar[int]
    EXECUTIONS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    DENIED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    AUDIT_LOG_FIELD_NUMBER: _ClassVar[int]
    AUDIT_LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    CONFIG_SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    version: str
    instance: str
    cgroup_backend: str
    cgroup_mode: str
    cgroup_base: str
    kernel_release: str
    kernel_features: _containers.ScalarMap[str, bool]
    default_limits: Limits
    max_concurrent_executions: int
    running_executions: int
    max_request_bytes: int
    draining: bool
    started_at: _timestamp_pb2.Timestamp
    uptime_ms: int
    executions_total: int
    denied_total: int
    audit_log: str
    audit_last_seq: int
    principal: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    config_source: str
    config_loaded_at: _timestamp_pb2.Timestamp
    pool: PoolInfo
    def __init__(self, version: _Optional[str] = ..., instance: _Optional[str] = ..., cgroup_backend: _Optional[str] = ..., cgroup_mode: _Optional[str] = ..., cgroup_base: _Optional[str] = ..., kernel_release: _Optional[str] = ..., kernel_features: _Optional[_Mapping[str, bool]] = ..., default_limits: _Optional[_Union[Limits, _Mapping]] = ..., max_concurrent_executions: _Optional[int] = ..., running_executions: _Optional[int] = ..., max_request_bytes: _Optional[int] = ..., draining: _Optional[bool] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., uptime_ms: _Optional[int] = ..., executions_total: _Optional[int] = ..., denied_total: _Optional[int] = ..., audit_log: _Optional[str] = ..., audit_last_seq: _Optional[int] = ..., principal: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., config_source: _Optional[str] = ..., config_loaded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., pool: _Optional[_Union[PoolInfo, _Mapping]] = ...) -> None: ...

class PoolInfo(_message.Message):
    __slots__ = ("size", "kinds", "ready", "building", "hits", "misses", "built", "failed", "build_ms_mean")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    BUILDING_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    BUILT_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    BUILD_MS_MEAN_FIELD_NUMBER: _ClassVar[int]
    size: int
    kinds: int
    ready: int
    building: int
    hits: int
    misses: int
    built: int
    failed: int
    build_ms_mean: int
    def __init__(self, size: _Optional[int] = ..., kinds: _Optional[int] = ..., ready: _Optional[int] = ..., building: _Optional[int] = ..., hits: _Optional[int] = ..., misses: _Optional[int] = ..., built: _Optional[int] = ..., failed: _Optional[int] = ..., build_ms_mean: _Optional[int] = ...) -> None: ...

class GrantRequest(_message.Message):
    __slots__ = ("principal", "tool", "params_constraint_json", "expires_at", "ttl_ms", "reason", "request_id")
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    PARAMS_CONSTRAINT_JSON_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    principal: str
    tool: str
    params_constraint_json: str
    expires_at: _timestamp_pb2.Timestamp
    ttl_ms: int
    reason: str
    request_id: str
    def __init__(self, principal: _Optional[str] = ..., tool: _Optional[str] = ..., params_constraint_json: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ttl_ms: _Optional[int] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RuntimeGrant(_message.Message):
    __slots__ = ("grant_id", "principal", "tool", "params_constraint_json", "expires_at", "created_at", "created_by", "reason")
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    PARAMS_CONSTRAINT_JSON_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    grant_id: str
    principal: str
    tool: str
    params_constraint_json: str
    expires_at: _timestamp_pb2.Timestamp
    created_at: _timestamp_pb2.Timestamp
    created_by: str
    reason: str
    def __init__(self, grant_id: _Optional[str] = ..., principal: _Optional[str] = ..., tool: _Optional[str] = ..., params_constraint_json: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeRequest(_message.Message):
    __slots__ = ("grant_id", "reason", "request_id")
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    grant_id: str
    reason: str
    request_id: str
    def __init__(self, grant_id: _Optional[str] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RevokeResponse(_message.Message):
    __slots__ = ("grant",)
    GRANT_FIELD_NUMBER: _ClassVar[int]
    grant: RuntimeGrant
    def __init__(self, grant: _Optional[_Union[RuntimeGrant, _Mapping]] = ...) -> None: ...

class ListGrantsRequest(_message.Message):
    __slots__ = ("principal",)
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    principal: str
    def __init__(self, principal: _Optional[str] = ...) -> None: ...

class ListGrantsResponse(_message.Message):
    __slots__ = ("grants",)
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    grants: _containers.RepeatedCompositeFieldContainer[RuntimeGrant]
    def __init__(self, grants: _Optional[_Iterable[_Union[RuntimeGrant, _Mapping]]] = ...) -> None: ...

class FramedCall(_message.Message):
    __slots__ = ("metadata", "execute")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    EXECUTE_FIELD_NUMBER: _ClassVar[int]
    metadata: _containers.RepeatedCompositeFieldContainer[FramedMetadata]
    execute: ExecuteRequest
    def __init__(self, metadata: _Optional[_Iterable[_Union[FramedMetadata, _Mapping]]] = ..., execute: _Optional[_Union[ExecuteRequest, _Mapping]] = ...) -> None: ...

class FramedMetadata(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class FramedStatus(_message.Message):
    __slots__ = ("code", "details", "metadata")
    CODE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    code: int
    details: str
    metadata: _containers.RepeatedCompositeFieldContainer[FramedMetadata]
    def __init__(self, code: _Optional[int] = ..., details: _Optional[str] = ..., metadata: _Optional[_Iterable[_Union[FramedMetadata, _Mapping]]] = ...) -> None: ...

class FramedReply(_message.Message):
    __slots__ = ("event", "status")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    event: ExecuteEvent
    status: FramedStatus
    def __init__(self, event: _Optional[_Union[ExecuteEvent, _Mapping]] = ..., status: _Optional[_Union[FramedStatus, _Mapping]] = ...) -> None: ...
