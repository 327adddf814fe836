"""``SubscribeAudit``: stored records first (``since`` / ``last``), then — with ``follow`` — live ones.

The live subscription is taken *before* the stored records are read, and the log is flushed in between,
so no record falls in the gap; records already sent from the file are skipped by sequence number. A
subscriber that cannot keep up is dropped by the hub (executions never wait for it): its stream ends with
RESOURCE_EXHAUSTED / SUBSCRIBER_TOO_SLOW naming how many events it missed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sandboxd.api import convert
from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2 as pb
from sandboxd.audit.hub import AuditHub, SubscriberDropped
from sandboxd.audit.reader import RecordFilter, iter_records, last_records
from sandboxd.audit.record import AuditRecord
from sandboxd.audit.writer import AuditLog
from sandboxd.base.errors import SandboxError


class SubscriberTooSlow(SandboxError):
    reason = "SUBSCRIBER_TOO_SLOW"
    temporary = True


def _stored(log: AuditLog, request: pb.SubscribeAuditRequest, record_filter: RecordFilter) -> list[AuditRecord]:
    files = log.files()
    if request.HasField("since"):
        since = request.since.ToNanoseconds() / 1e9
        return [record for record in iter_records(files, since=since) if record_filter.matches(record)]
    if request.last:
        return last_records(files, request.last, record_filter=record_filter)
    return []


async def stream_audit(
    request: pb.SubscribeAuditRequest, *, log: AuditLog, hub: AuditHub, queue_size: int
) -> AsyncIterator[pb.AuditEvent]:
    record_filter = RecordFilter(
        principals=tuple(request.principals), tools=tuple(request.tools), events=tuple(request.events)
    )
    subscription = hub.subscribe(record_filter, queue_size=queue_size) if request.follow else None
    try:
        await log.wait_durable(log.last_seq)
        sent_seq = 0
        for record in await asyncio.to_thread(_stored, log, request, record_filter):
            sent_seq = record.seq
            yield convert.audit_event(record)
        if subscription is None:
            return
        try:
            async for record in subscription:
                if record.seq > sent_seq:
                    yield convert.audit_event(record)
        except SubscriberDropped as dropped:
            raise SubscriberTooSlow(
                f"this subscriber fell {queue_size} events behind and was dropped; it missed {dropped.missed} "
                "events (resume with since=)"
            ) from None
    finally:
        if subscription is not None:
            subscription.close()
