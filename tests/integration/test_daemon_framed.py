"""The framed socket (``[daemon] framed_socket``): Execute without HTTP/2 behaves as Execute over gRPC — the
same events, the same refusals with their reasons, the same audit — and a caller that leaves, a malformed
frame or an oversized one ends only its own call, recorded, with nothing left behind."""

from __future__ import annotations

import hashlib
import os
import random
import socket
import stat
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import UNMETERED_POLICY, Daemon, make_daemon, running, sandbox_processes

from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2 as pb
from sandboxd.api.frames import call_frame
from sandboxd.cli.client import SandboxClient, SandboxdError

pytestmark = pytest.mark.root

ECHO = """description = "echo its params and stdin"
argv = ["/bin/sh", "-c", "cat; echo done >&2"]
[params_schema]
type = "object"
properties = { word = { type = "string" } }
required = ["word"]
additionalProperties = false
"""
POLICY = """
[auth]
unix_socket_principal = ""
[principals.ci]
roles = ["runner"]
token_sha256 = ["%s"]
[principals.local-admin]
roles = ["runner"]
[roles.runner]
tools = ["echo"]
commands = true
"""
TOKEN = "framed-test-token-0123456789"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.skip("the daemon's end-to-end tests need root")
    policy = POLICY % hashlib.sha256(TOKEN.encode()).hexdigest()
    started = make_daemon(tmp_path_factory.mktemp("framed"), tools={"echo": ECHO}, extra=policy, framed=True,
                          limits={"output": "32M"})
    with running(started):
        yield started


@pytest.fixture(scope="module")
def socket_principal_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon whose socket names its principal (the default): a caller by hand needs no token."""
    if os.geteuid() != 0:
        pytest.skip("the daemon's end-to-end tests need root")
    with running(make_daemon(tmp_path_factory.mktemp("framed-plain"), framed=True)) as started:
        yield started


def framed(daemon: Daemon, token: str = TOKEN) -> SandboxClient:
    return SandboxClient(daemon.socket, framed_socket=daemon.framed_socket, token=token)


def records_of(daemon: Daemon, request_id: str) -> list[dict[str, Any]]:
    return [record for record in daemon.audit_records() if record["request_id"] == request_id]


def wait_for_record(daemon: Daemon, event: str, execution_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for record in daemon.audit_records():
            if record["event"] == event and record["execution_id"] == execution_id:
                return record
        time.sleep(0.05)
    raise AssertionError(f"no {event} record for {execution_id} within 30s")


def raw_call(daemon: Daemon, frame: bytes) -> tuple[list[pb.FramedReply], bool]:
    """Send ``frame`` as a caller that speaks the format by hand; the replies, and whether the daemon then
    closed the connection."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(30)
        conn.connect(str(daemon.framed_socket))
        conn.sendall(frame)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
            replies = _replies(data)
            if replies and replies[-1].WhichOneof("reply") == "status":
                conn.settimeout(5)
                closed = conn.recv(1) == b""
                return replies, closed
    return _replies(data), True


def _replies(data: bytes) -> list[pb.FramedReply]:
    replies, offset = [], 0
    while offset + 4 <= len(data):
        length = int.from_bytes(data[offset:offset + 4], "big")
        if offset + 4 + length > len(data):
            break
        replies.append(pb.FramedReply.FromString(data[offset + 4:offset + 4 + length]))
        offset += 4 + length
    return replies


def test_the_socket_has_the_grpc_sockets_mode_and_group(daemon: Daemon) -> None:
    framed_stat, grpc_stat = daemon.framed_socket.lstat(), daemon.socket.lstat()
    assert stat.S_ISSOCK(framed_stat.st_mode)
    assert stat.S_IMODE(framed_stat.st_mode) == stat.S_IMODE(grpc_stat.st_mode) == 0o660
    assert (framed_stat.st_uid, framed_stat.st_gid) == (grpc_stat.st_uid, grpc_stat.st_gid)


def test_a_tool_runs_as_over_grpc_with_the_same_events_and_records(daemon: Daemon) -> None:
    outcomes = {}
    for transport, client in (("framed", framed(daemon)), ("grpc", SandboxClient(daemon.socket, token=TOKEN))):
        with client:
            outcomes[transport] = client.run_tool("echo", {"word": "hi"}, stdin=b"and more\n",
                                                  request_id=f"same-{transport}", labels={"via": transport})
    over_framed, over_grpc = outcomes["framed"], outcomes["grpc"]
    assert over_framed.status_name == over_grpc.status_name == "OK"
    assert over_framed.stdout == over_grpc.stdout == b'{"word":"hi"}\nand more\n'
    assert over_framed.stderr == over_grpc.stderr == b"done\n"
    assert over_framed.started is not None and over_framed.started.request_id == "same-framed"
    assert [event.event for event in over_framed.audit] == [event.event for event in over_grpc.audit]
    framed_records, grpc_records = records_of(daemon, "same-framed"), records_of(daemon, "same-grpc")
    assert [r["event"] for r in framed_records] == [r["event"] for r in grpc_records] == [
        "request.received", "decision", "execution.started", "execution.finished"]
    received = framed_records[0]
    assert received["principal"] == "ci" and received["details"]["auth_method"] == "static-token"
    assert received["details"]["peer"] == "unix:"


def test_large_output_arrives_whole_and_in_order(daemon: Daemon) -> None:
    with framed(daemon) as client:
        outcome = client.run_command(["/usr/bin/seq", "1", "2000000"])  # 14.9 MB, 64 KiB at a time
    assert outcome.status_name == "OK", outcome.result
    assert outcome.stdout == b"".join(b"%d\n" % n for n in range(1, 2_000_001))


def refusal(client: SandboxClient, **call: Any) -> tuple[str, str, str]:
    with pytest.raises(SandboxdError) as refused:
        client.run(**call)
    return refused.value.code.name, refused.value.reason, refused.value.message


@pytest.mark.parametrize(("call", "reason"), [
    ({"tool": "nope", "params": {}}, "TOOL_NOT_GRANTED"),
    ({"tool": "echo", "params": {"word": 3}}, "INVALID_PARAMS"),
    ({"command": ["/bin/true"], "limits": {"wall_time_ms": 0}}, "INVALID_REQUEST"),
])
def test_refusals_are_grpcs_and_the_connection_serves_the_next_call(daemon: Daemon, call: dict[str, Any],
                                                                     reason: str) -> None:
    with framed(daemon) as over_framed, SandboxClient(daemon.socket, token=TOKEN) as over_grpc:
        refused = refusal(over_framed, **call)
        assert refused == refusal(over_grpc, **call)
        assert refused[1] == reason
        assert over_framed.run_tool("echo", {"word": "after"}).status_name == "OK"


def test_an_unauthenticated_caller_is_refused_as_on_grpc(daemon: Daemon) -> None:
    with framed(daemon, token="") as anonymous, SandboxClient(daemon.socket, token="") as over_grpc:
        refused = refusal(anonymous, command=["/bin/true"])
        assert refused[:2] == ("UNAUTHENTICATED", "AUTH_FAILED")
        assert refused == refusal(over_grpc, command=["/bin/true"])


def test_a_caller_that_leaves_ends_its_execution_recorded(daemon: Daemon) -> None:
    with framed(daemon) as client:
        events = client.execute(command=["/bin/sleep", "600"], request_id="leaves")
        started = next(event.started for event in events if event.WhichOneof("event") == "started")
        events.close()  # the connection closes: the caller has left
    finished = wait_for_record(daemon, "execution.finished", started.execution_id)
    assert finished["details"]["outcome"] == "CANCELLED", finished
    cancelled = wait_for_record(daemon, "execution.cancelled", started.execution_id)
    assert cancelled["details"]["by"] == "caller-left"
    deadline = time.monotonic() + 10
    while sandbox_processes(daemon.ids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not sandbox_processes(daemon.ids), "the sleep outlived its caller"


@pytest.mark.parametrize(("frame", "why"), [
    ((1 << 31).to_bytes(4, "big"), "over the limit"),
    (len(b"\xff\xff\xff").to_bytes(4, "big") + b"\xff\xff\xff", "could not be decoded"),
])
def test_a_malformed_frame_is_refused_recorded_and_the_daemon_serves_on(socket_principal_daemon: Daemon,
                                                                          frame: bytes, why: str) -> None:
    daemon = socket_principal_daemon
    seen = len(daemon.audit_records())
    replies, closed = raw_call(daemon, frame)
    [reply] = replies
    assert reply.status.code == 3, reply  # INVALID_ARGUMENT
    assert why in reply.status.details and "FramedCall" in reply.status.details
    assert ("sandboxd-reason", "INVALID_REQUEST") in [(m.key, m.value) for m in reply.status.metadata]
    assert closed, "a connection out of step was kept open"
    denied = [r for r in daemon.audit_records()[seen:] if r["event"] == "decision"]
    assert [r["details"]["outcome"] for r in denied] == ["denied"] and why in denied[0]["details"]["message"]
    with daemon.framed_client() as client:
        assert client.run_command(["/bin/true"]).status_name == "OK"


def test_a_call_by_hand_gets_events_then_one_status_then_the_next_call(daemon: Daemon) -> None:
    request = pb.ExecuteRequest(command=pb.Command(argv=["/bin/echo", "by hand"]))
    frame = call_frame(request, [("authorization", f"Bearer {TOKEN}")])
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(30)
        conn.connect(str(daemon.framed_socket))
        for _ in range(2):  # two calls, one connection
            conn.sendall(frame)
            kinds, stdout = [], b""
            with conn.makefile("rb") as reader:
                while True:
                    reply = pb.FramedReply.FromString(reader.read(int.from_bytes(reader.read(4), "big")))
                    if reply.WhichOneof("reply") == "status":
                        break
                    kinds.append(reply.event.WhichOneof("event"))
                    stdout += reply.event.output.data
            assert reply.status.code == 0 and kinds[-1] == "result" and "started" in kinds
            assert stdout == b"by hand\n"


def test_sandboxctl_sends_its_executions_to_the_framed_socket(socket_principal_daemon: Daemon) -> None:
    daemon = socket_principal_daemon
    done = daemon.ctl("--framed-socket", str(daemon.framed_socket), "exec", "--", "/bin/echo", "framed")
    assert (done.returncode, done.stdout) == (0, b"framed\n"), done.stderr
    missing = daemon.ctl("exec", "--", "/bin/true", env={**os.environ,
                                                         "SANDBOXD_FRAMED_SOCKET": str(daemon.root / "none.sock")})
    assert missing.returncode == 125, missing.stderr
    assert b"no socket at " + bytes(daemon.root / "none.sock") + b": sandboxd is not running" in missing.stderr
    assert b"--framed-socket" in missing.stderr


CHATTY = ["/bin/sh", "-c", "for i in 1 2 3 4 5 6 7 8; do echo line $i; sleep 0.02; done"]


def drop_at_random(daemon: Daemon, n: int) -> str:
    """One framed Execute, abandoned at a random moment (its connection closed); returns where."""
    chooser = random.Random(n)
    moment = chooser.choice(["at-once", "after-decision", "after-started", "mid-output", "never"])
    with daemon.framed_client() as client:
        events = client.execute(command=CHATTY, request_id=f"drop-{n}")
        try:
            for event in events:
                kind = event.WhichOneof("event")
                if moment == "at-once" or (moment, kind) in (("after-decision", "audit"), ("after-started", "started")):
                    break
                if moment == "mid-output" and kind == "output" and chooser.random() < 0.5:
                    break
        except SandboxdError:
            pass  # refused (too many at once): it must leave nothing either way
        finally:
            events.close()
    return moment


def test_dropped_calls_leave_nothing_and_each_allowed_decision_one_outcome(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the daemon's end-to-end tests need root")
    with running(make_daemon(tmp_path, extra=UNMETERED_POLICY, framed=True, max_concurrent_executions=32)) as daemon:
        with ThreadPoolExecutor(max_workers=12) as pool:
            moments = Counter(pool.map(lambda n: drop_at_random(daemon, n), range(120)))
        assert set(moments) == {"at-once", "after-decision", "after-started", "mid-output", "never"}, moments
        with daemon.client() as client:
            deadline = time.monotonic() + 60
            while client.list_executions() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert client.list_executions() == [] and client.info().running_executions == 0
        records = daemon.audit_records()
        allowed = [r for r in records if r["event"] == "decision" and r["details"]["outcome"] == "allowed"]
        finished = Counter(r["execution_id"] for r in records if r["event"] == "execution.finished")
        assert allowed and all(finished[r["execution_id"]] == 1 for r in allowed)
        left = [r for r in records if r["event"] == "execution.cancelled" and r["details"]["by"] == "caller-left"]
        assert left, "no execution recorded its caller leaving"
        assert "level=error" not in daemon.logs(), daemon.logs()


def test_a_client_outlives_a_daemon_restart_between_its_calls(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the daemon's end-to-end tests need root")
    with running(make_daemon(tmp_path, framed=True)) as daemon, daemon.framed_client() as client:
        assert client.run_command(["/bin/echo", "before"]).stdout == b"before\n"
        assert daemon.stop() == 0  # its idle connection, kept by the client, is closed by the daemon
        daemon.start()
        assert client.run_command(["/bin/echo", "after"]).stdout == b"after\n"  # on a new connection
        assert daemon.stop() == 0
        with pytest.raises(SandboxdError) as down:
            client.run_command(["/bin/true"])
        assert down.value.code.name == "UNAVAILABLE" and not down.value.reason
        assert "cannot connect to the framed socket" in down.value.message
        daemon.start()
