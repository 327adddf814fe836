"""The audit log: hash-chained records appended from any thread, made durable by group commit.

::

    append (any thread; one lock)            the writer thread
      seq, time, prev, hash assigned           wait until a queued line is awaited, or COMMIT_DELAY_S old
      line queued  ─────────────────────────▶  take ALL of them: one write(), one fsync()
      record published to the hub              on_fsync(seconds)
      returns the record at once               every taken seq is durable: wake its waiters
                                               file ≥ rotate_bytes: rename it, start a new one, expire
    await wait_durable(seq)  ◀─────────────────┘

Seq order is chain order because both are assigned under the same lock, and lines reach the file in the
order they were queued. A commit waits for a reason: someone waits for a queued record to be durable (a
Result, a refusal, a flush), or the oldest queued record is COMMIT_DELAY_S old — so an execution's records
(request, decision, start, outcome: a few ms apart) go to disk in one fsync, the outcome's, instead of one each.
A write or fsync error (ENOSPC, EIO) breaks the log for good: every waiter, present and future, gets
:class:`AuditUnavailable`, append refuses, and the daemon refuses executions (fail closed) until it restarts —
whereupon :meth:`AuditLog.open` repairs the torn tail such a failure can leave.

Files: the active ``audit.log``, rotated ones ``audit.log.<first seq, 12 digits>`` beside it (see
:mod:`sandboxd.audit.reader`). The chain runs through them: a new file's first ``prev`` is the hash of the
old file's last record.
"""

from __future__ import annotations

import asyncio
import errno
import heapq
import itertools
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from sandboxd.audit.hub import AuditHub, Subscription
from sandboxd.audit.reader import first_line, good_tail, open_for_reading, rotated_files, rotated_path, seq_range
from sandboxd.audit.record import ZERO_HASH, AuditRecord, MalformedRecord, format_time
from sandboxd.base.errors import SandboxError

log = logging.getLogger(__name__)

_DAY_S = 86_400
_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
_REMOVED_PREFIX_CHARS = 200
STALLED_COMMIT_S = 30.0  # a write+fsync this long means a dying disk: healthy() says so
# How long a record nobody waits for may stay queued: it is written and fsynced with what follows within this
# (an execution's records are a few ms apart), at the latest this much after it was appended.
COMMIT_DELAY_S = 0.01


class AuditUnavailable(SandboxError):
    """The audit log cannot take or keep records; nothing that must be audited may go ahead."""

    reason = "AUDIT_UNAVAILABLE"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_Waiter = tuple[int, int, asyncio.AbstractEventLoop, asyncio.Future[None]]


class _Queued(NamedTuple):
    """A record's line waiting for the writer, with what its commit makes durable."""

    seq: int
    hash: str
    line: bytes


def _wake(waiters: list[_Waiter], error: str | None) -> None:
    """Resolve the waiters' futures in their loops: one call_soon_threadsafe per loop, not per waiter."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for _, _, loop, future in waiters:
        by_loop.setdefault(loop, []).append(future)
    for loop, futures in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, futures, error)
        except RuntimeError:  # that loop is closed; nobody waits any more
            pass


def _settle(futures: list[asyncio.Future[None]], error: str | None) -> None:
    for future in futures:
        if future.done():  # its waiter was cancelled
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(AuditUnavailable(error))


class AuditLog:
    """Open one with :meth:`open`; ``hub`` carries appended records to live subscribers."""

    def __init__(self, path: Path, fd: int, *, hmac_key: bytes | None, rotate_bytes: int,
                 retention_days: int | None, on_fsync: Callable[[float], None] | None,
                 clock: Callable[[], float], last: AuditRecord | None, active_first_seq: int | None) -> None:
        self.on_fsync = on_fsync  # runs in the writer thread before the records are marked durable: be quick
        self.hub = AuditHub(on_drop=self._subscriber_dropped)
        self.repaired: dict[str, Any] | None = None
        self._path = path
        self._fd = fd
        self._key = hmac_key
        self._rotate_bytes = rotate_bytes
        self._retention_days = retention_days
        self._clock = clock
        self._active_first_seq = active_first_seq
        self._active_size = os.fstat(fd).st_size
        # The chain lock: seq, prev and the queue of lines for the writer.
        self._lock = threading.Lock()
        self._has_pending = threading.Condition(self._lock)
        self._writer_waits = False  # the writer sleeps on _has_pending: only then must an append wake it
        self._pending: list[_Queued] = []
        self._pending_since = 0.0  # monotonic time the oldest queued line was appended
        self._awaited_seq = 0  # the highest seq someone waits to see durable: a commit is due once it is queued
        self._last_seq = last.seq if last is not None else 0
        self._last_hash = last.hash if last is not None else ZERO_HASH
        self._closing = False
        self._refusal: str | None = None  # why append refuses: closed, or broken
        # What is on disk, and who waits for more.
        self._durable = threading.Condition()
        self._durable_seq = self._last_seq
        self._durable_hash = self._last_hash
        self._broken: str | None = None
        self._waiters: list[_Waiter] = []
        self._waiter_ids = itertools.count()
        self._commit_started: float | None = None  # monotonic time of the commit in progress
        self._expire_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)

    @classmethod
    def open(cls, path: Path, *, hmac_key: bytes | None, rotate_bytes: int, retention_days: int | None,
             on_fsync: Callable[[float], None] | None = None, clock: Callable[[], float] = time.time) -> AuditLog:
        """Open (or create) the active file, repair a torn tail, continue the chain, start the writer."""
        if rotate_bytes < 1:
            raise ValueError(f"rotate_bytes must be positive, got {rotate_bytes}")
        path = Path(path)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            created = not os.path.lexists(path)
            fd = os.open(path, _OPEN_FLAGS | os.O_CREAT, 0o600)
        except OSError as exc:
            raise AuditUnavailable(f"{path}: cannot open the audit log: {exc.strerror}") from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise AuditUnavailable(f"{path}: the audit log must be a regular file")
            last, active_first_seq, repaired = _recover(fd, path, hmac_key)
            os.fsync(fd)  # what a crashed daemon left in the page cache is on disk before we build on it
            if created:
                _fsync_dir(path.parent)
            audit = cls(path, fd, hmac_key=hmac_key, rotate_bytes=rotate_bytes, retention_days=retention_days,
                        on_fsync=on_fsync, clock=clock, last=last, active_first_seq=active_first_seq)
        except OSError as exc:
            os.close(fd)
            raise AuditUnavailable(f"{path}: cannot recover the audit log: {exc.strerror}") from exc
        except BaseException:
            os.close(fd)
            raise
        audit._thread.start()
        try:
            if repaired is not None:
                audit.repaired = repaired
                log.warning("audit log %s: cut a torn last line of %d bytes", path, repaired["bytes_removed"])
                audit.append("audit.repaired", details=repaired)
            audit.expire_old_files()
        except BaseException:
            audit.close()
            raise
        return audit

    # -- appending -------------------------------------------------------------------------------------

    def append(self, event: str, *, principal: str = "", tool: str = "", execution_id: str = "",
               request_id: str = "", details: Mapping[str, Any] | None = None) -> AuditRecord:
        """Chain, queue and publish one record; returns at once. Raises AuditUnavailable once broken or closed."""
        with self._lock:
            if self._refusal is not None:
                raise AuditUnavailable(self._refusal)
            record = AuditRecord.create(
                seq=self._last_seq + 1, unix_time_s=self._clock(), event=event, prev=self._last_hash,
                key=self._key, principal=principal, tool=tool, execution_id=execution_id,
                request_id=request_id, details=details,
            )
            self._pending.append(_Queued(record.seq, record.hash, record.to_line().encode()))
            self._last_seq, self._last_hash = record.seq, record.hash
            if len(self._pending) == 1:  # the writer's clock for it starts: wake it if it sleeps untimed
                self._pending_since = time.monotonic()
                if self._writer_waits:
                    self._has_pending.notify()
            self.hub.publish(record)  # under the lock, so subscribers see seq order
        return record

    async def wait_durable(self, seq: int) -> None:
        """Return once record ``seq`` (and so every record before it) is fsynced; AuditUnavailable if broken."""
        with self._durable:
            if self._broken is not None:
                raise AuditUnavailable(self._broken)
            if seq <= self._durable_seq:
                return
            if seq > self._last_seq:
                raise ValueError(f"audit seq {seq} was never appended (the last is {self._last_seq})")
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()
            heapq.heappush(self._waiters, (seq, next(self._waiter_ids), loop, future))
        self._await_seq(seq)
        await future

    def flush(self, timeout_s: float) -> None:
        """Block until every record appended so far is durable (shutdown, tests)."""
        target = self._last_seq
        self._await_seq(target)
        with self._durable:
            done = self._durable.wait_for(lambda: self._broken is not None or self._durable_seq >= target, timeout_s)
            if self._broken is not None:
                raise AuditUnavailable(self._broken)
        if not done:
            raise AuditUnavailable(f"{self._path}: seq {target} is not on disk after {timeout_s}s", temporary=True)

    def _await_seq(self, seq: int) -> None:
        """Someone waits for ``seq`` to be durable: its commit is due now."""
        with self._lock:
            if seq > self._awaited_seq:
                self._awaited_seq = seq
                if self._writer_waits:
                    self._has_pending.notify()

    def close(self) -> None:
        """Write what is queued (and what is appended meanwhile), stop the writer, close the file. Idempotent."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._has_pending.notify()
        self._thread.join()
        os.close(self._fd)

    # -- health --------------------------------------------------------------------------------------

    def check_writable(self) -> None:
        """Raise AuditUnavailable when the log is broken or closed, so nothing unrecordable is started."""
        refusal = self._refusal
        if refusal is not None:
            raise AuditUnavailable(refusal)

    def healthy(self) -> bool:
        """For the watchdog: writable, the writer alive, and no commit stuck in write/fsync for long."""
        started = self._commit_started
        stalled = started is not None and time.monotonic() - started > STALLED_COMMIT_S
        return self._refusal is None and self._thread.is_alive() and not stalled

    # -- what is there ---------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def durable_seq(self) -> int:
        return self._durable_seq

    def durable_tip(self) -> tuple[int, str]:
        """The seq and hash of the last record on disk (``(0, ZERO_HASH)`` for an empty log): what an anchor
        ships (see :mod:`sandboxd.audit.anchor`)."""
        with self._durable:
            return self._durable_seq, self._durable_hash

    def files(self) -> list[Path]:
        """Rotated files in chain order, then the active one."""
        return [*rotated_files(self._path), self._path]

    def fileno(self) -> int:
        """The active file's descriptor (it changes at each rotation)."""
        return self._fd

    # -- the writer thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._commit_loop()
        except BaseException as exc:  # a bug must not leave waiters hanging: fail closed like an I/O error
            log.exception("the audit writer thread failed")
            self._fail(f"{self._path}: the audit writer thread failed: {exc!r}")

    def _commit_loop(self) -> None:
        while True:
            with self._lock:
                while not self._closing and (wait_s := self._until_commit_s()) != 0.0:
                    self._writer_waits = True
                    self._has_pending.wait(wait_s)
                    self._writer_waits = False
                batch, self._pending = self._pending, []
                if not batch:  # closing, and all written
                    self._refusal = self._refusal or f"{self._path}: the audit log is closed"
                    return
            self._commit_started = time.monotonic()
            try:
                fsync_s = self._commit(batch)
                self._report_fsync(fsync_s)
                rotate = self._active_size >= self._rotate_bytes
                if rotate:  # before the waiters wake: whoever saw its record durable finds the files settled
                    self._rotate()
            except OSError as exc:
                self._fail(f"{self._path}: cannot write or rotate the audit log: {exc.strerror}"
                           + (f" ({exc.filename})" if exc.filename else ""))
                return
            self._mark_durable(batch[-1])
            self._commit_started = None
            if rotate:
                try:
                    self.expire_old_files()
                except SandboxError as error:
                    log.error("audit retention: %s", error.message)

    def _until_commit_s(self) -> float | None:
        """Under the chain lock: 0.0 once a commit is due, else how long until it is (None: nothing queued)."""
        if not self._pending:
            return None
        if self._awaited_seq >= self._pending[0].seq:
            return 0.0
        return max(0.0, self._pending_since + COMMIT_DELAY_S - time.monotonic())

    def _report_fsync(self, fsync_s: float) -> None:
        if self.on_fsync is not None:
            try:
                self.on_fsync(fsync_s)
            except Exception:
                log.exception("audit on_fsync callback failed")

    def _commit(self, batch: list[_Queued]) -> float:
        """One write of every line taken, one fsync; returns the fsync's duration."""
        data = memoryview(b"".join(queued.line for queued in batch))
        if self._active_first_seq is None:
            self._active_first_seq = batch[0].seq
        written = 0
        while written < len(data):
            written += os.write(self._fd, data[written:])
        started = time.perf_counter()
        os.fsync(self._fd)
        fsync_s = time.perf_counter() - started
        self._active_size += len(data)
        return fsync_s

    def _mark_durable(self, last: _Queued) -> None:
        ready = []
        seq = last.seq
        with self._durable:
            self._durable_seq, self._durable_hash = seq, last.hash
            while self._waiters and self._waiters[0][0] <= seq:
                ready.append(heapq.heappop(self._waiters))
            self._durable.notify_all()
        _wake(ready, None)

    def _fail(self, message: str) -> None:
        with self._durable:
            self._broken = message
            waiters, self._waiters = self._waiters, []
            self._durable.notify_all()
        with self._lock:
            self._refusal = message
            self._pending = []
        log.error("audit log unavailable, executions are refused until sandboxd restarts: %s", message)
        _wake(waiters, message)

    def _rotate(self) -> None:
        """Rename the full active file after its first seq and start an empty one (the commit just fsynced)."""
        if self._active_first_seq is None:
            return
        target = rotated_path(self._path, self._active_first_seq)
        if os.path.lexists(target):  # rename() would silently replace a file of the chain
            raise FileExistsError(errno.EEXIST, "a rotated audit file of that name exists already", str(target))
        os.rename(self._path, target)
        new_fd = os.open(self._path, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, 0o600)
        old_fd, self._fd = self._fd, new_fd
        os.close(old_fd)
        _fsync_dir(self._path.parent)  # both the rename and the new file
        self._active_first_seq = None
        self._active_size = 0
        log.info("audit log rotated to %s", target.name)

    # -- retention -------------------------------------------------------------------------------------

    def expire_old_files(self) -> list[Path]:
        """Delete rotated files last modified more than ``retention_days`` ago, each audited as
        ``audit.expired``. Only from the oldest end: what is kept stays one unbroken chain."""
        if self._retention_days is None:
            return []
        cutoff_s = self._clock() - self._retention_days * _DAY_S
        removed: list[Path] = []
        if not self._expire_lock.acquire(blocking=False):
            return removed  # another thread is expiring right now
        try:
            for path in rotated_files(self._path):
                try:
                    mtime_s = os.stat(path, follow_symlinks=False).st_mtime
                    if mtime_s >= cutoff_s:
                        break
                    first_seq, last_seq = seq_range(path)
                    os.unlink(path)
                    _fsync_dir(path.parent)
                except OSError as exc:
                    log.error("audit retention: cannot expire %s: %s", path, exc.strerror)
                    break
                self.append("audit.expired", details={"file": str(path), "first_seq": first_seq,
                                                      "last_seq": last_seq, "mtime": format_time(mtime_s)})
                removed.append(path)
        finally:
            self._expire_lock.release()
        return removed

    def _subscriber_dropped(self, subscription: Subscription) -> None:
        record_filter = subscription.record_filter
        try:
            self.append("audit.subscriber_dropped", details={
                "missed": subscription.missed, "first_missed_seq": subscription.first_missed_seq,
                "queue_size": subscription.queue_size,
                "filter": {"principals": list(record_filter.principals), "tools": list(record_filter.tools),
                           "events": list(record_filter.events)},
            })
        except SandboxError as error:
            log.error("cannot audit a dropped subscriber: %s", error.message)


# -- recovery at open ----------------------------------------------------------------------------------


def _damaged(path: Path, why: str) -> AuditUnavailable:
    return AuditUnavailable(f"{path}: {why}: the chain cannot continue from it; check the files with "
                            "`sandboxctl audit verify` (a changed audit.key_file?), then move them aside")


def _recover(fd: int, path: Path, key: bytes | None) -> tuple[AuditRecord | None, int | None, dict[str, Any] | None]:
    """Cut a torn tail off the active file; return the record the chain continues from, the seq of the
    active file's first record (``None`` when it is empty) and the details of the repair, if any."""
    size = os.fstat(fd).st_size
    try:
        tail = good_tail(fd, key)
    except MalformedRecord as exc:
        raise _damaged(path, str(exc)) from None
    repaired = None
    if tail.end < size:
        prefix = os.pread(fd, _REMOVED_PREFIX_CHARS * 4, tail.end).decode("utf-8", "backslashreplace")
        os.ftruncate(fd, tail.end)
        repaired = {"file": str(path), "bytes_removed": size - tail.end,
                    "removed_text_prefix": prefix[:_REMOVED_PREFIX_CHARS]}
    if tail.last is not None:
        try:
            first_seq = AuditRecord.from_line(first_line(path)).seq
        except MalformedRecord as exc:
            raise _damaged(path, f"the first line is not an audit record ({exc})") from None
        return tail.last, first_seq, repaired
    rotated = rotated_files(path)
    if not rotated:
        return None, None, repaired
    newest_fd = open_for_reading(rotated[-1])
    try:
        newest = good_tail(newest_fd, key)
        intact = newest.last is not None and newest.end == os.fstat(newest_fd).st_size
    except MalformedRecord:
        intact = False
    finally:
        os.close(newest_fd)
    if not intact:
        raise _damaged(rotated[-1], "its last record does not verify")
    return newest.last, None, repaired
