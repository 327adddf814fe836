"""The verdict is decided from facts: the OOM counter, the wait status, our own kill reason."""

from __future__ import annotations

import signal

import pytest

from sandboxd.base.limits import Limits
from sandboxd.engine.cgroups.base import CgroupStats
from sandboxd.engine.result import Status
from sandboxd.engine.verdict import Facts, decide

LIMITS = Limits(cpu_time_ms=1000, wall_time_ms=5000, memory_max_bytes=1 << 26, output_max_bytes=100)
NO_STATS = CgroupStats(memory_peak_bytes=0, oom_kill_count=0, cpu_user_usec=0, cpu_system_usec=0)


def exited(code: int) -> int:
    return code << 8


def killed(sig: int) -> int:
    return sig


def facts(wait_status: int | None, *, kill: Status | None = None, stats: CgroupStats = NO_STATS) -> Facts:
    return Facts(kill_reason=kill, wait_status=wait_status, stats=stats, limits=LIMITS)


def test_exit_zero_is_ok() -> None:
    verdict = decide(facts(exited(0)))
    assert (verdict.status, verdict.exit_code, verdict.signal) == (Status.OK, 0, None)


def test_nonzero_exit() -> None:
    verdict = decide(facts(exited(3)))
    assert (verdict.status, verdict.exit_code) == (Status.NONZERO_EXIT, 3)


def test_exit_137_without_oom_kill_is_just_an_exit_code() -> None:
    assert decide(facts(exited(137))).status is Status.NONZERO_EXIT


def test_oom_counter_means_memory_limit_whatever_the_exit() -> None:
    stats = CgroupStats(memory_peak_bytes=1 << 26, oom_kill_count=1, cpu_user_usec=0, cpu_system_usec=0)
    for wait_status in (killed(signal.SIGKILL), exited(1), exited(0)):
        assert decide(facts(wait_status, stats=stats)).status is Status.MEMORY_LIMIT


@pytest.mark.parametrize("reason", [Status.TIMEOUT, Status.OUTPUT_LIMIT, Status.CANCELLED, Status.CPU_LIMIT])
def test_our_kill_reason_wins(reason: Status) -> None:
    verdict = decide(facts(killed(signal.SIGKILL), kill=reason))
    assert verdict.status is reason
    assert verdict.signal == signal.SIGKILL


def test_sigsys_is_a_seccomp_violation() -> None:
    verdict = decide(facts(killed(signal.SIGSYS)))
    assert (verdict.status, verdict.signal) == (Status.SECCOMP_VIOLATION, signal.SIGSYS)


def test_sigxcpu_and_sigkill_past_the_budget_are_cpu_limit() -> None:
    assert decide(facts(killed(signal.SIGXCPU))).status is Status.CPU_LIMIT
    spent = CgroupStats(memory_peak_bytes=0, oom_kill_count=0, cpu_user_usec=900_000, cpu_system_usec=100_000)
    assert decide(facts(killed(signal.SIGKILL), stats=spent)).status is Status.CPU_LIMIT


def test_sigkill_under_the_budget_is_signaled() -> None:
    verdict = decide(facts(killed(signal.SIGKILL)))
    assert (verdict.status, verdict.signal) == (Status.SIGNALED, signal.SIGKILL)
    assert "SIGKILL" in verdict.message


def test_file_size_limit_is_named() -> None:
    verdict = decide(facts(killed(signal.SIGXFSZ)))
    assert verdict.status is Status.SIGNALED
    assert "file size" in verdict.message
