"""Live audit subscribers: each record, as it is appended, to whoever follows the log.

::

    AuditLog.append (any thread)
        └─ publish: record → the mailbox of each event loop with subscribers; the first record of a burst
                    wakes that loop (call_soon_threadsafe), later ones ride along
    the loop: drain
        └─ each record → put_nowait into every matching Subscription's bounded asyncio.Queue
    the subscriber: async for record in subscription

``publish`` never waits for a subscriber. One whose queue is full is dropped on the spot: it receives
nothing more, counts what it misses (the record that did not fit and every matching one after it, until it
notices), and ``on_drop`` is called once, in the loop, after the burst that dropped it — the log appends an
``audit.subscriber_dropped`` record there, which the dropped subscriber only counts, so there is no loop of
drops. The subscriber drains what its queue holds, then ``__anext__`` raises :class:`SubscriberDropped`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable

from sandboxd.audit.reader import RecordFilter
from sandboxd.audit.record import AuditRecord
from sandboxd.base.errors import SandboxError

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 1024


class SubscriberDropped(SandboxError):
    """The subscriber fell ``queue_size`` records behind and was cut off; it missed ``missed`` records,
    the first being ``first_missed_seq`` (read the log from there to catch up)."""

    reason = "SUBSCRIBER_DROPPED"
    temporary = True

    def __init__(self, missed: int, first_missed_seq: int) -> None:
        super().__init__(f"dropped for falling behind: missed {missed} records from seq {first_missed_seq} on")
        self.missed = missed
        self.first_missed_seq = first_missed_seq


class Subscription:
    """An async iterator of the records that match ``record_filter``. Use it from the loop it was made on."""

    def __init__(self, hub: AuditHub, record_filter: RecordFilter, queue_size: int,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.record_filter = record_filter
        self.queue_size = queue_size
        self.loop = loop
        self.missed = 0
        self.first_missed_seq = 0
        self.dropped = False
        self.closed = False
        self._hub = hub
        self._queue: asyncio.Queue[AuditRecord | None] = asyncio.Queue(maxsize=queue_size)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> AuditRecord:
        if self.closed and not self.dropped:
            raise StopAsyncIteration
        if self._queue.empty():
            if self.dropped:
                self.close()  # noticed: the count of missed records is final
                raise SubscriberDropped(self.missed, self.first_missed_seq)
            item = await self._queue.get()
        else:
            item = self._queue.get_nowait()
        if item is None:  # close() woke a waiting reader
            raise StopAsyncIteration
        return item

    def close(self) -> None:
        """Unsubscribe; a reader waiting in ``__anext__`` stops. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._hub._remove(self)
        if self._queue.empty():
            self._queue.put_nowait(None)

    def _offer(self, record: AuditRecord) -> bool:
        """Queue ``record`` if it matches; True when it did not fit, so this subscriber is dropped now."""
        if self.closed or not self.record_filter.matches(record):
            return False
        if self.dropped:
            self.missed += 1
            return False
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped = True
            self.missed = 1
            self.first_missed_seq = record.seq
            return True
        return False


class _Mailbox:
    """Records on their way to the subscribers of one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.records: deque[AuditRecord] = deque()
        self.wake_pending = False
        self.subscriptions: tuple[Subscription, ...] = ()


class AuditHub:
    def __init__(self, on_drop: Callable[[Subscription], None] | None = None) -> None:
        self.on_drop = on_drop
        self._lock = threading.Lock()  # guards the mailboxes; never held while calling out
        self._mailboxes: dict[asyncio.AbstractEventLoop, _Mailbox] = {}

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return sum(len(box.subscriptions) for box in self._mailboxes.values())

    def subscribe(self, record_filter: RecordFilter | None = None, queue_size: int = DEFAULT_QUEUE_SIZE
                  ) -> Subscription:
        """Follow records appended from now on. Call it from the event loop that will read them."""
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        loop = asyncio.get_running_loop()
        subscription = Subscription(self, record_filter or RecordFilter(), queue_size, loop)
        with self._lock:
            box = self._mailboxes.setdefault(loop, _Mailbox(loop))
            box.subscriptions = (*box.subscriptions, subscription)
        return subscription

    def publish(self, record: AuditRecord) -> None:
        """Hand ``record`` to every subscriber's loop. Any thread; never blocks on a subscriber."""
        if not self._mailboxes:
            return
        to_wake = []
        with self._lock:
            for box in self._mailboxes.values():
                box.records.append(record)
                if not box.wake_pending:
                    box.wake_pending = True
                    to_wake.append(box)
        for box in to_wake:
            try:
                box.loop.call_soon_threadsafe(self._drain, box)
            except RuntimeError:  # the loop is closed: nobody is left to read
                with self._lock:
                    self._mailboxes.pop(box.loop, None)

    def _remove(self, subscription: Subscription) -> None:
        with self._lock:
            box = self._mailboxes.get(subscription.loop)
            if box is None:
                return
            box.subscriptions = tuple(s for s in box.subscriptions if s is not subscription)
            if not box.subscriptions:
                del self._mailboxes[subscription.loop]

    def _drain(self, box: _Mailbox) -> None:
        with self._lock:
            records, box.records = box.records, deque()
            box.wake_pending = False
            subscriptions = box.subscriptions
        dropped = []
        for record in records:
            for subscription in subscriptions:
                if subscription._offer(record):
                    dropped.append(subscription)
        for subscription in dropped:
            log.warning("audit subscriber dropped: its queue of %d records was full at seq %d",
                        subscription.queue_size, subscription.first_missed_seq)
            if self.on_drop is not None:
                try:
                    self.on_drop(subscription)
                except Exception:
                    log.exception("audit on_drop callback failed")
