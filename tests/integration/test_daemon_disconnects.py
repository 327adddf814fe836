"""Callers that leave at any moment leave nothing behind: hundreds of Execute streams dropped at random points
— before the decision, during setup, mid-output — and afterwards no execution cgroup, sandbox process,
descriptor or admission slot remains, and every allowed decision has exactly one ``execution.finished``."""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from daemon_harness import Daemon, cgroup_dirs, make_daemon, running, sandbox_processes, wait_for

from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2_grpc as pb_grpc
from sandboxd.cli.client import pb

pytestmark = pytest.mark.root

CALLS = 300
CHATTY = """description = "print for a while"
argv = ["/bin/sh", "-c", "for i in 1 2 3 4 5 6 7 8; do echo line $i; sleep 0.02; done"]
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.skip("the daemon's end-to-end tests need root")
    with running(make_daemon(tmp_path, tools={"chatty": CHATTY}, max_concurrent_executions=64)) as started:
        yield started


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def drop_at_random(socket: Path, n: int, seed: int) -> str:
    """One Execute, abandoned at a random moment; returns where."""
    chooser = random.Random(seed)
    moment = chooser.choice(["at-once", "after-decision", "after-started", "mid-output", "never"])
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        stub = pb_grpc.SandboxStub(channel)  # type: ignore[no-untyped-call]
        call = stub.Execute(pb.ExecuteRequest(tool="chatty", params_json="{}", request_id=f"drop-{n}"))
        try:
            if moment == "at-once":
                time.sleep(chooser.random() * 0.005)
                call.cancel()
                return moment
            for event in call:
                kind = event.WhichOneof("event")
                if moment == "after-decision" and kind == "audit":
                    break
                if moment == "after-started" and kind == "started":
                    break
                if moment == "mid-output" and kind == "output" and chooser.random() < 0.5:
                    break
            return moment
        except grpc.RpcError:
            return moment  # refused (too many at once) or cancelled: fine, it must leave nothing either way
        finally:
            call.cancel()


def test_hundreds_of_dropped_streams_leave_nothing_and_each_allowed_decision_one_outcome(daemon: Daemon) -> None:
    assert daemon.process is not None
    with daemon.client() as client:
        client.run_tool("chatty", {})  # the spawner and the first cgroups exist: count descriptors after
    fds_before = open_fds(daemon.process.pid)
    with ThreadPoolExecutor(max_workers=24) as pool:
        moments = Counter(pool.map(lambda n: drop_at_random(daemon.socket, n, n), range(CALLS)))
    assert set(moments) == {"at-once", "after-decision", "after-started", "mid-output", "never"}, moments

    with daemon.client() as client:
        deadline = time.monotonic() + 60
        while (client.info().running_executions or client.list_executions()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.info().running_executions == 0, "an admission slot was kept"
        assert client.list_executions() == []
    leaves = [leaf for base in cgroup_dirs(daemon.instance) if base.is_dir() for leaf in base.iterdir()
              if leaf.is_dir()]
    assert not leaves, f"execution cgroups left: {leaves[:5]}"
    assert not sandbox_processes(daemon.ids)
    assert open_fds(daemon.process.pid) <= fds_before + 4, "descriptors leaked"

    def allowed_and_finished() -> tuple[list[dict[str, Any]], Counter[str]]:
        records = daemon.audit_records()
        allowed = [r for r in records if r["event"] == "decision" and r["details"]["outcome"] == "allowed"
                   and r["request_id"].startswith("drop-")]
        return allowed, Counter(r["execution_id"] for r in records if r["event"] == "execution.finished")

    # An outcome nobody waits for (its caller left) is appended before the slot is freed, and on disk within
    # the group commit's delay (10 ms): read the file once the last of them can be there.
    def outcomes_missing() -> list[str]:
        allowed, finished = allowed_and_finished()
        return [decision["execution_id"] for decision in allowed if not finished[decision["execution_id"]]]

    wait_for(lambda: not outcomes_missing(), 5, "every allowed execution's outcome on disk")
    allowed, finished = allowed_and_finished()
    records = daemon.audit_records()
    assert allowed, "no call was ever allowed"
    for decision in allowed:
        assert finished[decision["execution_id"]] == 1, decision
    left = [r for r in records if r["event"] == "execution.cancelled" and r["details"]["by"] == "caller-left"]
    assert left, "no execution recorded its caller leaving"
    for record in left:
        [outcome] = [r for r in records if r["event"] == "execution.finished"
                     and r["execution_id"] == record["execution_id"]]
        assert outcome["details"]["outcome"] == "CANCELLED", outcome
    received = Counter(r["request_id"] for r in records if r["event"] == "request.received")
    decided = Counter(r["request_id"] for r in records if r["event"] == "decision")
    assert all(decided[request_id] == 1 for request_id in received), "a request without exactly one decision"
