"""What an execution reports: a stream of events and exactly one final :class:`Result`."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sandboxd.base.limits import Limits


class Status(enum.Enum):
    """The verdict of one execution. Exactly one per execution."""

    OK = "OK"
    NONZERO_EXIT = "NONZERO_EXIT"
    SIGNALED = "SIGNALED"
    TIMEOUT = "TIMEOUT"
    CPU_LIMIT = "CPU_LIMIT"
    MEMORY_LIMIT = "MEMORY_LIMIT"
    OUTPUT_LIMIT = "OUTPUT_LIMIT"
    SECCOMP_VIOLATION = "SECCOMP_VIOLATION"
    CANCELLED = "CANCELLED"
    SETUP_FAILED = "SETUP_FAILED"


class Stream(enum.Enum):
    STDOUT = "STDOUT"
    STDERR = "STDERR"


@dataclass(frozen=True)
class Started:
    execution_id: str
    pid: int  # host pid of the handler (pid 1 of its namespace)
    limits: Limits
    cgroup: str


@dataclass(frozen=True)
class Output:
    execution_id: str
    stream: Stream
    data: bytes


@dataclass(frozen=True)
class Result:
    execution_id: str
    status: Status
    message: str
    exit_code: int | None = None
    signal: int | None = None
    cpu_user_usec: int = 0
    cpu_system_usec: int = 0
    wall_time_ms: int = 0
    memory_peak_bytes: int = 0
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    output_truncated: bool = False
    seccomp_syscall_nr: int | None = None
    seccomp_syscall_name: str = ""
    setup_stage: str = ""
    setup_errno: int = 0


Event = Started | Output | Result
