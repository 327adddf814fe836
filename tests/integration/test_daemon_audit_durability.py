"""A Result never reaches its caller before its audit records are on disk — observed at the file level.

The audit log lives on a small ext4 file system whose "disk" is an image file on a second ext4 file system;
freezing that second one (``fsfreeze``) stalls the disk: the daemon's ``write()`` still lands in the page
cache (the record is in the file) but its ``fsync()`` cannot complete (the record is not in the image).
While the disk is stalled the Result of an execution that has ended — and a refusal — must not arrive;
once it resumes they do, and the record is in the image. Nothing in the daemon is mocked.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from daemon_harness import make_daemon, running
from loopfs import ext4_on_loop, require_loop_devices, run

from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2_grpc as pb_grpc
from sandboxd.cli.client import SandboxClient, SandboxdError, pb

pytestmark = pytest.mark.root

# How long a Result must stay away while the disk is stalled, counted from the moment its record was
# appended and written. Unstalled, the Result follows that moment within milliseconds (measured below, and
# required to be under a third of this), so a daemon that sent it before the fsync would be caught well
# inside the window; the window only starts once everything but the fsync has provably happened.
HOLD_S = 1.5
CALIBRATION_MAX_S = HOLD_S / 3
TOOL_SLEEP_S = 2.0  # long enough to stall the disk while the execution runs


@dataclass
class StallableDisk:
    """``mount``: an ext4 file system whose disk is ``image``, a file on the file system at ``outer``."""

    outer: Path
    image: Path
    mount: Path
    stalled: bool = False

    def stall(self) -> None:
        self.stalled = True  # first: a freeze that half-happened is thawed too
        run("fsfreeze", "--freeze", str(self.outer))

    def resume(self) -> None:
        if self.stalled:
            run("fsfreeze", "--unfreeze", str(self.outer))
            self.stalled = False

    def holds(self, data: bytes) -> bool:
        """Whether ``data`` reached the disk (the image; read through the page cache, which a freeze keeps)."""
        return data in self.image.read_bytes()


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[StallableDisk]:
    require_loop_devices()
    with contextlib.ExitStack() as stack:
        ext4_on_loop(tmp_path / "outer.img", "48M", tmp_path / "outer", stack)
        disk = StallableDisk(tmp_path / "outer", tmp_path / "outer" / "disk.img", tmp_path / "audit-fs")
        ext4_on_loop(disk.image, "16M", disk.mount, stack)
        stack.callback(disk.resume)  # runs first: a frozen file system is never left behind
        yield disk


def _collect(events: Any, into: queue.Queue[tuple[float, Any]]) -> None:
    """Put ``(arrival time, event)`` for each event, then ``(time, error or None)`` at the end."""
    try:
        for event in events:
            into.put((time.monotonic(), event))
        into.put((time.monotonic(), None))
    except (SandboxdError, grpc.RpcError) as error:
        into.put((time.monotonic(), error))


def _wait_for(arrivals: queue.Queue[tuple[float, Any]], wanted: Any, timeout_s: float = 30) -> tuple[float, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        arrived, item = arrivals.get(timeout=max(0.01, deadline - time.monotonic()))
        if item is None or isinstance(item, Exception):
            raise AssertionError(f"the stream ended before what was awaited came: {item!r}")
        if wanted(item):
            return arrived, item


def _finished_of(request_id: str) -> Any:
    return lambda event: event.event == "execution.finished" and event.request_id == request_id


def _execute(client: SandboxClient, **kwargs: Any) -> queue.Queue[tuple[float, Any]]:
    arrivals: queue.Queue[tuple[float, Any]] = queue.Queue()
    threading.Thread(target=_collect, args=(client.execute(**kwargs), arrivals), daemon=True).start()
    return arrivals


def _kind(event: Any) -> str:
    return event.WhichOneof("event") if isinstance(event, pb.ExecuteEvent) else ""




def test_a_result_is_sent_only_once_its_records_are_fsynced(disk: StallableDisk, tmp_path: Path) -> None:
    made = make_daemon(tmp_path)
    log_path = disk.mount / "audit" / "audit.log"
    made.config_path.write_text(made.config_path.read_text().replace(str(made.audit_log), str(log_path)))
    with running(made), made.client() as client, grpc.insecure_channel(f"unix:{made.socket}") as channel:
        # The hub publishes each record as it is appended, before it is durable: our view of the daemon's
        # progress that does not depend on the disk.
        hub: queue.Queue[tuple[float, Any]] = queue.Queue()
        follow = pb_grpc.SandboxStub(channel).SubscribeAudit(pb.SubscribeAuditRequest(last=1, follow=True))
        threading.Thread(target=_collect, args=(follow, hub), daemon=True).start()
        try:
            _wait_for(hub, lambda event: event.event == "decision")  # our own: the subscription is live

            # Unstalled, how soon the Result follows the append of its last record.
            execution = _execute(client, command=["/bin/true"], request_id="calibrate")
            appended_at, _ = _wait_for(hub, _finished_of("calibrate"))
            result_at, _ = _wait_for(execution, lambda event: _kind(event) == "result")
            assert result_at - appended_at < CALIBRATION_MAX_S, "too slow a host for the window to mean anything"

            execution = _execute(client, command=["/bin/sleep", str(TOOL_SLEEP_S)], request_id="held")
            _wait_for(execution, lambda event: _kind(event) == "started")
            list(client.subscribe_audit(last=1))  # returns once every record so far is durable: the writer idles
            disk.stall()
            assert not any(_finished_of("held")(event) for _, event in list(hub.queue) if event is not None), \
                "the execution ended before the disk was stalled: nothing was tested"

            _, finished = _wait_for(hub, _finished_of("held"))
            line = finished.record_json.encode() + b"\n"
            deadline = time.monotonic() + 10
            while line not in log_path.read_bytes():  # written: write() does not wait for the disk
                assert time.monotonic() < deadline, "the record was never written to the file"
                time.sleep(0.01)
            written_at = time.monotonic()
            hash_hex = finished.record_json.split('"hash":"')[1][:64].encode()
            assert not disk.holds(hash_hex), "the stalled disk got the record"

            refusal: queue.Queue[tuple[float, Any]] = queue.Queue()
            threading.Thread(target=_collect, daemon=True, args=(
                client.execute(command=["/bin/true"], profile="absent", request_id="refused"), refusal)).start()
            _wait_for(hub, lambda event: event.event == "decision" and event.request_id == "refused")

            # The window: everything but the fsync has happened, for both.
            hold_until = max(written_at, time.monotonic()) + HOLD_S
            while (left_s := hold_until - time.monotonic()) > 0:
                with contextlib.suppress(queue.Empty):
                    _, event = execution.get(timeout=left_s)
                    early = _kind(event) == "result" or (_kind(event) == "audit" and event.audit.seq >= finished.seq)
                    assert not early, f"sent while the disk was stalled: {event}"
            assert refusal.empty(), f"the refusal was answered before it was on disk: {refusal.get()}"
            assert not disk.holds(hash_hex)

            resumed_at = time.monotonic()
            disk.resume()
            result_at, result = _wait_for(execution, lambda event: _kind(event) == "result")
            refused_at, error = refusal.get(timeout=30)
        finally:
            disk.resume()
            follow.cancel()
    assert result.result.status == pb.OK and result_at >= resumed_at
    assert refused_at >= resumed_at
    assert isinstance(error, SandboxdError) and error.reason == "UNKNOWN_PROFILE"
    assert disk.holds(hash_hex)  # on the disk now, as the Result promised
