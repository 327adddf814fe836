"""The watch's report as the executor reads it (``native/watch.c``): its last word, the exit line, and the
accounting its waiter read once the sandbox had ended."""

from __future__ import annotations

from sandboxd.engine.reports import _exit_report


def test_the_waiters_reads_in_order_and_its_removal() -> None:
    report = _exit_report(b"pid 7\ncgroup-read 1 -\ncgroup-read 0 34300a\ncgroup-read 2 \n"
                          b"seccomp 7 3221225534 59\nexit 0 10 20 4096 1 1\n")
    assert report.cgroup_reads == (b"40\n", None, b"")
    assert report.cgroup_removed
    assert (report.wait_status, report.cpu_user_usec, report.cpu_system_usec, report.maxrss_bytes) == (0, 10, 20, 4096)
    assert report.traced and report.seccomp_kills == ((7, 3221225534, 59),)


def test_a_session_sandbox_reports_no_reads_and_no_removal() -> None:
    report = _exit_report(b"pid 7\nexit 256 1 2 3 0 0\n")
    assert report.cgroup_reads == () and not report.cgroup_removed
    assert report.wait_status == 256 and not report.traced
