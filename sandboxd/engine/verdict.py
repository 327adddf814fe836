"""Decide an execution's one status from facts, never from guesses (an OOM is the cgroup's ``oom_kill``
counter, not an exit code of 137). Pure functions: unit-tested without a kernel."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from sandboxd.base.limits import Limits
from sandboxd.engine.cgroups.base import CgroupStats
from sandboxd.engine.result import Status


@dataclass(frozen=True)
class Facts:
    kill_reason: Status | None  # why *we* killed the cgroup, if we did (first reason wins)
    wait_status: int | None
    stats: CgroupStats
    limits: Limits
    # whether the handler's own death was a seccomp kill: None when unknown (the sandbox was not traced),
    # False when traced and no kill was recorded (a SIGSYS sent by someone is a signal like any other)
    handler_seccomp_kill: bool | None = None


@dataclass(frozen=True)
class Verdict:
    status: Status
    exit_code: int | None
    signal: int | None
    message: str


_KILL_MESSAGES = {
    Status.TIMEOUT: "wall time limit of {wall} ms reached",
    Status.CPU_LIMIT: "CPU time limit of {cpu} ms reached",
    Status.OUTPUT_LIMIT: "output limit of {out} bytes reached; output truncated",
    Status.CANCELLED: "cancelled",
    Status.MEMORY_LIMIT: "memory limit of {mem} bytes reached (OOM kill)",
    Status.NETWORK_LIMIT: "network limit of {net} bytes reached",
}


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def decide(facts: Facts) -> Verdict:
    exit_code = sig = None
    if facts.wait_status is not None:
        if os.WIFEXITED(facts.wait_status):
            exit_code = os.WEXITSTATUS(facts.wait_status)
        elif os.WIFSIGNALED(facts.wait_status):
            sig = os.WTERMSIG(facts.wait_status)
    limits = facts.limits
    fmt = {"wall": limits.wall_time_ms, "cpu": limits.cpu_time_ms, "out": limits.output_max_bytes,
           "mem": limits.memory_max_bytes, "net": limits.network_max_bytes}
    if facts.kill_reason is not None:
        return Verdict(facts.kill_reason, exit_code, sig, _KILL_MESSAGES[facts.kill_reason].format(**fmt))
    if facts.stats.oom_kill_count > 0:
        return Verdict(Status.MEMORY_LIMIT, exit_code, sig, _KILL_MESSAGES[Status.MEMORY_LIMIT].format(**fmt))
    if sig == signal.SIGSYS and facts.handler_seccomp_kill is not False:
        return Verdict(Status.SECCOMP_VIOLATION, None, sig, "killed by the seccomp filter")
    cpu_limit_reached = limits.cpu_time_ms is not None and facts.stats.cpu_usec >= limits.cpu_time_ms * 1000
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_limit_reached):
        return Verdict(Status.CPU_LIMIT, None, sig, _KILL_MESSAGES[Status.CPU_LIMIT].format(**fmt))
    if sig is not None:
        extra = " (file size limit)" if sig == signal.SIGXFSZ else ""
        return Verdict(Status.SIGNALED, None, sig, f"killed by {_signame(sig)}{extra}")
    if exit_code is None:
        return Verdict(Status.SIGNALED, None, None, "the handler ended without a wait status")
    if exit_code == 0:
        return Verdict(Status.OK, 0, None, "exited 0")
    return Verdict(Status.NONZERO_EXIT, exit_code, None, f"exited {exit_code}")
