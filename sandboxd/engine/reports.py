"""One sandbox's two report pipes, read on the daemon's event loop — no process in between.

- The **error pipe** (close-on-exec in every process of the sandbox): one ``stage\\0errno\\0message`` record
  when a step before ``execve`` fails; EOF with nothing read means the handler passed ``execve`` and the init
  dropped its privileges (CPython's ``_posixsubprocess`` pattern).
- The **status pipe**, written by the waiter's watch (``native/watch.c``): ``pid P`` once the handler exists,
  ``seccomp TGID ARCH NR`` / ``seccomp-more N`` per kill, and last ``exit W U S R T``.

``started`` resolves with the handler's pid (or the setup failure) once the error pipe's end and the pid are
in; ``exited`` with the :class:`ExitReport` at the ``exit`` line (or, if the watch died first, at the status
pipe's end: the wait status unknown).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field

READ_BYTES = 65536


@dataclass(frozen=True)
class SetupFailure:
    stage: str
    errno: int
    message: str


@dataclass(frozen=True)
class ExitReport:
    wait_status: int | None  # None: the watch died before it could report
    cpu_user_usec: int
    cpu_system_usec: int
    maxrss_bytes: int
    traced: bool = False  # every process of the sandbox was traced: seccomp_kills is complete
    seccomp_kills: tuple[tuple[int, int, int], ...] = ()  # (host pid, AUDIT_ARCH, syscall nr) of each kill
    seccomp_kills_more: int = 0  # killed processes past those named (the watch names a bounded number)
    # A sandbox alone in its cgroup: the accounting files' contents (the plan's cgroup_final_reads, in order;
    # None: not read), read once everything in it had ended.
    cgroup_reads: tuple[bytes | None, ...] = ()


@dataclass
class SpawnHandle:
    execution_id: str
    started: asyncio.Future[int | SetupFailure] = field(default_factory=asyncio.Future)
    exited: asyncio.Future[ExitReport] = field(default_factory=asyncio.Future)
    # After the exit report: whether the waiter removed the cgroup (its plan's cgroup_removal; False when it
    # names none, when something was left in it, or when the waiter ended without saying).
    removed: asyncio.Future[bool] = field(default_factory=asyncio.Future)

    def fail(self, error: BaseException) -> None:
        for future in (self.started, self.exited):
            if not future.done():
                future.set_exception(error)
        if not self.removed.done():
            self.removed.set_result(False)


class ReportReader:
    """Reads ``err_r`` and ``status_r`` (ours, non-blocking from here on) into ``handle``; closes both once
    the sandbox has ended and, when its waiter removes the cgroup, once it has said how that went — or on
    :meth:`close`."""

    def __init__(self, handle: SpawnHandle, err_r: int, status_r: int, *, removal: bool) -> None:
        """``removal``: the waiter removes the cgroup after its exit report and says whether ("removed N")."""
        self.handle = handle
        self._removal = removal
        self._err_r = err_r
        self._status_r = status_r
        self._error = b""
        self._error_done = False
        self._status = b""
        self._handler_pid: int | None = None
        self._loop = asyncio.get_running_loop()
        for fd, on_readable in ((err_r, self._on_error), (status_r, self._on_status)):
            os.set_blocking(fd, False)
            self._loop.add_reader(fd, on_readable)

    def close(self) -> None:
        for fd in (self._err_r, self._status_r):
            if fd >= 0:
                self._loop.remove_reader(fd)
                os.close(fd)
        self._err_r = self._status_r = -1

    def _read(self, fd: int) -> bytes | None:
        """What is there (b"": the end), None: nothing yet."""
        try:
            return os.read(fd, READ_BYTES)
        except BlockingIOError:
            return None

    def _on_error(self) -> None:
        data = self._read(self._err_r)
        if data is None:
            return
        self._error += data
        if not data:
            self._end_error()
        self._announce()

    def _end_error(self) -> None:
        self._error_done = True
        self._loop.remove_reader(self._err_r)
        os.close(self._err_r)
        self._err_r = -1

    def _on_status(self) -> None:
        data = self._read(self._status_r)
        if data is None:
            return
        self._status += data
        if self._handler_pid is None and self._status.startswith(b"pid ") and b"\n" in self._status:
            self._handler_pid = int(self._status.split(b"\n", 1)[0].split()[1])
            self._announce()
        if not self.handle.exited.done() and (
                not data or self._status.startswith(b"exit ") or b"\nexit " in self._status):
            # The watch's "exit" line (one write below PIPE_BUF: whole when there), written once everything of
            # the sandbox is gone: reported at once, not after the cgroup's removal nor the waiter's own exit.
            self._finish()
        if self.handle.exited.done() and (not data or not self._removal or b"\nremoved " in self._status):
            # its last word: "removed N" once the cgroup's removal is over — or none (the waiter's end)
            self.handle.removed.set_result(self._removal and b"\nremoved 1\n" in self._status)
            self.close()

    def _announce(self) -> None:
        started = self.handle.started
        if started.done() or not self._error_done:
            return
        if self._error:
            started.set_result(_setup_failure(self._error))
        elif self._handler_pid is not None:
            started.set_result(self._handler_pid)

    def _finish(self) -> None:
        if self._err_r >= 0:  # drain: every writer is gone once the sandbox has ended
            while chunk := self._read(self._err_r):
                self._error += chunk
            self._end_error()
        self._announce()  # the error pipe's end may only have been read just now
        if not self.handle.started.done():
            died = "the sandbox's setup process died before reporting"
            self.handle.started.set_result(SetupFailure("spawn", 0, died))
        self.handle.exited.set_result(_exit_report(self._status))


def _setup_failure(record: bytes) -> SetupFailure:
    parts = record.decode(errors="replace").split("\0", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return SetupFailure(parts[0], int(parts[1]), parts[2])
    return SetupFailure("spawn", 0, f"an unreadable setup failure report: {parts!r}"[:500])


def _exit_report(status: bytes) -> ExitReport:
    wait_status: int | None = None
    usage = (0, 0, 0)
    traced = False
    kills: list[tuple[int, int, int]] = []
    more = 0
    reads: dict[int, bytes | None] = {}
    for line in status.decode(errors="replace").splitlines():
        parts = line.split()
        if parts[:1] == ["exit"]:
            wait_status, usage, traced = int(parts[1]), (int(parts[2]), int(parts[3]), int(parts[4])), parts[5] == "1"
        elif parts[:1] == ["seccomp"]:
            kills.append((int(parts[1]), int(parts[2]), int(parts[3])))
        elif parts[:1] == ["seccomp-more"]:
            more = int(parts[1])
        elif parts[:1] == ["cgroup-read"]:
            content = parts[2] if len(parts) > 2 else ""
            reads[int(parts[1])] = None if content == "-" else bytes.fromhex(content)
    return ExitReport(wait_status, *usage, traced, tuple(kills), more,
                      tuple(reads.get(index) for index in range(len(reads))))
