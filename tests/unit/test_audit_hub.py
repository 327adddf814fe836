"""Live subscribers: each gets its matching records in order; a stuck one is dropped, never waited for."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from sandboxd.audit.hub import AuditHub, SubscriberDropped, Subscription
from sandboxd.audit.reader import RecordFilter, iter_records
from sandboxd.audit.record import AuditRecord
from sandboxd.audit.writer import AuditLog


def open_log(tmp_path: Path) -> AuditLog:
    return AuditLog.open(tmp_path / "audit.log", hmac_key=None, rotate_bytes=1 << 30, retention_days=None)


def test_a_reading_subscriber_gets_every_matching_record_in_order(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    events = ("execution.started", "execution.finished", "decision", "request.received")

    async def collect(subscription: Subscription, count: int) -> list[AuditRecord]:
        return [await anext(subscription) for _ in range(count)]

    async def scenario() -> tuple[list[AuditRecord], ...]:
        executions = log.hub.subscribe(RecordFilter(events=("execution.",)), queue_size=4096)
        tool_one = log.hub.subscribe(RecordFilter(tools=("t1",)), queue_size=4096)

        def append_all() -> list[AuditRecord]:
            return [log.append(events[i % 4], tool=f"t{i % 3}", details={"i": i}) for i in range(2000)]

        appending = asyncio.create_task(asyncio.to_thread(append_all))
        got_executions, got_tool_one = await asyncio.wait_for(
            asyncio.gather(collect(executions, 1000), collect(tool_one, 667)), 10)
        appended = await appending
        executions.close()
        tool_one.close()
        return appended, got_executions, got_tool_one

    appended, got_executions, got_tool_one = asyncio.run(scenario())
    log.close()
    assert got_executions == [r for r in appended if r.event.startswith("execution.")]
    assert got_tool_one == [r for r in appended if r.tool == "t1"]
    assert log.hub.subscriber_count == 0


def test_a_stuck_subscriber_is_dropped_with_its_missed_count(tmp_path: Path) -> None:
    log = open_log(tmp_path)

    async def scenario() -> list[float]:
        stuck = log.hub.subscribe(RecordFilter(events=("test.",)), queue_size=10)
        latencies: list[float] = []

        def append_many() -> None:
            for i in range(1000):
                started = time.perf_counter()
                log.append("test.event", details={"i": i})
                latencies.append(time.perf_counter() - started)
                if i % 100 == 0:
                    time.sleep(0.001)  # let the loop drain in several bursts

        await asyncio.to_thread(append_many)
        await asyncio.to_thread(log.flush, 5)
        for _ in range(3):
            await asyncio.sleep(0.01)  # the last drains and on_drop's own record
        assert stuck.dropped and stuck.missed == 990 and stuck.first_missed_seq == 11
        received = [await anext(stuck) for _ in range(10)]  # what fitted in its queue is still delivered
        assert [r.seq for r in received] == list(range(1, 11))
        with pytest.raises(SubscriberDropped) as dropped:
            await anext(stuck)
        assert (dropped.value.missed, dropped.value.first_missed_seq) == (990, 11)
        log.append("test.after_notice")
        await asyncio.sleep(0.01)
        assert stuck.missed == 990  # it noticed: the count is final
        return latencies

    latencies = asyncio.run(scenario())
    log.close()
    assert max(latencies) < 0.05 and sum(latencies) < 1.0  # appends never waited for the stuck reader
    dropped_records = [r for r in iter_records(log.files()) if r.event == "audit.subscriber_dropped"]
    assert len(dropped_records) == 1
    details = dropped_records[0].details
    assert details["first_missed_seq"] == 11 and details["queue_size"] == 10 and 1 <= details["missed"] <= 990
    assert details["filter"] == {"principals": [], "tools": [], "events": ["test."]}
    assert log.hub.subscriber_count == 0


def test_on_drop_is_called_once_and_the_dropped_subscriber_receives_nothing_more() -> None:
    calls: list[Subscription] = []
    hub = AuditHub(on_drop=calls.append)

    def record(seq: int) -> AuditRecord:
        return AuditRecord.create(seq=seq, unix_time_s=0, event="test.e", prev="0" * 64, key=None)

    async def scenario() -> Subscription:
        subscription = hub.subscribe(queue_size=2)
        for seq in range(1, 6):
            hub.publish(record(seq))
        await asyncio.sleep(0.01)
        hub.publish(record(6))
        await asyncio.sleep(0.01)
        return subscription

    subscription = asyncio.run(scenario())
    assert calls == [subscription]
    assert (subscription.missed, subscription.first_missed_seq) == (4, 3)


def test_close_ends_a_waiting_reader_and_unsubscribes(tmp_path: Path) -> None:
    log = open_log(tmp_path)

    async def scenario() -> list[AuditRecord]:
        subscription = log.hub.subscribe()
        reader = asyncio.create_task(_read_all(subscription))
        await asyncio.sleep(0.01)
        log.append("test.one")
        await asyncio.sleep(0.01)
        subscription.close()
        subscription.close()
        return await asyncio.wait_for(reader, 5)

    received = asyncio.run(scenario())
    log.close()
    assert [r.event for r in received] == ["test.one"]
    assert log.hub.subscriber_count == 0


async def _read_all(subscription: Subscription) -> list[AuditRecord]:
    return [record async for record in subscription]


def test_publishing_to_a_closed_loop_forgets_it(tmp_path: Path) -> None:
    log = open_log(tmp_path)

    async def subscribe_and_leave() -> None:
        log.hub.subscribe()  # never closed; its loop ends

    asyncio.run(subscribe_and_leave())
    log.append("test.nobody_listens")
    thread = threading.Thread(target=log.append, args=("test.from_thread",))
    thread.start()
    thread.join()
    assert log.hub.subscriber_count == 0
    log.close()


def test_queue_size_must_be_positive() -> None:
    async def scenario() -> None:
        with pytest.raises(ValueError, match="at least 1"):
            AuditHub().subscribe(queue_size=0)

    asyncio.run(scenario())
