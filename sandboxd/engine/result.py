"""What an execution reports: a stream of events and exactly one final :class:`Result`."""

from __future__ import annotations

import enum
import socket
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
    NETWORK_LIMIT = "NETWORK_LIMIT"


class Stream(enum.Enum):
    STDOUT = "STDOUT"
    STDERR = "STDERR"


@dataclass(frozen=True)
class NetworkReady:
    """The sandbox's door out (spec ``egress_listen_port``), before anything of it runs: a non-blocking socket
    listening inside its network namespace. The engine owns it and closes it once the sandbox is gone; a
    consumer that serves it (the egress proxy) takes its own ``dup()``."""

    execution_id: str
    listener: socket.socket


@dataclass(frozen=True)
class Started:
    execution_id: str
    pid: int  # host pid of the handler (pid 2 of its namespace; pid 1 is the sandbox's init)
    limits: Limits
    cgroup: str
    uid: int = 0  # the execution's own uid (and gid)


@dataclass(frozen=True)
class SeccompViolation:
    """One process or thread of the execution killed by its seccomp filter."""

    pid: int  # host pid (thread group) of the process
    abi: str  # the syscall ABI it called through: x86_64, x86 (i386), x32
    syscall_nr: int
    syscall_name: str


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
    seccomp_syscall_nr: int | None = None  # the handler's own kill (status SECCOMP_VIOLATION)
    seccomp_syscall_name: str = ""
    seccomp_violations: tuple[SeccompViolation, ...] = ()  # every kill, the handler's and its descendants'
    setup_stage: str = ""
    setup_errno: int = 0
    # The execution's traffic through the egress proxy; the engine knows none of it, the daemon fills it in.
    network_bytes_sent: int = 0
    network_bytes_received: int = 0
    network_connections: int = 0


Event = NetworkReady | Started | Output | Result
