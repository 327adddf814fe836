"""The watch's report as the executor reads it (``native/watch.c``): the exit line with the accounting its
waiter read once the sandbox had ended, then whether the waiter removed the cgroup."""

from __future__ import annotations

import asyncio
import os

from sandboxd.engine.reports import ExitReport, ReportReader, SpawnHandle, _exit_report


def test_the_waiters_reads_in_order() -> None:
    report = _exit_report(b"pid 7\ncgroup-read 1 -\ncgroup-read 0 34300a\ncgroup-read 2 \n"
                          b"seccomp 7 3221225534 59\nexit 0 10 20 4096 1\n")
    assert report.cgroup_reads == (b"40\n", None, b"")
    assert (report.wait_status, report.cpu_user_usec, report.cpu_system_usec, report.maxrss_bytes) == (0, 10, 20, 4096)
    assert report.traced and report.seccomp_kills == ((7, 3221225534, 59),)


def test_a_session_sandbox_reports_no_reads() -> None:
    report = _exit_report(b"pid 7\nexit 256 1 2 3 0\n")
    assert report.cgroup_reads == ()
    assert report.wait_status == 256 and not report.traced


def read_reports(status: list[bytes], *, removal: bool) -> tuple[ExitReport, bool]:
    """The report and the removal a ReportReader takes from a real status pipe written in these pieces."""

    async def main() -> tuple[ExitReport, bool]:
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        os.close(err_w)
        handle = SpawnHandle("e1")
        ReportReader(handle, err_r, status_r, removal=removal)
        for piece in status:
            os.write(status_w, piece)
            await asyncio.sleep(0.01)  # read apart or together: the same report
        exited = await handle.exited
        if not handle.removed.done():
            os.close(status_w)  # the waiter's end
            return exited, await handle.removed
        os.close(status_w)
        return exited, handle.removed.result()

    return asyncio.run(main())


def test_the_removal_comes_after_the_exit_report() -> None:
    exited, removed = read_reports([b"pid 7\nexit 0 1 2 3 1\n", b"removed 1\n"], removal=True)
    assert exited.wait_status == 0 and removed


def test_a_waiter_that_ends_without_saying_removed_nothing() -> None:
    assert read_reports([b"pid 7\nexit 0 1 2 3 1\n"], removal=True)[1] is False
    assert read_reports([b"pid 7\nexit 0 1 2 3 1\nremoved 0\n"], removal=True)[1] is False


def test_without_a_removal_the_report_is_the_end() -> None:
    exited, removed = read_reports([b"pid 7\nexit 9 1 2 3 1\n"], removal=False)
    assert exited.wait_status == 9 and removed is False
