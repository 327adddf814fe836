"""AuditLog on real files with its real writer thread: the chain, durability, group commit, failing closed."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sandboxd.audit.record import ZERO_HASH, AuditRecord
from sandboxd.audit.verify import verify_files
from sandboxd.audit.writer import AuditLog, AuditUnavailable


def open_log(path: Path, **options: Any) -> AuditLog:
    settings: dict[str, Any] = {"hmac_key": None, "rotate_bytes": 1 << 30, "retention_days": None}
    settings.update(options)
    return AuditLog.open(path, **settings)


def lines(path: Path) -> list[AuditRecord]:
    return [AuditRecord.from_line(line) for line in path.read_bytes().splitlines(keepends=True)]


def test_creates_private_dir_and_file(tmp_path: Path) -> None:
    path = tmp_path / "new" / "audit.log"
    log = open_log(path)
    log.close()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert log.last_seq == 0 and path.read_bytes() == b""


def test_refuses_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "target").write_bytes(b"")
    (tmp_path / "audit.log").symlink_to(tmp_path / "target")
    with pytest.raises(AuditUnavailable, match="cannot open the audit log"):
        open_log(tmp_path / "audit.log")


def test_first_record_and_fields(tmp_path: Path) -> None:
    log = open_log(tmp_path / "audit.log", clock=lambda: 1_790_000_000.0)
    record = log.append("decision", principal="alice", tool="fmt", execution_id="e1", request_id="r1",
                        details={"outcome": "allowed"})
    log.close()
    assert record.seq == 1 and record.prev == ZERO_HASH and record.time == "2026-09-21T14:13:20.000000Z"
    assert lines(tmp_path / "audit.log") == [record]


def test_many_threads_one_chain_across_reopens(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = open_log(path)

    def writer(thread_no: int) -> None:
        for i in range(250):
            log.append("test.write", principal=f"t{thread_no}", details={"i": i})

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    assert verify_files([path], hmac_key=None).records == 2000

    again = open_log(path)
    record = again.append("test.after_reopen")
    again.close()
    records = lines(path)
    assert record.seq == 2001 and record.prev == records[1999].hash
    assert [r.seq for r in records] == list(range(1, 2002))
    report = verify_files([path], hmac_key=None)
    assert (report.records, report.first_seq, report.last_seq, report.starts_mid_chain) == (2001, 1, 2001, False)


def test_hmac_chain_continues_after_reopen(tmp_path: Path) -> None:
    key = os.urandom(32)
    path = tmp_path / "audit.log"
    for _ in range(3):
        log = open_log(path, hmac_key=key)
        log.append("test.one")
        log.close()
    assert verify_files([path], hmac_key=key).records == 3


def test_wait_durable_returns_only_after_the_fsync(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    fsynced = threading.Event()
    release = threading.Event()

    def on_fsync(seconds: float) -> None:  # runs after fsync, before the records are marked durable
        assert seconds >= 0
        fsynced.set()
        release.wait(5)

    log = open_log(path, on_fsync=on_fsync)

    async def scenario() -> None:
        record = log.append("test.durable", details={"n": 1})
        waiting = asyncio.create_task(log.wait_durable(record.seq))
        assert await asyncio.to_thread(fsynced.wait, 5)
        await asyncio.sleep(0.05)
        assert not waiting.done()  # written and fsynced, not yet reported durable
        release.set()
        await asyncio.wait_for(waiting, 5)
        with open(path, "rb") as other:  # a second descriptor sees the line
            assert other.read().decode() == record.to_line()

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        log.close()


def test_a_stalled_commit_is_unhealthy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sandboxd.audit.writer.STALLED_COMMIT_S", 0.05)
    stuck = threading.Event()
    release = threading.Event()

    def on_fsync(_: float) -> None:
        stuck.set()
        release.wait(5)

    log = open_log(tmp_path / "audit.log", on_fsync=on_fsync)
    try:
        assert log.healthy()
        log.append("test.stall")
        assert stuck.wait(5)
        time.sleep(0.1)
        assert not log.healthy()  # the watchdog stops pinging: systemd restarts a daemon on a dying disk
        release.set()
        log.flush(5)
        assert log.healthy()
    finally:
        release.set()
        log.close()


def test_group_commit_takes_far_fewer_fsyncs_than_records(tmp_path: Path) -> None:
    fsyncs: list[float] = []
    log = open_log(tmp_path / "audit.log", on_fsync=fsyncs.append)

    async def one(i: int) -> None:
        record = log.append("test.concurrent", details={"i": i})
        await log.wait_durable(record.seq)

    async def scenario() -> None:
        await asyncio.gather(*(one(i) for i in range(500)))

    asyncio.run(scenario())
    log.close()
    assert log.durable_seq == 500
    assert 1 <= len(fsyncs) < 50, len(fsyncs)
    assert verify_files([tmp_path / "audit.log"], hmac_key=None).records == 500


def test_wait_durable_from_threads_and_their_own_loops(tmp_path: Path) -> None:
    log = open_log(tmp_path / "audit.log")
    errors: list[BaseException] = []

    def worker() -> None:
        async def run() -> None:
            for _ in range(20):
                await log.wait_durable(log.append("test.x").seq)
        try:
            asyncio.run(run())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    assert errors == [] and log.durable_seq == 80


def test_flush_and_waits_on_old_or_unknown_seqs(tmp_path: Path) -> None:
    log = open_log(tmp_path / "audit.log")
    for _ in range(10):
        log.append("test.flush")
    log.flush(5)
    assert log.durable_seq == 10
    asyncio.run(log.wait_durable(0))
    asyncio.run(log.wait_durable(10))
    with pytest.raises(ValueError, match="never appended"):
        asyncio.run(log.wait_durable(11))
    log.close()


def test_close_is_idempotent_and_writes_what_is_queued(tmp_path: Path) -> None:
    log = open_log(tmp_path / "audit.log")
    for _ in range(100):
        log.append("test.close")
    assert log.healthy()
    log.check_writable()
    log.close()
    log.close()
    assert not log.healthy()
    assert len(lines(tmp_path / "audit.log")) == 100
    with pytest.raises(AuditUnavailable, match="closed"):
        log.append("test.too_late")


def test_a_write_error_fails_closed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = open_log(tmp_path / "audit.log")
    first = log.append("test.before")
    log.flush(5)
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, log.fileno())  # every write from now on fails with ENOSPC
    os.close(full)

    async def scenario() -> None:
        record = log.append("test.lost")
        with pytest.raises(AuditUnavailable, match="No space left on device") as raised:
            await log.wait_durable(record.seq)
        assert raised.value.reason == "AUDIT_UNAVAILABLE"
        with pytest.raises(AuditUnavailable):
            await log.wait_durable(first.seq)  # the log is broken: nothing is vouched for any more
        with pytest.raises(AuditUnavailable):
            log.append("test.after")
        with pytest.raises(AuditUnavailable, match="No space left"):
            log.check_writable()
        assert not log.healthy()

    asyncio.run(scenario())
    with pytest.raises(AuditUnavailable):
        log.flush(1)
    log.close()
    assert sum("audit log unavailable" in r.message for r in caplog.records) == 1  # logged once


def test_a_waiter_when_the_log_breaks_is_woken_with_the_error(tmp_path: Path) -> None:
    gate = threading.Event()
    log = open_log(tmp_path / "audit.log", on_fsync=lambda _: gate.wait(5))

    async def scenario() -> None:
        log.append("test.first")  # the writer now waits in on_fsync
        await asyncio.sleep(0.05)
        record = log.append("test.second")
        waiting = asyncio.create_task(log.wait_durable(record.seq))
        await asyncio.sleep(0.01)
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, log.fileno())
        os.close(full)
        gate.set()
        started = time.monotonic()
        with pytest.raises(AuditUnavailable):
            await asyncio.wait_for(waiting, 5)
        assert time.monotonic() - started < 1

    try:
        asyncio.run(scenario())
    finally:
        gate.set()
        log.close()


def test_records_nobody_waits_for_go_to_disk_with_the_next_awaited_one(tmp_path: Path, monkeypatch: Any) -> None:
    """An execution's records are a few ms apart and only its last is awaited (its Result): they are written
    and fsynced together when it is — one fsync, not one each — however long the delay for unawaited ones."""
    monkeypatch.setattr("sandboxd.audit.writer.COMMIT_DELAY_S", 3600.0)
    fsyncs: list[float] = []
    path = tmp_path / "audit.log"
    log = open_log(path, on_fsync=fsyncs.append)
    records = [log.append(event) for event in ("request.received", "decision", "execution.started")]
    last = log.append("execution.finished")
    asyncio.run(log.wait_durable(last.seq))  # due at once: it is awaited
    assert len(fsyncs) == 1
    assert lines(path) == [*records, last]
    log.close()


def test_a_record_nobody_waits_for_reaches_the_disk_within_the_delay(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr("sandboxd.audit.writer.COMMIT_DELAY_S", 0.05)
    path = tmp_path / "audit.log"
    log = open_log(path)
    record = log.append("config.reloaded")
    deadline = time.monotonic() + 10
    while log.durable_seq < record.seq:
        assert time.monotonic() < deadline, "a record nobody waited for was never committed"
        time.sleep(0.01)
    assert lines(path) == [record]
    log.close()
